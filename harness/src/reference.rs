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
    }
}
