//! The report's panels after the summary: the recipe's hyperparameters, the data summary, the
//! phases in pipeline order with human names, and which inputs of the page are signed.
//!
//! Like [`crate::report::facts`], everything is read from the signed statement as it is: a key
//! the resolved recipe or the data record lacks is left out of its panel, never filled in. The
//! one thing computed is "epochs over the corpus" (tokens seen ÷ tokens in the packed blocks),
//! from two signed numbers.
use crate::report::format;
use crate::report::metrics_log::MetricsLog;
use serde_json::Value;

/// One panel group ("Architecture", "Batch", …): (label, value) rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub title: &'static str,
    pub rows: Vec<(&'static str, String)>,
}

/// (group, label, path under `predicate.recipe.resolved`).
const RECIPE: &[(&str, &str, &str)] = &[
    ("Architecture", "Kind", "arch.kind"),
    ("Architecture", "Layers", "arch.layers"),
    ("Architecture", "Hidden size", "arch.hidden"),
    ("Architecture", "Attention heads", "arch.heads"),
    ("Architecture", "Feed-forward size", "arch.intermediate"),
    ("Architecture", "Vocabulary", "arch.vocab_size"),
    ("Architecture", "Max sequence length", "arch.max_seq_len"),
    ("Architecture", "Normalisation", "arch.norm"),
    ("Architecture", "Non-linearity", "arch.nonlin"),
    ("Architecture", "Positions", "arch.positions"),
    ("Architecture", "Tied embeddings", "arch.tie_weights"),
    (
        "Architecture",
        "Sparse prediction",
        "arch.sparse_prediction",
    ),
    ("Batch", "Batch size (sequences)", "train.batch_size"),
    ("Batch", "Micro-batch size", "train.microbatch_size"),
    (
        "Batch",
        "Batch-size ramp (share of budget)",
        "train.batch_size_ramp",
    ),
    ("Batch", "Sequence length", "train.seq_len"),
    ("Batch", "Masking", "train.masking"),
    ("Batch", "Mask probability", "train.mlm_probability"),
    ("Schedule", "Budget", "train.budget"),
    ("Schedule", "Learning-rate schedule", "train.scheduler"),
    ("Schedule", "Peak learning rate", "train.lr"),
    ("Schedule", "Final learning rate", "train.lr_end"),
    ("Schedule", "Warm-up steps", "train.warmup_steps"),
    ("Schedule", "Step cap", "train.steps"),
    ("Optimizer", "Optimizer", "train.optimizer"),
    ("Optimizer", "Betas", "train.betas"),
    ("Optimizer", "Epsilon", "train.eps"),
    ("Optimizer", "Weight decay", "train.weight_decay"),
    (
        "Optimizer",
        "Gradient clipping (norm)",
        "train.gradient_clipping",
    ),
    ("Optimizer", "Precision (recipe)", "train.precision"),
    ("Fine-tuning", "Protocol", "glue.protocol"),
    ("Fine-tuning", "Epochs", "glue.epochs"),
    ("Fine-tuning", "Batch size", "glue.batch_size"),
    ("Fine-tuning", "Learning rate", "glue.lr"),
    ("Fine-tuning", "Schedule", "glue.schedule"),
    ("Fine-tuning", "Trials per task", "glue.trials"),
];

fn at<'a>(v: &'a Value, dotted: &str) -> &'a Value {
    dotted.split('.').fold(v, |v, k| &v[k])
}

/// A recipe value as text: strings as they are, booleans yes/no, arrays joined by commas,
/// numbers as JSON writes them. `None` for null, objects and absent keys.
pub fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(if *b { "yes" } else { "no" }.into()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().filter_map(value_text).collect();
            (!parts.is_empty()).then(|| parts.join(", "))
        }
        _ => None,
    }
}

/// The recipe's hyperparameters as panel groups, in [`RECIPE`]'s order; groups with no value
/// are left out.
pub fn recipe(resolved: &Value) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for (group, label, path) in RECIPE {
        let Some(text) = value_text(at(resolved, path)) else {
            continue;
        };
        match out.last_mut() {
            Some(g) if g.title == *group => g.rows.push((label, text)),
            _ => out.push(Group {
                title: group,
                rows: vec![(label, text)],
            }),
        }
    }
    // Tokens per optimizer step, from two recipe values.
    let tokens = resolved["train"]["batch_size"]
        .as_u64()
        .zip(resolved["train"]["seq_len"].as_u64());
    if let (Some((b, l)), Some(g)) = (tokens, out.iter_mut().find(|g| g.title == "Batch")) {
        g.rows.push(("Tokens per batch", format::count(b * l)));
    }
    out
}

