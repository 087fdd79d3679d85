//! The run report against hand-computed numbers: reference cells and deltas, empty cells left
//! empty, the aggregate compared only under its own rule, HTML self-contained with four SVG
//! charts (three curves, the GLUE sets) and escaped text, a missing or corrupt metrics log
//! still rendering, the panels after the summary, and what is signed.
mod common;
use common::fake_run::{keypair, write_fake_run, FakeRun};
use crambench::record::RunRecord;
use crambench::reference::{self, ReferenceRow};
use crambench::report;
use std::collections::BTreeMap;
use std::path::Path;

/// 200 (prediction, gold) rows of which the first `wrong` are wrong.
fn rows(wrong: usize) -> Vec<(usize, usize)> {
    (0..200)
        .map(|i| {
            let gold = i % 2;
            (if i < wrong { 1 - gold } else { gold }, gold)
        })
        .collect()
}

/// sst2 trials 90 / 85 / 80 % (median 85.00), rte trials 75 / 70 / 72.5 % (median 72.50);
/// the fake's aggregate is their mean, 78.75, under the rule name `cramming`.
fn glue_run(recipe: &str) -> FakeRun {
    let mut sets = BTreeMap::new();
    sets.insert("sst2".to_string(), vec![rows(20), rows(30), rows(40)]);
    sets.insert("rte".to_string(), vec![rows(50), rows(60), rows(55)]);
    FakeRun {
        recipe: recipe.into(),
        sets,
        rule: "cramming".into(),
        protocol: "glue-sane".into(),
        ..FakeRun::default()
    }
}

fn make(dir: &Path, spec: &FakeRun) -> RunRecord {
    let (key, _) = keypair(dir, "k");
    let run = dir.join("run");
    write_fake_run(&run, spec, &key);
    RunRecord::open(&run).unwrap()
}

#[test]
fn reference_cells_and_deltas_are_right() {
    let d = tempfile::tempdir().unwrap();
    let rec = make(d.path(), &glue_run("crammed-bert-v1-test"));
    // crammed-bert-v1: sst2 92.2, rte 53.8, cramming average 78.6.
    let r = report::render(&rec, reference::row("crammed-bert-v1").unwrap()).unwrap();
    let md = &r.markdown;
    assert!(
        md.contains("| sst2 | accuracy | 85.00 |  | 90.00, 85.00, 80.00 |  |  | 92.20 | -7.20 |"),
        "{md}"
    );
    assert!(
        md.contains("| rte | accuracy | 72.50 |  | 75.00, 70.00, 72.50 |  |  | 53.80 | +18.70 |"),
        "{md}"
    );
    assert!(md.contains("Rule `cramming`: **78.75**"), "{md}");
    assert!(md.contains("same rule: 78.60; Δ = +0.15."), "{md}");
    // The reference's other published sets are named as not evaluated.
    assert!(
        md.contains("did not evaluate: cola, mnli-m, mnli-mm, mrpc, qnli, qqp, stsb."),
        "{md}"
    );
    // Identity, budget and pretraining summary.
    assert!(md.contains(&"cd".repeat(32)), "recipe sha256 missing");
    assert!(md.contains("| Created | 2026-11-28T12:00:00Z |"), "{md}");
    assert!(md.contains("| Hardware class | cpu-x86-64-2c |"), "{md}");
    assert!(md.contains("| Device kind | cpu |"), "{md}");
    assert!(md.contains("| Signed | yes (1 signature"), "{md}");
    assert!(md.contains("| Allowed | 0.0250 device-hours |"), "{md}");
    assert!(md.contains("| pretrain | 90.0 s (0.025 h) |"), "{md}");
    assert!(
        md.contains("| Final MLM loss | 5.5000 (mean over the last 10 micro-steps) |"),
        "{md}"
    );
    assert!(md.contains("| Throughput | 50000 tokens/s |"), "{md}");
    assert!(md.contains("| Tokens seen | 51,200 |"), "{md}");
    assert!(
        md.contains("50 step records read; 1 record of other kinds ignored."),
        "{md}"
    );
    assert!(md.contains(
        &rec.statement["subject"][0]["digest"]["dirHash"]
            .as_str()
            .unwrap()[..16]
    ));
    // The HTML has the same numbers.
    let h = &r.html;
    assert!(
        h.contains("<td class=\"n\">92.20</td><td class=\"n neg\">-7.20</td>"),
        "{h}"
    );
    assert!(h.contains("<td class=\"n\">53.80</td><td class=\"n pos\">+18.70</td>"));
    assert!(h.contains("same rule: 78.60; Δ = +0.15."));
}

