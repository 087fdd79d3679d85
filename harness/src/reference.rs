//! The paper's reference numbers as data: the GLUE-dev rows of `reference/glue_reference.json`
//! (embedded at build time, so a report or comparison needs no file on disk).
//!
//! Values are percent points as published; a cell the public sources do not give is `None`,
//! never filled in. Each row has an `id` (`crammed-bert-v1`, `bert-base`, …) used by
//! `crambench compare --reference ID` and by the run report, its source and its caveats.
use crate::error::Error;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The embedded file.
pub const GLUE_REFERENCE_JSON: &str = include_str!("../../reference/glue_reference.json");

/// One published row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceRow {
    /// Short name (`crammed-bert-v1`).
    pub id: String,
    /// Description as published.
    pub model: String,
    /// Evaluation set (`mnli-m`, `sst2`, …) → percent points, `None` where not published.
    pub cells: BTreeMap<String, Option<f64>>,
    /// Published averages by rule name (`cramming` → 78.6).
    pub glue: BTreeMap<String, f64>,
    pub source: String,
    pub caveats: String,
    /// The published checkpoint the row was measured on (`None`: none was published).
    #[serde(default)]
    pub checkpoint: Option<PublishedCheckpoint>,
    /// The fine-tuning protocol the row was made with.
    #[serde(default)]
    pub protocol: Option<RowProtocol>,
}

/// A published checkpoint and how crambench imports it (`crambench checkpoint import`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedCheckpoint {
    /// Hugging Face hub repository (`OWNER/NAME`).
    pub hub: String,
    /// Its layout (`upstream-v2-hub`, `upstream-v1-hub`, `hf-bert`).
    pub layout: String,
    /// The import command.
    pub import: String,
    pub note: String,
}

/// The fine-tuning settings a reference row was made with; `None`: the source does not say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowProtocol {
    /// `glue-sane` or `glue-bert`.
    pub name: String,
    pub frozen_warmup: Option<bool>,
    pub key_padding_mask: Option<bool>,
    pub epochs: Option<u32>,
    pub trials: Option<u32>,
    /// Aggregate rule of the published average.
    pub aggregate: Option<String>,
}

/// Every recorded setting of a run's GLUE stage (the manifest's `glue` object: `protocol`,
/// `aggregate.rule`, and `settings` where recorded) that differs from `row`'s protocol, one
/// phrase each ("frozen warm-up off (the row: on)"). Settings the row or the run does not
/// record are not compared.
pub fn protocol_differences(row: &ReferenceRow, glue: &serde_json::Value) -> Vec<String> {
    let Some(p) = &row.protocol else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let onoff = |b: bool| if b { "on" } else { "off" };
    if let Some(name) = glue["protocol"].as_str() {
        // "glue-sane (demo tasks)": the demo rule has its own warning wherever a row is shown.
        if name.split(" (").next() != Some(p.name.as_str()) {
            out.push(format!("protocol {name} (the row: {})", p.name));
        }
    }
    let st = &glue["settings"];
    if let (Some(want), Some(got)) = (p.frozen_warmup, st["frozen_warmup"].as_bool()) {
        if want != got {
            out.push(format!(
                "frozen warm-up {} (the row: {})",
                onoff(got),
                onoff(want)
            ));
        }
    }
    if let (Some(want), Some(got)) = (p.key_padding_mask, st["key_padding_mask"].as_bool()) {
        if want != got {
            out.push(format!(
                "key-padding mask {} (the row: {})",
                onoff(got),
                onoff(want)
            ));
        }
    }
    if let (Some(want), Some(got)) = (p.epochs, st["epochs"].as_u64()) {
        if u64::from(want) != got {
            out.push(format!("{got} epochs (the row: {want})"));
        }
    }
    if let (Some(want), Some(got)) = (p.trials, st["trials"].as_u64()) {
        if u64::from(want) != got {
            out.push(format!("{got} trials per task (the row: {want})"));
        }
    }
    if let (Some(want), Some(got)) = (&p.aggregate, glue["aggregate"]["rule"].as_str()) {
        if want != got {
            out.push(format!("aggregate rule {got} (the row: {want})"));
        }
    }
    out
}

/// A published pretraining-loss figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossReference {
    pub what: String,
    pub value: f64,
    pub source: String,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceTable {
    pub description: String,
    pub unit: String,
    /// Evaluation set → the metric its column reports (`stsb` → `pearson`).
    pub columns: BTreeMap<String, String>,
    pub rows: Vec<ReferenceRow>,
    pub not_found: Vec<String>,
    pub pretraining_loss: Vec<LossReference>,
}

