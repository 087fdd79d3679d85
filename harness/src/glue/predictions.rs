//! Per-example predictions: a TSV `idx\tprediction\tgold` per evaluation set and trial, written
//! atomically and hashed, and re-scored by `crambench glue score`.
//!
//! Classes are written as their index in the task's internal order (see
//! [`crate::glue::tasks`]), STS-B scores in shortest round-trip decimal, so re-scoring gives
//! bit-identical metrics. The gold column may be left empty when the gold labels come from
//! elsewhere (`--gold`).
use crate::error::Error;
use crate::glue::tasks::{self, EvalSet, Example, Metrics, Target};
use crate::provenance::hash::sha256_hex;
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::Path;

/// Header line of a predictions file.
pub const HEADER: &str = "idx\tprediction\tgold";

/// Largest predictions file read (QQP dev has 40,430 rows; this leaves room).
const LIMIT: u64 = 256 << 20;

/// One row: example index, prediction, gold (when known).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub idx: u64,
    pub prediction: Target,
    pub gold: Option<Target>,
}

/// The file's bytes for `rows`.
pub fn render(rows: &[Row]) -> String {
    let mut s = String::with_capacity(rows.len() * 16 + HEADER.len() + 1);
    s += HEADER;
    s.push('\n');
    for r in rows {
        s += &format!(
            "{}\t{}\t{}\n",
            r.idx,
            r.prediction.to_field(),
            r.gold.map(|g| g.to_field()).unwrap_or_default()
        );
    }
    s
}

/// Write `rows` atomically; returns the SHA-256 hex of the bytes written.
pub fn write(path: &Path, rows: &[Row]) -> Result<String> {
    let text = render(rows);
    crate::io::write_atomic(path, text.as_bytes(), None)?;
    Ok(sha256_hex(text.as_bytes()))
}

fn parse_target(set: &EvalSet, s: &str) -> Option<Target> {
    let s = s.trim();
    if set.task.is_regression() {
        s.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(Target::Score)
    } else {
        s.parse::<usize>()
            .ok()
            .filter(|c| *c < set.task.labels().len())
            .map(Target::Class)
            // Also accept the class name (e.g. `entailment`).
            .or_else(|| {
                set.task
                    .labels()
                    .iter()
                    .position(|l| *l == s)
                    .map(Target::Class)
            })
    }
}