#[test]
fn empty_reference_cells_stay_empty() {
    let d = tempfile::tempdir().unwrap();
    let rec = make(d.path(), &glue_run("crammed-bert-x"));
    // crammed-bert-v2-a6000 publishes only the average (80.4); every cell is empty.
    let r = report::render(&rec, reference::row("crammed-bert-v2-a6000").unwrap()).unwrap();
    let md = &r.markdown;
    assert!(
        md.contains("| sst2 | accuracy | 85.00 |  | 90.00, 85.00, 80.00 |  |  |  |  |"),
        "{md}"
    );
    assert!(md.contains("| rte | accuracy | 72.50 |  | 75.00, 70.00, 72.50 |  |  |  |  |"));
    assert!(!md.contains("did not evaluate"), "{md}");
    assert!(md.contains("same rule: 80.40; Δ = -1.65."), "{md}");
    assert!(r
        .html
        .contains("<td class=\"n\">85.00</td><td class=\"n\"></td><td>90.00, 85.00, 80.00</td><td class=\"n\"></td><td class=\"n\"></td><td class=\"n\"></td><td class=\"n\"></td>"));

    // A reference with a different rule is not compared.
    let mut other: ReferenceRow = reference::row("bert-base").unwrap().clone();
    other.glue = BTreeMap::from([("bert-paper".to_string(), 79.6)]);
    other.cells.insert("sst2".into(), None);
    let r = report::render(&rec, &other).unwrap();
    assert!(r
        .markdown
        .contains("| sst2 | accuracy | 85.00 |  | 90.00, 85.00, 80.00 |  |  |  |  |"));
    assert!(
        r.markdown
            .contains("publishes no average under rule cramming (it has: bert-paper)"),
        "{}",
        r.markdown
    );
    assert!(!r.markdown.contains("79.60"));
}

#[test]
fn demo_aggregate_is_never_compared() {
    let d = tempfile::tempdir().unwrap();
    let rec = make(d.path(), &FakeRun::default());
    let r = report::render(&rec, reference::default_for_recipe("demo-cpu")).unwrap();
    let md = &r.markdown;
    assert!(md.contains("Rule `demo`:"), "{md}");
    assert!(
        md.contains("never compared with the reference's GLUE average"),
        "{md}"
    );
    assert!(
        !md.contains("80.70"),
        "the reference average leaked into a demo report"
    );
    assert!(
        md.contains("| Against reference | not compared: the demo aggregate is not a GLUE score |"),
        "{md}"
    );
    // Demo sets have no reference column: reference and delta cells are empty.
    for line in md.lines().filter(|l| l.starts_with("| demo")) {
        assert!(line.ends_with("|  |  |"), "{line}");
    }
}

#[test]
fn html_is_self_contained_with_four_charts() {
    let d = tempfile::tempdir().unwrap();
    let rec = make(d.path(), &FakeRun::default());
    let h = report::render(&rec, reference::default_for_recipe("demo-cpu"))
        .unwrap()
        .html;
    assert_eq!(
        h.matches("<svg").count(),
        4,
        "three curves and the GLUE chart"
    );
    for bad in [
        "src=", "href=", "url(", "@import", "<script", "<link", "<iframe", "<img",
    ] {
        assert!(!h.contains(bad), "HTML contains {bad}");
    }
    // The only URL is the SVG namespace.
    let ns = "xmlns=\"http://www.w3.org/2000/svg\"";
    assert_eq!(h.matches("https://").count(), 0, "external URL in HTML");
    assert_eq!(
        h.matches("http://").count(),
        h.matches(ns).count(),
        "external URL in HTML"
    );
    assert!(!h.contains("=\"//"), "protocol-relative URL in HTML");
    assert!(h.contains("Content-Security-Policy"));
    assert!(h.starts_with("<!DOCTYPE html>") && h.trim_end().ends_with("</html>"));
}

