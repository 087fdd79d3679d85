//! `crambench compare` on fake runs: medians, spread and deltas per set, the aggregate under
//! its rule, budget and hardware, the reference column, and warnings for anything not
//! comparable.
mod common;
use common::fake_run::{keypair, write_fake_run, FakeRun};
use common::run_in;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn trials(errors: &[usize]) -> Vec<Vec<(usize, usize)>> {
    errors
        .iter()
        .map(|&e| {
            (0..200)
                .map(|i| {
                    let gold = i % 2;
                    (if i < e { 1 - gold } else { gold }, gold)
                })
                .collect()
        })
        .collect()
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = keypair(dir.path(), "k");
    (dir, key)
}

fn compare_json(dir: &Path, args: &[&str]) -> Value {
    let mut a = vec!["compare", "--json"];
    a.extend_from_slice(args);
    let (code, out, err) = run_in(dir, &a);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn row<'a>(c: &'a Value, set: &str, metric: &str) -> &'a Value {
    c["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["set"] == set && r["metric"] == metric)
        .unwrap_or_else(|| panic!("no row {set}/{metric}"))
}

fn close(v: &Value, want: f64) -> bool {
    (v.as_f64().unwrap() - want).abs() < 1e-9
}

#[test]
fn medians_spread_and_deltas_per_set() {
    let (dir, key) = setup();
    let mut a = FakeRun::default();
    a.sets
        .insert("demo-sentiment".into(), trials(&[40, 30, 50]));
    let mut b = a.clone();
    b.sets
        .insert("demo-sentiment".into(), trials(&[20, 24, 30, 22, 25]));
    b.allowed_device_hours = 0.05;
    b.used_device_hours = 0.049;
    write_fake_run(&dir.path().join("a"), &a, &key);
    write_fake_run(&dir.path().join("b"), &b, &key);
    let c = compare_json(dir.path(), &["a", "b/manifest.dsse.json"]);
    assert_eq!(c["runs"].as_array().unwrap().len(), 2);
    assert!(c["warnings"].as_array().unwrap().is_empty(), "{c:#}");
    let r = row(&c, "demo-sentiment", "accuracy");
    // a: 80, 85, 75 → median 80, spread 75–85; b: 90, 88, 85, 89, 87.5 → median 88.
    let a0 = &r["cells"][0];
    assert!(close(&a0["median"], 80.0) && close(&a0["min"], 75.0) && close(&a0["max"], 85.0));
    assert_eq!(a0["n"], 3);
    assert!(a0["delta"].is_null());
    let b0 = &r["cells"][1];
    assert!(close(&b0["median"], 88.0) && close(&b0["min"], 85.0) && close(&b0["max"], 90.0));
    assert_eq!(b0["n"], 5);
    assert!(close(&b0["delta"], 8.0));
    // Aggregate under its rule, with the delta to the first run.
    let agg_a = c["runs"][0]["aggregate"]["value"].as_f64().unwrap();
    let agg_b = &c["runs"][1]["aggregate"];
    assert_eq!(agg_b["rule"], "demo");
    assert!(close(
        &agg_b["delta"],
        agg_b["value"].as_f64().unwrap() - agg_a
    ));
    // Budget and hardware.
    assert!(close(&c["runs"][1]["allowed_device_hours"], 0.05));
    assert!(close(&c["runs"][1]["used_device_hours"], 0.049));
    assert_eq!(c["runs"][0]["hardware_class"], "cpu-x86-64-2c");

    // The table for people shows the same.
    let (code, out, _) = run_in(dir.path(), &["compare", "a", "b"]);
    assert_eq!(code, 0);
    assert!(out.contains("80.00 (75.00–85.00, 3)"), "{out}");
    assert!(out.contains("88.00 (85.00–90.00, 5)"), "{out}");
    assert!(out.contains("+8.00"), "{out}");
    assert!(out.contains("0.049/0.050 device-h"), "{out}");
    assert!(!out.contains("WARNING"), "{out}");
}

