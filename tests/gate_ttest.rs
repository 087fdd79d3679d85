//! Student-t CDF and Welch's test of `crambench::gate::ttest` against scipy.
mod common;
use crambench::gate::ttest::{student_t_cdf, welch_less};

/// (t, df, scipy.stats.t.cdf(t, df)) computed with scipy 1.17.1 in .venv-interop.
const CDF: [(f64, f64, f64); 7] = [
    (-2.5, 3.0, 0.04385332350403278),
    (0.3, 7.5, 0.6138386707156109),
    (1.7, 12.0, 0.9425600673023954),
    (-0.01, 2.2, 0.49642756332996857),
    (-6.0, 4.0, 0.0019412685234802554),
    (3.2, 30.0, 0.9983806991440234),
    (-1.0, 1000.0, 0.15877620904233627),
];

#[test]
fn t_cdf_matches_hardcoded_scipy_values() {
    for (t, df, want) in CDF {
        let got = student_t_cdf(t, df);
        assert!((got - want).abs() < 1e-9, "t={t} df={df}: {got} vs {want}");
    }
}

#[test]
fn welch_matches_hardcoded_scipy_value() {
    // scipy.stats.ttest_ind(np.array(x) + 1.0, y, equal_var=False, alternative="less")
    // -> statistic -1.2998673672393597, pvalue 0.1220777121353927, df 5.64975671790335.
    let x = [78.5, 80.0, 79.0, 81.5];
    let y = [81.0, 82.5, 80.5, 83.0, 82.0];
    let w = welch_less(&x, &y, 1.0).unwrap();
    assert!((w.t - -1.2998673672393597).abs() < 1e-12);
    assert!((w.df - 5.64975671790335).abs() < 1e-9);
    assert!((w.p_value - 0.1220777121353927).abs() < 1e-9);
}

/// A grid of t and df (integer and not, tiny and huge tails) and random Welch samples,
/// checked against scipy at run time.
#[test]
fn t_cdf_and_welch_match_scipy_on_a_grid() {
    let Some(py) = common::interop_python() else {
        return;
    };
    let ts = [
        -40.0, -12.5, -6.0, -3.3, -2.0, -1.0, -0.4, -1e-3, 0.0, 0.25, 0.9, 1.96, 2.7, 5.0, 9.0,
    ];
    let dfs = [0.7, 1.0, 1.5, 2.0, 3.0, 4.6, 7.0, 11.3, 29.0, 120.0, 2500.0];
    // Welch samples from a small deterministic generator.
    let mut state = 12345u64;
    let mut samples: Vec<(Vec<f64>, Vec<f64>, f64)> = Vec::new();
    for k in 0..30 {
        let mut draw = |n: usize, shift: f64, scale: f64| -> Vec<f64> {
            (0..n)
                .map(|_| {
                    let u = crambench::rng::splitmix64(&mut state) >> 11;
                    shift + scale * (u as f64 / (1u64 << 53) as f64 - 0.5)
                })
                .collect()
        };
        let (nx, ny) = (2 + k % 5, 2 + (k * 7) % 6);
        let x = draw(nx, 80.0 - (k % 4) as f64, 1.0 + (k % 3) as f64);
        let y = draw(ny, 80.0, 0.5 + (k % 5) as f64);
        samples.push((x, y, [0.0, 0.5, 1.0][k % 3]));
    }
    let input = serde_json::json!({"ts": ts, "dfs": dfs, "welch": samples});
    let script = r#"
import json, sys
import numpy as np
from scipy import stats
d = json.load(sys.stdin)
cdf = [[float(stats.t.cdf(t, df)) for df in d["dfs"]] for t in d["ts"]]
welch = []
for x, y, m in d["welch"]:
    r = stats.ttest_ind(np.array(x) + m, np.array(y), equal_var=False, alternative="less")
    welch.append([float(r.statistic), float(r.pvalue), float(r.df)])
print(json.dumps({"cdf": cdf, "welch": welch}))
"#;
    let mut child = std::process::Command::new(py)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let want: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (i, t) in ts.iter().enumerate() {
        for (j, df) in dfs.iter().enumerate() {
            let w = want["cdf"][i][j].as_f64().unwrap();
            let got = student_t_cdf(*t, *df);
            // Absolute 1e-9 everywhere, and relative 1e-9 in the far lower tail.
            assert!(
                (got - w).abs() < 1e-9,
                "t={t} df={df}: {got:e} vs scipy {w:e}"
            );
            if w < 1e-6 {
                assert!(
                    ((got - w) / w).abs() < 1e-9,
                    "t={t} df={df}: {got:e} vs scipy {w:e} (relative)"
                );
            }
        }
    }
    for (k, (x, y, m)) in samples.iter().enumerate() {
        let r = welch_less(x, y, *m).unwrap();
        let w = &want["welch"][k];
        assert!((r.t - w[0].as_f64().unwrap()).abs() < 1e-9, "sample {k} t");
        assert!(
            (r.p_value - w[1].as_f64().unwrap()).abs() < 1e-9,
            "sample {k} p"
        );
        assert!(
            (r.df - w[2].as_f64().unwrap()).abs() < 1e-7,
            "sample {k} df"
        );
    }
}