#[test]
fn text_is_escaped() {
    let d = tempfile::tempdir().unwrap();
    let spec = FakeRun {
        recipe: "<script>alert('x')</script>|a&b".into(),
        ..FakeRun::default()
    };
    let rec = make(d.path(), &spec);
    let r = report::render(&rec, reference::row("bert-base").unwrap()).unwrap();
    assert!(!r.html.contains("<script"), "unescaped recipe name in HTML");
    assert!(r
        .html
        .contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;|a&amp;b"));
    assert!(
        !r.markdown.contains("<script"),
        "unescaped recipe name in Markdown"
    );
    assert!(
        r.markdown
            .contains("| Recipe | &lt;script&gt;alert('x')&lt;/script&gt;\\|a&amp;b |"),
        "{}",
        r.markdown
    );
}

#[test]
fn missing_or_corrupt_metrics_log_still_renders() {
    let d = tempfile::tempdir().unwrap();
    let rec = make(d.path(), &FakeRun::default());
    let log = rec.metrics_log().unwrap();
    let reference = reference::default_for_recipe("demo-cpu");

    // Corrupt lines are skipped and counted; the curves remain.
    let mut text = std::fs::read_to_string(&log).unwrap();
    text.insert_str(0, "garbage\n{\"kind\":\"step\",\"loss\":\n");
    text += "{\"kind\":\"checkpoint\",\"name\":\"x\"}\n\u{0}\u{1}binary";
    std::fs::write(&log, &text).unwrap();
    let r = report::render(&rec, reference).unwrap();
    assert!(
        r.markdown.contains(
            "50 step records read; 3 malformed lines skipped; 2 records of other kinds ignored."
        ),
        "{}",
        r.markdown
    );
    assert_eq!(r.html.matches("<svg").count(), 4);

    // Only garbage: no curves, a clear note.
    std::fs::write(&log, "not json\n").unwrap();
    let r = report::render(&rec, reference).unwrap();
    assert!(r.markdown.contains("No metrics log:"), "{}", r.markdown);
    assert!(r.html.contains("No metrics log:"));
    assert_eq!(r.html.matches("<svg").count(), 1, "only the GLUE chart");

    // Missing.
    std::fs::remove_file(&log).unwrap();
    let r = report::render(&rec, reference).unwrap();
    assert!(r.markdown.contains("No metrics log:") && r.markdown.contains("does not exist"));
    assert_eq!(r.html.matches("<svg").count(), 1, "only the GLUE chart");
    assert!(r.markdown.contains("| demo-sentiment |"));
}

#[test]
fn long_curves_are_thinned() {
    let d = tempfile::tempdir().unwrap();
    let rec = make(d.path(), &FakeRun::default());
    let log = rec.metrics_log().unwrap();
    let mut text = String::new();
    for s in 1..=20_000u64 {
        text += &format!(
            "{{\"kind\":\"step\",\"optimizer_step\":{s},\"elapsed_s\":{},\"loss\":{},\"lr\":{},\"tokens_per_second\":{}}}\n",
            s as f64 * 0.1,
            2.0 + 8.0 / (s as f64).sqrt(),
            1e-3 * (s as f64 / 20_000.0),
            40_000.0 + (s % 97) as f64
        );
    }
    std::fs::write(&log, text).unwrap();
    let r = report::render(&rec, reference::default_for_recipe("demo-cpu")).unwrap();
    assert!(
        r.markdown
            .contains("20000 step records read; curves thinned to at most 2000 points."),
        "{}",
        r.markdown
    );
    assert_eq!(r.html.matches("<svg").count(), 4);
    // 3 curves × ≤ 2000 points of ~20 bytes each, plus tables: well under 400 kB.
    assert!(r.html.len() < 400_000, "HTML is {} bytes", r.html.len());
}

#[test]
fn write_puts_both_files_atomically_in_out_dir() {
    let d = tempfile::tempdir().unwrap();
    let rec = make(d.path(), &FakeRun::default());
    let reference = reference::default_for_recipe("demo-cpu");
    let out = d.path().join("out/nested");
    let (md, html) = report::write(&rec, reference, &out).unwrap();
    assert_eq!(md, out.join("report.md"));
    assert_eq!(html, out.join("report.html"));
    let r = report::render(&rec, reference).unwrap();
    assert_eq!(std::fs::read_to_string(&md).unwrap(), r.markdown);
    assert_eq!(std::fs::read_to_string(&html).unwrap(), r.html);
    // Rewriting replaces them; no temporary files are left behind.
    report::write(&rec, reference, &out).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["report.html", "report.md"]);
}