#[test]
fn mixed_rules_protocols_and_hardware_are_flagged_never_mixed() {
    let (dir, key) = setup();
    write_fake_run(&dir.path().join("a"), &FakeRun::default(), &key);
    write_fake_run(
        &dir.path().join("rule"),
        &FakeRun {
            rule: "cramming".into(),
            ..FakeRun::default()
        },
        &key,
    );
    write_fake_run(
        &dir.path().join("proto"),
        &FakeRun {
            protocol: "glue-bert".into(),
            hardware_class: "gpu-a6000-48g-1".into(),
            ..FakeRun::default()
        },
        &key,
    );
    let c = compare_json(dir.path(), &["a", "rule", "proto"]);
    let w: Vec<&str> = c["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        w.iter().any(|s| s.contains("aggregate rule `cramming`")),
        "{w:?}"
    );
    assert!(
        w.iter().any(|s| s.contains("protocol \"glue-bert\"")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|s| s.contains("hardware class `gpu-a6000-48g-1`")),
        "{w:?}"
    );
    assert_eq!(w.len(), 3, "{w:?}");
    // No aggregate delta across rules; no per-set delta across protocols; same-protocol
    // per-set delta still there.
    assert!(c["runs"][1]["aggregate"]["delta"].is_null());
    assert!(close(&c["runs"][2]["aggregate"]["delta"], 0.0));
    let r = row(&c, "demo-sentiment", "accuracy");
    assert!(close(&r["cells"][1]["delta"], 0.0));
    assert!(r["cells"][2]["delta"].is_null());
    let (_, out, _) = run_in(dir.path(), &["compare", "a", "rule", "proto"]);
    assert_eq!(out.matches("WARNING:").count(), 3, "{out}");
    assert!(
        out.contains("(cramming)") && out.contains("(demo)"),
        "{out}"
    );
}