/// The embedded table (parsed once).
pub fn table() -> &'static ReferenceTable {
    static TABLE: OnceLock<ReferenceTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        serde_json::from_str(GLUE_REFERENCE_JSON)
            .expect("reference/glue_reference.json is checked by the unit tests")
    })
}

/// The row named `id`; the error lists the known ids.
pub fn row(id: &str) -> Result<&'static ReferenceRow> {
    let t = table();
    t.rows.iter().find(|r| r.id == id).ok_or_else(|| {
        let ids: Vec<&str> = t.rows.iter().map(|r| r.id.as_str()).collect();
        Error::input(
            format!("--reference {id}"),
            format!("no such reference row (known: {})", ids.join(", ")),
        )
        .into()
    })
}

/// The reference row a recipe is compared with by default: v1 recipes against crammed BERT v1,
/// the other crammed recipes against v2's model card, everything else against BERT-base.
pub fn default_for_recipe(recipe_name: &str) -> &'static ReferenceRow {
    let id = if recipe_name.starts_with("crammed-bert-v1") {
        "crammed-bert-v1"
    } else if recipe_name.starts_with("crammed-bert") || recipe_name.starts_with("demo") {
        "crammed-bert-v2-best-of-5"
    } else {
        "bert-base"
    };
    row(id).expect("ids in default_for_recipe exist")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_table_parses_and_ids_are_unique() {
        let t = table();
        assert_eq!(t.unit, "percent");
        let mut ids: Vec<&str> = t.rows.iter().map(|r| r.id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), t.rows.len());
        for r in &t.rows {
            assert_eq!(
                r.cells.keys().collect::<Vec<_>>(),
                t.columns.keys().collect::<Vec<_>>(),
                "{}",
                r.id
            );
        }
        assert_eq!(row("crammed-bert-v1").unwrap().glue["cramming"], 78.6);
        assert_eq!(row("crammed-bert-v2-a6000").unwrap().cells["cola"], None);
        assert!(row("nope").is_err());
        assert_eq!(default_for_recipe("crammed-bert-v1").id, "crammed-bert-v1");
        assert_eq!(default_for_recipe("bert-original").id, "bert-base");
        // Which published checkpoint each row belongs to.
        let hub = |id: &str| row(id).unwrap().checkpoint.as_ref().map(|c| c.hub.as_str());
        assert_eq!(
            hub("crammed-bert-v2-best-of-5"),
            Some("JonasGeiping/crammed-bert")
        );
        assert_eq!(
            hub("crammed-bert-v1"),
            Some("JonasGeiping/crammed-bert-legacy")
        );
        assert_eq!(hub("bert-base"), Some("google-bert/bert-base-uncased"));
        assert_eq!(hub("crammed-bert-v2-a6000"), None);
        assert!(
            t.rows.iter().all(|r| r.protocol.is_some()),
            "every row names its protocol"
        );
    }

    #[test]
    fn protocol_differences_name_each_setting() {
        let v1 = row("crammed-bert-v1").unwrap();
        let same = serde_json::json!({"protocol": "glue-sane", "aggregate": {"rule": "cramming"},
            "settings": {"frozen_warmup": true, "key_padding_mask": false, "epochs": 5, "trials": 5}});
        assert!(protocol_differences(v1, &same).is_empty());
        let other = serde_json::json!({"protocol": "glue-sane", "aggregate": {"rule": "bert-paper"},
            "settings": {"frozen_warmup": false, "key_padding_mask": true, "epochs": 3, "trials": 5}});
        let d = protocol_differences(v1, &other);
        assert_eq!(d.len(), 4, "{d:?}");
        assert!(d[0].contains("frozen warm-up off (the row: on)"), "{d:?}");
        assert!(
            d.iter()
                .any(|x| x.contains("key-padding mask on (the row: off)")),
            "{d:?}"
        );
        assert!(d.iter().any(|x| x.contains("3 epochs")), "{d:?}");
        assert!(
            d.iter().any(|x| x.contains("aggregate rule bert-paper")),
            "{d:?}"
        );
        // A manifest made before `settings` was recorded compares only what it has.
        let old = serde_json::json!({"protocol": "glue-bert", "aggregate": {"rule": "cramming"}});
        assert_eq!(
            protocol_differences(v1, &old),
            vec!["protocol glue-bert (the row: glue-sane)"]
        );
    }
}