#[test]
fn a_lone_statement_renders_without_curves() {
    let d = tempfile::tempdir().unwrap();
    let rec = make(d.path(), &FakeRun::default());
    let alone = RunRecord::open(&d.path().join("run/manifest.json")).unwrap();
    assert!(alone.root.is_none() || alone.metrics_log().is_none());
    let r = report::render(&alone, reference::default_for_recipe("demo-cpu")).unwrap();
    assert!(
        r.markdown.contains("| Signed | no (unsigned statement) |"),
        "{}",
        r.markdown
    );
    assert!(r.markdown.contains("No metrics log:"));
    drop(rec);
}

#[test]
fn controls_and_intervals_lead_the_report() {
    let d = tempfile::tempdir().unwrap();
    let mut rec = make(d.path(), &glue_run("crammed-bert-ctl"));
    // What `glue run` records (crambench::glue::controls), with round numbers.
    let g = &mut rec.statement["predicate"]["glue"];
    g["uncertainty"] = serde_json::json!({
        "method": "m", "resamples": 1000, "level": 0.95, "seed_label": "glue/bootstrap/<set>",
        "tasks": {"sst2": {"ci95": {"accuracy": {"lo": 0.8, "hi": 0.875}}, "trials": {}}},
        "aggregate": {"lo": 77.5, "hi": 80.0}
    });
    let control = |acc: f64, delta: f64, agg: f64| {
        serde_json::json!({
            "description": "d",
            "tasks": {"sst2": {"metrics": {"accuracy": acc}, "ci95": {},
                "above": {"accuracy": {"delta": delta, "ci95": {"lo": delta - 2.0, "hi": delta + 2.0}}}}},
            "aggregate": {"rule": "cramming", "value": agg},
            "above": {"delta": 78.75 - agg, "ci95": {"lo": 78.75 - agg - 1.5, "hi": 78.75 - agg + 0.5}}
        })
    };
    g["controls"] = serde_json::json!({
        "constant": control(0.5, 35.0, 40.0),
        "no_pretraining": control(0.6, 25.0, 60.0),
    });
    // The readers read the typed predicate, parsed once from the statement.
    rec.predicate = serde_json::from_value(rec.statement["predicate"].clone()).unwrap();
    let fake_cpu_summary = report::render(&rec, reference::row("crammed-bert-v1").unwrap())
        .unwrap()
        .markdown;
    // A CPU run: fp32 whatever the recipe asks (autocast is CUDA-only).
    assert!(
        fake_cpu_summary.contains("| Precision | fp32 (CPU: no autocast) |"),
        "{fake_cpu_summary}"
    );
    let p = &mut rec.statement["predicate"];
    p["fingerprint"]["hardware"]["gpus"] =
        serde_json::json!([{"name": "NVIDIA H100"}, {"name": "NVIDIA H100"}]);
    p["budget"]["device_kind"] = "cuda".into();
    p["recipe"]["resolved"]["train"] = serde_json::json!({"precision": "bf16"});
    rec.predicate = serde_json::from_value(rec.statement["predicate"].clone()).unwrap();
    let r = report::render(&rec, reference::row("crammed-bert-v1").unwrap()).unwrap();
    let md = &r.markdown;
    assert!(md.contains("| Hardware | 2 × NVIDIA H100 |"), "{md}");
    assert!(md.contains("| Precision | bf16 |"), "{md}");
    // The summary comes first, with the interval and the distance to the control.
    let summary = md.find("## Summary").unwrap();
    assert!(summary < md.find("## Run").unwrap());
    assert!(
        md.contains("| GLUE aggregate | 78.75 (cramming rule, 95% interval \\[77.50, 80.00\\]) |"),
        "{md}"
    );
    // 18.75 points above, interval [17.25, 19.25]: half width 1.00.
    assert!(
        md.contains(
            "| Above control | 18.75 ± 1.00 points above the no-pretraining control (60.00)"
        ),
        "{md}"
    );
    assert!(
        md.contains("| sst2 | accuracy | 85.00 | [80.00, 87.50] | 90.00, 85.00, 80.00 | 60.00 | +25.00 ± 2.00 | 92.20 | -7.20 |"),
        "{md}"
    );
    assert!(
        md.contains("constant (majority-class) predictor scores 40.00"),
        "{md}"
    );
    let h = &r.html;
    assert!(h.contains("<h2>Summary</h2>"));
    assert!(
        h.contains("18.75 ± 1.00 points above the no-pretraining control (60.00)"),
        "{h}"
    );
    assert!(h.contains("<td class=\"n\">[80.00, 87.50]</td>"), "{h}");
    // The GLUE chart marks the control and the reference per set.
    let glue = &h[h.rfind("<svg").unwrap()..];
    assert!(glue.contains("GLUE per evaluation set"), "{glue}");
    assert!(glue.contains("control (no-pretraining)") && glue.contains("reference"));
    assert!(glue.contains("sst2 (accuracy)") && glue.contains("rte (accuracy)"));
}