#[test]
fn reference_column_shows_published_cells_and_leaves_gaps_empty() {
    let (dir, key) = setup();
    let mut glue = FakeRun {
        rule: "cramming".into(),
        protocol: "glue-sane".into(),
        ..FakeRun::default()
    };
    glue.sets.clear();
    glue.sets.insert("sst2".into(), trials(&[20, 18, 22]));
    glue.sets.insert("rte".into(), trials(&[70, 66, 72]));
    write_fake_run(&dir.path().join("g"), &glue, &key);
    for id in ["crammed-bert-v1", "crammed-bert-v2-a6000"] {
        let c = compare_json(dir.path(), &["g", "--reference", id]);
        let reference = crambench::reference::row(id).unwrap();
        for set in ["sst2", "rte"] {
            let got = &row(&c, set, "accuracy")["reference"];
            match reference.cells[set] {
                Some(v) => assert!(close(got, v), "{id} {set}"),
                None => assert!(got.is_null(), "{id} {set}"),
            }
        }
        assert_eq!(c["reference"]["id"], id);
        match reference.glue.get("cramming") {
            Some(v) => assert!(close(&c["reference"]["aggregate"], *v)),
            None => assert!(c["reference"]["aggregate"].is_null()),
        }
    }
    let (code, _, err) = run_in(dir.path(), &["compare", "g", "--reference", "nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("crammed-bert-v1"), "{err}");
}

#[test]
fn unusable_input_exits_2() {
    let (dir, key) = setup();
    write_fake_run(&dir.path().join("a"), &FakeRun::default(), &key);
    std::fs::write(dir.path().join("junk.json"), "{not json").unwrap();
    let (code, _, err) = run_in(dir.path(), &["compare", "a", "junk.json"]);
    assert_eq!(code, 2);
    assert!(err.contains("junk.json"), "{err}");
    let (code, _, err) = run_in(dir.path(), &["compare", "a", "missing-dir"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = run_in(dir.path(), &["compare"]);
    assert_eq!(code, 2);
    // An attestation manifest (kind = attestation) is not a run.
    let mut st: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("a/manifest.json")).unwrap())
            .unwrap();
    st["predicate"]["kind"] = "attestation".into();
    std::fs::write(dir.path().join("att.json"), st.to_string()).unwrap();
    let (code, _, err) = run_in(dir.path(), &["compare", "a", "att.json"]);
    assert_eq!(code, 2);
    assert!(err.contains("kind"), "{err}");
}

/// numpy reference of compare's paired bootstrap: reads both runs' predictions files, draws the
/// resampling indices with its own splitmix64 (rejection sampling), takes each run's median
/// accuracy over trials per resample, and the 2.5/97.5 percentiles of the differences; the
/// demo aggregate is the mean of the two sets.
const COMPARE_REFERENCE: &str = r#"
import json, sys, glob
import numpy as np
M = (1 << 64) - 1
def below_stream(seed, n):
    s = seed
    zone = (1 << 64) - ((1 << 64) % n)
    while True:
        s = (s + 0x9E3779B97F4A7C15) & M
        z = s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
        z ^= z >> 31
        if z < zone:
            yield z % n
def load(run, s):
    out = []
    for f in sorted(glob.glob(f"{run}/glue/predictions/{s}/trial-*.tsv")):
        rows = sorted([list(map(int, l.split("\t"))) for l in open(f).read().splitlines()[1:]])
        out.append(np.array(rows))
    return out
inp = json.load(sys.stdin)
B = inp["resamples"]
res = {}
agg = np.zeros((B, 2))
for s, seed in inp["seeds"].items():
    sides = [load(r, s) for r in inp["runs"]]
    gold = sides[0][0][:, 2]
    n = len(gold)
    g = below_stream(seed, n)
    d = np.zeros((B, 2))
    for b in range(B):
        idx = np.array([next(g) for _ in range(n)])
        for k in range(2):
            d[b, k] = np.median([(t[idx, 1] == gold[idx]).mean() for t in sides[k]])
    agg += d / len(inp["seeds"])
    lo, hi = np.percentile(100 * (d[:, 1] - d[:, 0]), [2.5, 97.5])
    res[s] = [float(lo), float(hi)]
lo, hi = np.percentile(100 * (agg[:, 1] - agg[:, 0]), [2.5, 97.5])
res["aggregate"] = [float(lo), float(hi)]
print(json.dumps(res))
"#;

#[test]
fn deltas_come_with_paired_bootstrap_intervals_and_a_verdict() {
    let (dir, key) = setup();
    let a = FakeRun::default();
    let mut b = a.clone();
    // The same dev examples and gold labels as a's, about 90% right instead of 80%.
    let better: Vec<Vec<(usize, usize)>> = (0..3)
        .map(|t| {
            (0..200)
                .map(|i| {
                    let gold = (i * 7 + 3) % 2;
                    (if (i + t) % 10 == 0 { 1 - gold } else { gold }, gold)
                })
                .collect()
        })
        .collect();
    b.sets.insert("demo-sentiment".into(), better);
    write_fake_run(&dir.path().join("a"), &a, &key);
    write_fake_run(&dir.path().join("b"), &b, &key);
    let c = compare_json(dir.path(), &["a", "b"]);
    // Runs whose gold labels differ have no paired interval, and the verdict says why.
    let mut other = a.clone();
    other
        .sets
        .insert("demo-sentiment".into(), trials(&[20, 24, 30]));
    write_fake_run(&dir.path().join("other"), &other, &key);
    let o = compare_json(dir.path(), &["a", "other"]);
    assert!(row(&o, "demo-sentiment", "accuracy")["cells"][1]["delta_ci95"].is_null());
    assert!(
        o["verdicts"][0]
            .as_str()
            .unwrap()
            .contains("no interval: the runs' gold labels differ"),
        "{o:#}"
    );
    let r = row(&c, "demo-sentiment", "accuracy");
    let ci = &r["cells"][1]["delta_ci95"];
    let agg = &c["runs"][1]["aggregate"];
    assert!(ci.is_object(), "{:#}", c["verdicts"]);
    let (lo, hi) = (ci["lo"].as_f64().unwrap(), ci["hi"].as_f64().unwrap());
    let d = r["cells"][1]["delta"].as_f64().unwrap();
    assert!(lo <= d && d <= hi, "{lo} {d} {hi}");
    // Identical predictions: a zero delta with a zero-width interval.
    let same = row(&c, "demo-next-sentence", "accuracy");
    assert_eq!(
        same["cells"][1]["delta_ci95"],
        serde_json::json!({"lo": 0.0, "hi": 0.0})
    );
    // The verdict says it in one line.
    let v = c["verdicts"][0].as_str().unwrap();
    let half = (agg["delta_ci95"]["hi"].as_f64().unwrap()
        - agg["delta_ci95"]["lo"].as_f64().unwrap())
        / 2.0;
    let want = format!(
        "[2] {} is {:.2} ± {:.2} points above [1] {} on the demo aggregate",
        c["runs"][1]["source"].as_str().unwrap(),
        agg["delta"].as_f64().unwrap(),
        half,
        c["runs"][0]["source"].as_str().unwrap(),
    );
    assert!(v.starts_with(&want), "{v}\nwant {want}");
    let (code, out, _) = run_in(dir.path(), &["compare", "a", "b"]);
    assert_eq!(code, 0);
    assert!(out.contains(&want), "{out}");

    // Against numpy with its own splitmix64 and the same seeds.
    let Some(py) = common::interop_python() else {
        return;
    };
    let seed = |s: &str| {
        crambench::provenance::seeds::derive(
            crambench::compare::COMPARE_SEED,
            &format!("compare/bootstrap/{s}"),
        )
    };
    let input = serde_json::json!({
        "resamples": crambench::glue::controls::RESAMPLES,
        "runs": [dir.path().join("a"), dir.path().join("b")],
        "seeds": {"demo-sentiment": seed("demo-sentiment"), "demo-next-sentence": seed("demo-next-sentence")},
    });
    let mut child = std::process::Command::new(&py)
        .args(["-c", COMPARE_REFERENCE])
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
    let want: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        close(&ci["lo"], want["demo-sentiment"][0].as_f64().unwrap()),
        "{ci} {want}"
    );
    assert!(
        close(&ci["hi"], want["demo-sentiment"][1].as_f64().unwrap()),
        "{ci} {want}"
    );
    assert!(
        close(
            &agg["delta_ci95"]["lo"],
            want["aggregate"][0].as_f64().unwrap()
        ),
        "{agg} {want}"
    );
    assert!(
        close(
            &agg["delta_ci95"]["hi"],
            want["aggregate"][1].as_f64().unwrap()
        ),
        "{agg} {want}"
    );
}

#[test]
fn html_page_overlays_curves_and_sets_tables_side_by_side() {
    let (dir, key) = setup();
    let a = FakeRun::default();
    let b = FakeRun {
        final_mlm_loss: 4.25,
        recipe: "other <b>recipe</b>".into(),
        ..a.clone()
    };
    write_fake_run(&dir.path().join("a"), &a, &key);
    write_fake_run(&dir.path().join("b"), &b, &key);
    let (code, out, err) = run_in(dir.path(), &["compare", "a", "b", "--html", "cmp.html"]);
    assert_eq!(code, 0, "{err}");
    // The table still goes to stdout.
    assert!(out.contains("demo-sentiment"), "{out}");
    let h = std::fs::read_to_string(dir.path().join("cmp.html")).unwrap();
    // Self-contained: no script, nothing loaded from elsewhere.
    assert!(h.contains("Content-Security-Policy"));
    for bad in [
        "src=", "href=", "url(", "@import", "<script", "<link", "<iframe", "<img", "https://",
    ] {
        assert!(!h.contains(bad), "HTML contains {bad}");
    }
    // The only URL is the SVG namespace.
    let ns = "xmlns=\"http://www.w3.org/2000/svg\"";
    assert_eq!(h.matches("http://").count(), h.matches(ns).count());
    // Three charts, each with one line per run and a legend naming both.
    assert_eq!(h.matches("<svg").count(), 3, "{h}");
    let first = &h[h.find("<svg").unwrap()..h.find("</svg>").unwrap()];
    // Two curves and their two legend marks.
    assert!(first.matches("<polyline").count() >= 4, "{first}");
    assert!(first.contains("[1]") && first.contains("[2]"));
    // Against budget time, as in the paper (the fake logs record their budget fraction).
    assert!(first.contains("budget used (device-minutes)"), "{first}");
    assert!(first.contains("MLM loss (smoothed)"), "{first}");
    // Run data is escaped; the task table has the delta with its interval.
    assert!(h.contains("other &lt;b&gt;recipe&lt;/b&gt;") && !h.contains("<b>recipe"));
    assert!(
        h.contains("<td class=\"n\">+0.00 [+0.00, +0.00]</td>"),
        "{h}"
    );
    assert!(h.contains("4.2500"), "final loss of [2]");
    // Identical predictions: the verdict says 0.00 ± 0.00 points.
    assert!(h.contains("is 0.00 ± 0.00 points above [1]"), "{h}");
}

#[test]
fn protocol_differences_from_the_reference_row_are_warned() {
    let (dir, key) = setup();
    let mut glue = FakeRun {
        rule: "cramming".into(),
        protocol: "glue-sane".into(),
        glue_settings: Some(serde_json::json!({
            "frozen_warmup": false, "key_padding_mask": true, "epochs": 5, "trials": 3
        })),
        ..FakeRun::default()
    };
    glue.sets.clear();
    glue.sets.insert("sst2".into(), trials(&[20, 18, 22]));
    write_fake_run(&dir.path().join("g"), &glue, &key);
    let c = compare_json(dir.path(), &["g", "--reference", "crammed-bert-v1"]);
    let w: Vec<&str> = c["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    let line = w
        .iter()
        .find(|x| x.contains("protocol differs from the reference row `crammed-bert-v1`"))
        .unwrap_or_else(|| panic!("{w:?}"));
    for part in [
        "frozen warm-up off (the row: on)",
        "key-padding mask on (the row: off)",
        "3 trials per task (the row: 5)",
    ] {
        assert!(line.contains(part), "{line}");
    }
    // The same run against v2's row: only the trial count differs (v2 masks padding).
    let c = compare_json(
        dir.path(),
        &["g", "--reference", "crammed-bert-v2-best-of-5"],
    );
    let w = c["warnings"].to_string();
    assert!(
        w.contains("frozen warm-up off") && !w.contains("key-padding mask"),
        "{w}"
    );
    // And the report says it.
    let (code, _, err) = run_in(
        dir.path(),
        &["report", "g", "--reference", "crammed-bert-v1"],
    );
    assert_eq!(code, 0, "{err}");
    let md = std::fs::read_to_string(dir.path().join("g/report.md")).unwrap();
    assert!(
        md.contains("Protocol differs from the row's: frozen warm-up off (the row: on)"),
        "{md}"
    );
}