/// Read a predictions file. Every error names `file:line`.
pub fn read(set: &EvalSet, path: &Path) -> Result<Vec<Row>> {
    let bytes = crate::io::read_limited(path, LIMIT)?;
    let name = path.display().to_string();
    let text =
        std::str::from_utf8(&bytes).map_err(|e| Error::input(&name, format!("not UTF-8: {e}")))?;
    let mut rows = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let at = format!("{name}:{}", i + 1);
        if i == 0 {
            if line.trim_end() != HEADER {
                return Err(Error::input(
                    at,
                    format!("expected the header `{}`", HEADER.replace('\t', "\\t")),
                )
                .into());
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 2 || f.len() > 3 {
            return Err(Error::input(
                at,
                format!("{} columns, expected idx, prediction, gold", f.len()),
            )
            .into());
        }
        let idx: u64 = f[0]
            .trim()
            .parse()
            .map_err(|_| Error::input(&at, format!("idx `{}` is not a number", f[0])))?;
        if !seen.insert(idx) {
            return Err(Error::input(at, format!("idx {idx} appears twice")).into());
        }
        let prediction = parse_target(set, f[1]).ok_or_else(|| {
            Error::input(&at, format!("`{}` is not a {} prediction", f[1], set.id))
        })?;
        let gold = match f.get(2).map(|s| s.trim()) {
            None | Some("") => None,
            Some(g) => Some(
                parse_target(set, g)
                    .filter(|t| tasks::gold_in_range(set.task, t))
                    .ok_or_else(|| Error::input(&at, format!("`{g}` is not a {} label", set.id)))?,
            ),
        };
        rows.push(Row {
            idx,
            prediction,
            gold,
        });
    }
    if rows.is_empty() {
        return Err(Error::input(&name, "no predictions").into());
    }
    Ok(rows)
}

/// Score rows against their own gold column (every row must have one).
pub fn score_rows(set: &EvalSet, rows: &[Row], source: &str) -> Result<Metrics> {
    let mut pred = Vec::with_capacity(rows.len());
    let mut gold = Vec::with_capacity(rows.len());
    for r in rows {
        pred.push(r.prediction);
        gold.push(r.gold.ok_or_else(|| {
            Error::input(
                source,
                format!("idx {} has no gold label (pass --gold)", r.idx),
            )
        })?);
    }
    tasks::score(set, &pred, &gold)
}

/// Score rows against gold examples joined by `idx`: every gold example must be predicted and
/// every prediction must have a gold example. A gold column in the rows, if present, must agree.
pub fn score_against(
    set: &EvalSet,
    rows: &[Row],
    gold: &[Example],
    source: &str,
) -> Result<Metrics> {
    let by_idx: BTreeMap<u64, &Row> = rows.iter().map(|r| (r.idx, r)).collect();
    // Each gold example once: a duplicated idx would count one prediction twice and leave
    // another unchecked.
    let mut seen = std::collections::HashSet::with_capacity(gold.len());
    if let Some(dup) = gold.iter().find(|e| !seen.insert(e.idx)) {
        return Err(Error::input(
            source,
            format!("the gold examples have idx {} twice", dup.idx),
        )
        .into());
    }
    let mut pred = Vec::with_capacity(gold.len());
    let mut g = Vec::with_capacity(gold.len());
    for ex in gold {
        let label = ex
            .label
            .ok_or_else(|| Error::input(source, format!("gold idx {} has no label", ex.idx)))?;
        let r = by_idx
            .get(&ex.idx)
            .ok_or_else(|| Error::input(source, format!("no prediction for idx {}", ex.idx)))?;
        if let Some(own) = r.gold {
            if own != label {
                return Err(Error::input(
                    source,
                    format!(
                        "idx {}: gold column {} disagrees with the gold file's {}",
                        ex.idx,
                        own.to_field(),
                        label.to_field()
                    ),
                )
                .into());
            }
        }
        pred.push(r.prediction);
        g.push(label);
    }
    if rows.len() != gold.len() {
        let gold_idx: std::collections::HashSet<u64> = gold.iter().map(|e| e.idx).collect();
        let extra = rows
            .iter()
            .find(|r| !gold_idx.contains(&r.idx))
            .map(|r| r.idx);
        return Err(Error::input(
            source,
            format!(
                "{} predictions for {} gold examples{}",
                rows.len(),
                gold.len(),
                extra
                    .map(|i| format!(" (idx {i} is not in the gold file)"))
                    .unwrap_or_default()
            ),
        )
        .into());
    }
    tasks::score(set, &pred, &g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gold_with_a_duplicated_idx_is_refused() {
        let set = tasks::eval_set("sst2").unwrap();
        let ex = |idx: u64, label: usize| Example {
            idx,
            text_a: "x".into(),
            text_b: None,
            label: Some(Target::Class(label)),
        };
        let row = |idx: u64, p: usize| Row {
            idx,
            prediction: Target::Class(p),
            gold: None,
        };
        // idx 0 twice in the gold: one prediction would be counted twice, idx 1's never.
        let gold = [ex(0, 1), ex(0, 1)];
        let rows = [row(0, 1), row(1, 0)];
        let e = score_against(&set, &rows, &gold, "p.tsv").unwrap_err();
        assert!(format!("{e:#}").contains("idx 0 twice"), "{e:#}");
        let gold = [ex(0, 1), ex(1, 0)];
        let m = score_against(&set, &rows, &gold, "p.tsv").unwrap();
        assert_eq!(m["accuracy"], 1.0);
    }
}