/// A fake run with the resolved recipe, data record and phases `crambench run` writes (values
/// of the demo recipe, with round data counts).
fn panel_run(dir: &Path, metrics_subject: bool) -> RunRecord {
    let mut rec = make(
        dir,
        &FakeRun {
            metrics_subject,
            ..FakeRun::default()
        },
    );
    let p = &mut rec.statement["predicate"];
    p["recipe"]["resolved"] = serde_json::json!({
        "arch": {"kind": "crammed-bert", "layers": 2, "hidden": 64, "heads": 4,
                 "intermediate": 256, "tie_weights": true},
        "train": {"batch_size": 64, "microbatch_size": 16, "seq_len": 64, "budget": "2m",
                  "scheduler": "budget-triangle2", "lr": 0.001, "optimizer": "adamw",
                  "betas": [0.9, 0.98], "weight_decay": 0.01},
        "glue": {"epochs": 5, "trials": 3}
    });
    p["data"] = serde_json::json!({
        "name": "wp4096x64-demo", "num_blocks": 400, "seq_len": 64, "vocab_size": 4096,
        "root_digest": "ab".repeat(32),
        "sources": [{"name": "embedded:sotu"}],
        "processing": {"counts": {"documents": 233, "documents_kept": 233, "tokens": 25_639}}
    });
    // Manifest order (alphabetical, as serde_json writes objects), not pipeline order.
    p["budget"]["phase_seconds"] = serde_json::json!({
        "data_preparation": 1.5, "final_checkpoint": 0.25,
        "glue_finetuning_and_evaluation": 110.0, "pretraining": 90.0, "setup": 0.5
    });
    // The readers use the typed predicate, parsed when the record was opened.
    rec.predicate = serde_json::from_value(rec.statement["predicate"].clone()).unwrap();
    rec
}