/// The data summary: (label, value) rows from `predicate.data` and the tokens seen.
pub fn data(data: &Value, tokens_seen: Option<u64>) -> Vec<(&'static str, String)> {
    let c = &data["processing"]["counts"];
    let mut rows = Vec::new();
    let mut push = |label: &'static str, v: Option<String>| {
        if let Some(v) = v {
            rows.push((label, v));
        }
    };
    push("Dataset", data["name"].as_str().map(str::to_string));
    let sources: Vec<&str> = data["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .collect();
    push("Sources", (!sources.is_empty()).then(|| sources.join(", ")));
    push(
        "Tokenizer",
        data["processing"]["tokenizer_source"]
            .as_str()
            .map(str::to_string),
    );
    push("Vocabulary", data["vocab_size"].as_u64().map(format::count));
    push(
        "Documents",
        c["documents"].as_u64().map(|read| {
            let kept = c["documents_kept"].as_u64().unwrap_or(read);
            let dups = c["duplicates_removed"].as_u64().unwrap_or(0);
            if kept == read {
                format!("{} read, all kept", format::count(read))
            } else {
                format!(
                    "{} read, {} kept ({} duplicates removed)",
                    format::count(read),
                    format::count(kept),
                    format::count(dups)
                )
            }
        }),
    );
    push("Tokens", c["tokens"].as_u64().map(format::count));
    let blocks = data["num_blocks"].as_u64();
    let seq_len = data["seq_len"].as_u64();
    push(
        "Blocks",
        blocks.map(|b| match seq_len {
            Some(l) => format!("{} of {l} tokens", format::count(b)),
            None => format::count(b),
        }),
    );
    push(
        "Epochs over the corpus",
        match (tokens_seen, blocks, seq_len) {
            (Some(t), Some(b), Some(l)) if b * l > 0 => Some(format!(
                "{} ({} tokens seen ÷ {} in the blocks)",
                format::fixed(t as f64 / (b * l) as f64, 2),
                format::count(t),
                format::count(b * l)
            )),
            _ => None,
        },
    );
    push(
        "Root digest",
        data["root_digest"].as_str().map(str::to_string),
    );
    rows
}

/// Phase keys of `budget.phase_seconds` in pipeline order with their human names; a key not
/// listed here follows, under its own name. Names starting with `↳` are parts of the phase
/// above them.
const PHASES: &[(&str, &str)] = &[
    ("data_preparation", "Data preparation (tokenizer, packing)"),
    ("setup", "Setup (model build, data open)"),
    ("pretraining", "Pretraining (counted against the budget)"),
    ("pretraining_this_process", "↳ of which in this process"),
    (
        "intermediate_checkpoints",
        "↳ of which intermediate checkpoints",
    ),
    ("lost_to_interruption", "↳ of which lost to interruptions"),
    ("final_checkpoint", "Final checkpoint"),
    (
        "glue_finetuning_and_evaluation",
        "GLUE fine-tuning and evaluation",
    ),
];

/// `phase_seconds` (manifest order) as (human name, seconds) in pipeline order.
pub fn phases(phase_seconds: &[(String, f64)]) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = PHASES
        .iter()
        .filter_map(|(key, name)| {
            let (_, s) = phase_seconds.iter().find(|(k, _)| k == key)?;
            Some((name.to_string(), *s))
        })
        .collect();
    for (k, s) in phase_seconds {
        if !PHASES.iter().any(|(key, _)| key == k) {
            out.push((k.clone(), *s));
        }
    }
    out
}

/// Whether one input of the page is covered by the signature.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub what: String,
    pub signed: bool,
    pub how: String,
}

/// Which inputs of the page are signed: the statement itself, each subject, the metrics log
/// (checked here against its subject's digest: the one digest the report checks), the
/// reference row, and the run's files that are no part of the statement.
pub fn inputs(
    signatures: usize,
    subjects: &[crate::report::facts::Subject],
    metrics: &MetricsLog,
) -> Vec<Input> {
    let signed = signatures > 0;
    let by_signature = if signed {
        "in the signed statement"
    } else {
        "in the statement, which is unsigned"
    };
    let mut out = vec![Input {
        what: "Every number and setting on this page except the curves and the reference row \
               (recipe, data, budget, pretraining summary, GLUE trials, controls, intervals)"
            .into(),
        signed,
        how: by_signature.into(),
    }];
    let role_words = |role: &str| match role {
        "checkpoint" => "Final checkpoint (directory hash)",
        "checkpoint-oms" => "Final checkpoint (OpenSSF model-signing digest)",
        "tokenizer" => "Tokenizer",
        "dataset" => "Dataset manifest (lists every shard's digest)",
        "predictions" => "GLUE predictions of every trial",
        "control-predictions" => "No-pretraining control's predictions",
        crate::record::METRICS_LOG_ROLE => "Metrics log (the curves)",
        _ => "Subject",
    };
    let mut log_subject = None;
    for s in subjects {
        let (role, name) = (s.role.as_deref().unwrap_or(""), &s.name);
        if role == crate::record::METRICS_LOG_ROLE {
            log_subject = s
                .digests
                .iter()
                .find(|(a, _)| a == "sha256")
                .map(|(_, h)| h.clone());
            continue;
        }
        out.push(Input {
            what: format!("{}: {name}", role_words(role)),
            signed,
            how: format!("by digest, {by_signature}"),
        });
    }
    out.push(match (&log_subject, &metrics.sha256) {
        (Some(want), Some(got)) if want == got => Input {
            what: "Metrics log (the curves)".into(),
            signed,
            how: format!(
                "by digest, {by_signature}; the log drawn here matches that digest \
                 (checked by this report)"
            ),
        },
        (Some(_), Some(_)) => Input {
            what: "Metrics log (the curves)".into(),
            signed: false,
            how: "DOES NOT MATCH the digest in the statement: the curves drawn here are not \
                  the signed log"
                .into(),
        },
        (Some(_), None) => Input {
            what: "Metrics log (the curves)".into(),
            signed,
            how: format!("by digest, {by_signature}; not read here, so nothing is drawn"),
        },
        (None, _) => Input {
            what: "Metrics log (the curves)".into(),
            signed: false,
            how: "not a subject of this statement (made before the metrics log was signed): \
                  the curves are unsigned"
                .into(),
        },
    });
    out.push(Input {
        what: "Reference row".into(),
        signed: false,
        how: "crambench's table of published results (reference/), not part of the run".into(),
    });
    out.push(Input {
        what: "run.json, pretrain/summary.json, pretrain/mllog.log, this report".into(),
        signed: false,
        how: "bookkeeping and renderings; regenerate the report with crambench report".into(),
    });
    out
}