#[test]
fn panels_follow_the_summary_in_the_papers_order() {
    let d = tempfile::tempdir().unwrap();
    let rec = panel_run(d.path(), true);
    let r = report::render(&rec, reference::default_for_recipe("demo-cpu")).unwrap();
    let md = &r.markdown;
    let at = |s: &str| md.find(s).unwrap_or_else(|| panic!("no {s:?} in\n{md}"));
    let order = [
        "## Summary",
        "## Recipe",
        "### Architecture",
        "### Batch",
        "### Schedule",
        "### Optimizer",
        "### Fine-tuning",
        "## Data",
        "## Pretraining",
        "## GLUE",
        "## Budget",
        "### What is signed",
    ];
    for w in order.windows(2) {
        assert!(at(w[0]) < at(w[1]), "{} after {}", w[0], w[1]);
    }
    assert!(md.contains("| Layers | 2 |\n| Hidden size | 64 |"), "{md}");
    assert!(md.contains("| Tokens per batch | 4,096 |"), "{md}");
    assert!(md.contains("| Betas | 0.9, 0.98 |"), "{md}");
    assert!(md.contains("| Documents | 233 read, all kept |"), "{md}");
    // 51,200 tokens seen over 400 blocks × 64 tokens = 25,600: two epochs.
    assert!(
        md.contains(
            "| Epochs over the corpus | 2.00 (51,200 tokens seen ÷ 25,600 in the blocks) |"
        ),
        "{md}"
    );
    // Phases in pipeline order, with human names.
    let phases = [
        "| Data preparation (tokenizer, packing) | 1.5 s",
        "| Setup (model build, data open) | 0.5 s",
        "| Pretraining (counted against the budget) | 90.0 s",
        "| Final checkpoint | 0.2 s",
        "| GLUE fine-tuning and evaluation | 110.0 s",
    ];
    for w in phases.windows(2) {
        assert!(at(w[0]) < at(w[1]), "{} after {}", w[0], w[1]);
    }
    // The fake log's first loss is 5.5 + 3 e^(-1/10).
    let l0 = 5.5 + 3.0 * (-0.1f64).exp();
    assert!(
        md.contains(&format!("Initial MLM loss (first logged step): {l0:.4}.")),
        "{md}"
    );

    // The HTML: the same panels, and the loss against budget time (0.025 h allowed: minutes)
    // with the smoothed line and the initial loss.
    let h = &r.html;
    assert!(h.contains("<div class=\"panel\">"), "{h}");
    assert!(h.contains("<h3>Optimizer</h3>"));
    assert_eq!(
        h.matches("<svg").count(),
        4,
        "three curves and the GLUE chart"
    );
    assert!(h.contains("MLM loss against budget time"));
    assert!(h.contains("budget used (device-minutes)"));
    assert!(
        h.contains(&format!("initial loss {l0:.2}")),
        "no initial loss"
    );
    assert!(h.contains("moving average"), "no smoothed line");
}

#[test]
fn the_page_says_which_inputs_are_signed_and_checks_the_metrics_log() {
    let d = tempfile::tempdir().unwrap();
    let signed_row = |md: &str| -> String {
        md.lines()
            .find(|l| l.starts_with("| Metrics log (the curves) |"))
            .unwrap_or_else(|| panic!("no metrics-log row in\n{md}"))
            .to_string()
    };
    let reference = reference::default_for_recipe("demo-cpu");
    let rec = panel_run(&d.path().join("a"), true);
    let md = report::render(&rec, reference).unwrap().markdown;
    assert!(
        signed_row(&md).starts_with("| Metrics log (the curves) | yes | by digest, in the signed statement; the log drawn here matches"),
        "{md}"
    );
    assert!(md.contains("| GLUE predictions of every trial: glue/predictions | yes |"));
    assert!(md.contains("| Reference row | no |"), "{md}");

    // An edited log: the curves are not the signed ones, and the page says so.
    let log = rec.metrics_log().unwrap();
    let mut text = std::fs::read_to_string(&log).unwrap();
    text = text.replacen("\"loss\":8", "\"loss\":1", 1);
    text += "{\"kind\":\"step\",\"optimizer_step\":51,\"loss\":0.1}\n";
    std::fs::write(&log, text).unwrap();
    let md = report::render(&rec, reference).unwrap().markdown;
    assert!(
        signed_row(&md).contains("| no | DOES NOT MATCH the digest in the statement"),
        "{md}"
    );

    // A manifest from before the metrics log was a subject: unsigned curves, said plainly.
    let old = panel_run(&d.path().join("b"), false);
    let md = report::render(&old, reference).unwrap().markdown;
    assert!(
        signed_row(&md).contains("| no | not a subject of this statement"),
        "{md}"
    );
    // An unsigned statement signs nothing.
    let alone = RunRecord::open(&d.path().join("a/run/manifest.json")).unwrap();
    let md = report::render(&alone, reference).unwrap().markdown;
    assert!(
        md.contains("| in the statement, which is unsigned |"),
        "{md}"
    );
}