/// The x axis of the curves against budget time: (label, factor from `budget_fraction` to the
/// unit): device-minutes when the allowance is under two hours, device-hours above, percent of
/// the budget when the allowance is not recorded.
pub fn budget_axis(allowed_device_hours: Option<f64>) -> (&'static str, f64) {
    match allowed_device_hours {
        Some(a) if a > 0.0 && a < 2.0 => ("budget used (device-minutes)", a * 60.0),
        Some(a) if a > 0.0 => ("budget used (device-hours)", a),
        _ => ("budget used (% of allowed)", 100.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn recipe_panel_keeps_order_and_skips_absent_keys() {
        let r = json!({"arch": {"layers": 2, "tie_weights": true},
                       "train": {"batch_size": 64, "seq_len": 128, "betas": [0.9, 0.98],
                                 "lr": 0.001}});
        let g = recipe(&r);
        let titles: Vec<&str> = g.iter().map(|g| g.title).collect();
        assert_eq!(titles, ["Architecture", "Batch", "Schedule", "Optimizer"]);
        assert_eq!(
            g[0].rows,
            [("Layers", "2".into()), ("Tied embeddings", "yes".into())]
        );
        assert!(g[1].rows.contains(&("Tokens per batch", "8,192".into())));
        assert_eq!(g[3].rows, [("Betas", "0.9, 0.98".into())]);
        assert!(recipe(&json!({})).is_empty());
    }

    #[test]
    fn data_summary_and_epochs() {
        let d = json!({"name": "ds", "num_blocks": 1000, "seq_len": 64, "vocab_size": 4096,
                       "processing": {"counts": {"documents": 10, "documents_kept": 9,
                                                 "duplicates_removed": 1, "tokens": 64039}}});
        let rows = data(&d, Some(128_000));
        let get = |k: &str| rows.iter().find(|(l, _)| *l == k).map(|(_, v)| v.as_str());
        assert_eq!(
            get("Documents"),
            Some("10 read, 9 kept (1 duplicates removed)")
        );
        assert_eq!(get("Blocks"), Some("1,000 of 64 tokens"));
        assert_eq!(
            get("Epochs over the corpus"),
            Some("2.00 (128,000 tokens seen ÷ 64,000 in the blocks)")
        );
        assert_eq!(get("Sources"), None);
    }

    #[test]
    fn phases_in_pipeline_order() {
        let p = vec![
            ("glue_finetuning_and_evaluation".to_string(), 3.0),
            ("pretraining".to_string(), 2.0),
            ("data_preparation".to_string(), 1.0),
            ("zzz_new".to_string(), 4.0),
        ];
        let names: Vec<String> = phases(&p).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "Data preparation (tokenizer, packing)",
                "Pretraining (counted against the budget)",
                "GLUE fine-tuning and evaluation",
                "zzz_new"
            ]
        );
    }

    #[test]
    fn metrics_log_signed_only_when_its_digest_matches() {
        let subject = |h: &str| {
            vec![crate::report::facts::Subject {
                role: Some(crate::record::METRICS_LOG_ROLE.to_string()),
                name: "pretrain/metrics.jsonl".to_string(),
                digests: vec![("sha256".to_string(), h.to_string())],
            }]
        };
        let log = MetricsLog {
            sha256: Some("aa".into()),
            ..Default::default()
        };
        let find = |v: Vec<Input>| {
            v.into_iter()
                .find(|i| i.what.starts_with("Metrics"))
                .unwrap()
        };
        let ok = find(inputs(1, &subject("aa"), &log));
        assert!(ok.signed && ok.how.contains("matches"), "{ok:?}");
        let bad = find(inputs(1, &subject("bb"), &log));
        assert!(!bad.signed && bad.how.contains("DOES NOT MATCH"), "{bad:?}");
        let old = find(inputs(1, &[], &log));
        assert!(!old.signed && old.how.contains("not a subject"), "{old:?}");
        let unsigned = find(inputs(0, &subject("aa"), &log));
        assert!(!unsigned.signed, "{unsigned:?}");
    }
}
