//! `crambench compare`: runs side by side.
//!
//! Per evaluation set and metric: each run's median over its trials, the spread (min–max and
//! the number of trials), and the delta of the median to the first run in percent points;
//! the aggregate under its named rule; budget (allowed/used device-hours) and hardware class;
//! optionally a column of the paper's published numbers ([`crate::reference`]).
//!
//! Every delta comes with a 95% interval when both runs' predictions verify against their
//! manifests and cover the same dev examples: the paired bootstrap of
//! [`crate::glue::bootstrap`] (B = [`crate::glue::controls::RESAMPLES`] draws of the dev
//! examples, the same draws for both runs, each resample's value the median over trials; the
//! aggregate recomputed resample by resample), seeded by
//! `seeds::derive(COMPARE_SEED, "compare/bootstrap/<set>")` so the same runs give the same
//! interval. Each run after the first gets a one-line verdict on the aggregate
//! ("b is 1.80 ± 0.60 points above a on the cramming aggregate …").
//!
//! Nothing incomparable is mixed silently: runs with a different aggregate rule, fine-tuning
//! protocol or hardware class than the first are listed in `warnings`. Deltas are never
//! computed across different aggregate rules (aggregate delta) or protocols (every GLUE delta
//! of that run); hardware differences are flagged but deltas are still shown. With a reference
//! row, every run whose recorded fine-tuning settings (protocol, frozen warm-up, key-padding
//! mask, epochs, trials, aggregate rule) differ from the row's protocol gets a warning naming
//! each setting ([`reference::protocol_differences`]).
use crate::glue::aggregate::{self, Rule};
use crate::glue::bootstrap::{self, Paired};
use crate::glue::controls::{self, Difference, Interval};
use crate::glue::predictions::Row as PredRow;
use crate::glue::tasks::{self, Metrics};
use crate::record::RunRecord;
use crate::reference::{self, ReferenceRow};
use crate::stats::Spread;
use anyhow::Result;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// One run's column header.
#[derive(Debug, Clone, Serialize)]
pub struct RunColumn {
    pub source: String,
    pub recipe: Option<String>,
    pub hardware_class: String,
    pub protocol: Option<String>,
    pub allowed_device_hours: Option<f64>,
    pub used_device_hours: Option<f64>,
    pub final_mlm_loss: Option<f64>,
    pub tokens_per_second: Option<f64>,
    pub aggregate: Option<AggregateCell>,
}

/// The aggregate of one run.
#[derive(Debug, Clone, Serialize)]
pub struct AggregateCell {
    pub rule: String,
    /// Percent points.
    pub value: f64,
    /// To the first run's aggregate, when both use the same rule.
    pub delta: Option<f64>,
    /// The delta's paired bootstrap interval (points), when every set of the rule pairs.
    pub delta_ci95: Option<Interval>,
}

/// One run's value of one (set, metric), in percent points.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// The median over trials (the manifest's per-set value).
    pub median: f64,
    /// Smallest and largest trial value, and the number of trials.
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub n: usize,
    /// median − the first run's median; `None` for the first run, when the first run lacks
    /// the value, or across protocols.
    pub delta: Option<f64>,
    /// The delta's paired bootstrap interval (points), when both runs' predictions pair.
    pub delta_ci95: Option<Interval>,
}

/// One row: an evaluation set and one of its metrics.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub set: String,
    pub metric: String,
    /// One per run, in the order given; `None` where the run lacks the value.
    pub cells: Vec<Option<Cell>>,
    /// The reference row's published value (percent), when this metric is the one the
    /// reference table reports for the set.
    pub reference: Option<f64>,
}

/// The reference column.
#[derive(Debug, Clone, Serialize)]
pub struct ReferenceColumn {
    pub id: String,
    pub model: String,
    pub source: String,
    /// The published average under the first run's rule, when published.
    pub aggregate: Option<f64>,
}

/// The whole comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub runs: Vec<RunColumn>,
    pub rows: Vec<Row>,
    pub reference: Option<ReferenceColumn>,
    /// One sentence per run after the first: how far it is from the first on the aggregate.
    pub verdicts: Vec<String>,
    pub warnings: Vec<String>,
}

/// Master seed of compare's resampling streams (fixed: the same runs give the same intervals).
pub const COMPARE_SEED: u64 = 0x636f_6d70_6172_6521; // "compare!"

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// Compare `records` (the first is the base of the deltas), optionally against `reference`.
/// Every record must be a `crambench run` manifest.
pub fn compare(records: &[RunRecord], reference: Option<&ReferenceRow>) -> Result<Comparison> {
    let reference_row = reference;
    for r in records {
        r.require_run()?;
    }
    let mut warnings = Vec::new();
    let mut runs = Vec::new();
    let first = records.first();
    let first_rule = first
        .and_then(|r| r.aggregate())
        .map(|(r, _)| r.to_string());
    let first_protocol = first.and_then(protocol).map(str::to_string);
    let first_hw = first.map(|r| r.hardware_class().to_string());
    let first_agg = first.and_then(|r| r.aggregate()).map(|(_, v)| v);
    // Whether run i's GLUE numbers may be compared with the first run's.
    let mut same_protocol = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let p = r.predicate();
        let agg = r.aggregate().map(|(rule, value)| AggregateCell {
            rule: rule.to_string(),
            value,
            delta: (i > 0 && Some(rule) == first_rule.as_deref())
                .then(|| first_agg.map(|f| value - f))
                .flatten(),
            delta_ci95: None,
        });
        let prot = protocol(r).map(str::to_string);
        if i > 0 {
            let name = &r.source;
            if let (Some(a), Some(b)) = (&first_rule, r.aggregate().map(|(x, _)| x)) {
                if a != b {
                    warnings.push(format!(
                        "{name}: aggregate rule `{b}` differs from the first run's `{a}`; \
                         aggregate delta not computed"
                    ));
                }
            }
            if prot != first_protocol {
                warnings.push(format!(
                    "{name}: fine-tuning protocol {:?} differs from the first run's {:?}; \
                     per-set deltas not computed",
                    prot.as_deref().unwrap_or("none"),
                    first_protocol.as_deref().unwrap_or("none")
                ));
            }
            if Some(r.hardware_class()) != first_hw.as_deref() {
                warnings.push(format!(
                    "{name}: hardware class `{}` differs from the first run's `{}`",
                    r.hardware_class(),
                    first_hw.as_deref().unwrap_or("")
                ));
            }
        }
        same_protocol.push(prot == first_protocol);
        runs.push(RunColumn {
            source: r.source.clone(),
            recipe: r.recipe_name().map(str::to_string),
            hardware_class: r.hardware_class().to_string(),
            protocol: prot,
            allowed_device_hours: num(&p["budget"]["allowed_device_hours"]),
            used_device_hours: num(&p["budget"]["used_device_hours"]),
            final_mlm_loss: num(&p["pretraining"]["final_mlm_loss"]),
            tokens_per_second: num(&p["pretraining"]["tokens_per_second"]),
            aggregate: agg,
        });
    }

    // (set, metric) → per run cell; sets in the reference table's column order first.
    let mut keys: BTreeMap<(usize, String, String), ()> = BTreeMap::new();
    let order = |set: &str| -> usize {
        reference::table()
            .columns
            .keys()
            .position(|k| k == set)
            .unwrap_or(usize::MAX)
    };
    for r in records {
        if let Some(tasks) = r.glue().and_then(|g| g["tasks"].as_object()) {
            for (set, t) in tasks {
                for m in t["metrics"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(m, _)| m)
                {
                    keys.insert((order(set), set.clone(), m.clone()), ());
                }
            }
        }
    }
    let mut rows = Vec::new();
    for (_, set, metric) in keys.into_keys() {
        let mut cells: Vec<Option<Cell>> = records.iter().map(|r| cell(r, &set, &metric)).collect();
        let base = cells.first().cloned().flatten().map(|c| c.median);
        for (i, c) in cells.iter_mut().enumerate().skip(1) {
            if let (Some(c), Some(b)) = (c.as_mut(), base) {
                if same_protocol[i] {
                    c.delta = Some(c.median - b);
                }
            }
        }
        let reference = reference.and_then(|row| {
            let col = reference::table().columns.get(&set)?;
            if *col == metric {
                row.cells.get(&set).copied().flatten()
            } else {
                None
            }
        });
        rows.push(Row {
            set,
            metric,
            cells,
            reference,
        });
    }
    // Intervals: every run against the first, paired by dev example.
    let mut verdicts = Vec::new();
    let base_rows = predictions_of(records.first());
    for (i, r) in records.iter().enumerate().skip(1) {
        if !same_protocol[i] {
            continue;
        }
        let rows_i = predictions_of(Some(r));
        let mut why: Option<String> = None;
        // Per set: per resample, [base, run] metric values.
        let mut draws: BTreeMap<String, Vec<[bootstrap::SideValues; 2]>> = BTreeMap::new();
        let sets: Vec<String> = rows
            .iter()
            .map(|x| x.set.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for set in &sets {
            let pair = match (&base_rows, &rows_i, tasks::eval_set(set)) {
                (Ok(a), Ok(b), Ok(e)) => match (a.get(set), b.get(set)) {
                    (Some(a), Some(b)) => Paired::new(e, a, b),
                    _ => Err(format!("`{set}` is not in both runs")),
                },
                (Err(w), _, _) => Err(format!("{}: {w}", records[0].source)),
                (_, Err(w), _) => Err(format!("{}: {w}", r.source)),
                (_, _, Err(_)) => Err(format!("`{set}` is not an evaluation set crambench scores")),
            };
            let p = match pair {
                Ok(p) => p,
                Err(w) => {
                    why.get_or_insert(w);
                    continue;
                }
            };
            let metrics: Vec<String> = rows
                .iter()
                .filter(|x| &x.set == set)
                .map(|x| x.metric.clone())
                .collect();
            let seed =
                crate::provenance::seeds::derive(COMPARE_SEED, &format!("compare/bootstrap/{set}"));
            let d = bootstrap::resample(&p, &metrics, controls::RESAMPLES, seed)?;
            for row in rows.iter_mut().filter(|x| &x.set == set) {
                let diffs: Vec<f64> = d
                    .iter()
                    .filter_map(|s| Some(100.0 * (s[1].get(&row.metric)? - s[0].get(&row.metric)?)))
                    .collect();
                if let Some(Some(c)) = row.cells.get_mut(i) {
                    if c.delta.is_some() {
                        c.delta_ci95 = bootstrap::percentile_interval(&diffs, controls::LEVEL)
                            .map(|(lo, hi)| Interval { lo, hi });
                    }
                }
            }
            draws.insert(set.clone(), d);
        }
        let Some(agg) = runs[i].aggregate.as_mut() else {
            continue;
        };
        let Some(delta) = agg.delta else {
            continue;
        };
        let rule = Rule::parse(&agg.rule).ok();
        let agg_diffs: Vec<f64> = match rule {
            Some(rule) if !draws.is_empty() => (0..controls::RESAMPLES as usize)
                .filter_map(|b| {
                    let side = |k: usize| -> BTreeMap<String, Metrics> {
                        draws
                            .iter()
                            .map(|(s, d)| (s.clone(), d[b][k].clone()))
                            .collect()
                    };
                    let a = aggregate::aggregate(rule, &side(0)).ok()?;
                    let c = aggregate::aggregate(rule, &side(1)).ok()?;
                    Some(c.value - a.value)
                })
                .collect(),
            _ => Vec::new(),
        };
        agg.delta_ci95 = bootstrap::percentile_interval(&agg_diffs, controls::LEVEL)
            .map(|(lo, hi)| Interval { lo, hi });
        let on = format!("the {} aggregate", agg.rule);
        verdicts.push(match agg.delta_ci95 {
            Some(ci95) => format!(
                "[{}] {} is {}",
                i + 1,
                r.source,
                controls::above_text(
                    &Difference { delta, ci95 },
                    &format!("[1] {} on {on}", records[0].source)
                )
            ),
            None => format!(
                "[{}] {} is {:.2} points {} [1] {} on {on} (no interval: {})",
                i + 1,
                r.source,
                delta.abs(),
                if delta >= 0.0 { "above" } else { "below" },
                records[0].source,
                why.unwrap_or_else(|| "the aggregate's sets do not all pair".into())
            ),
        });
    }
    let reference = reference.map(|row| ReferenceColumn {
        id: row.id.clone(),
        model: row.model.clone(),
        source: row.source.clone(),
        aggregate: first_rule.as_ref().and_then(|r| row.glue.get(r).copied()),
    });
    // Each run's fine-tuning settings against the protocol the reference row was made with.
    if let Some(row) = reference_row {
        for r in records {
            if let Some(g) = r.glue() {
                let d = reference::protocol_differences(row, g);
                if !d.is_empty() {
                    warnings.push(format!(
                        "{}: protocol differs from the reference row `{}`: {}",
                        r.source,
                        row.id,
                        d.join("; ")
                    ));
                }
            }
        }
    }
    if let (Some(rc), Some(rule)) = (&reference, &first_rule) {
        if rule == "demo" {
            warnings.push(format!(
                "the runs use the `demo` rule (demo tasks): the reference row `{}` reports GLUE \
                 and shares no evaluation set with them",
                rc.id
            ));
        }
    }
    Ok(Comparison {
        runs,
        rows,
        reference,
        verdicts,
        warnings,
    })
}

/// Per evaluation set, every trial's verified prediction rows of `r` (checked against its
/// signed manifest by [`crate::audit`]); `Err(reason)` when there are none to use.
fn predictions_of(
    r: Option<&RunRecord>,
) -> std::result::Result<BTreeMap<String, Vec<Vec<PredRow>>>, String> {
    let r = r.ok_or("no run")?;
    if r.root.is_none() {
        return Err("a lone manifest (no predictions beside it)".into());
    }
    let opts = crate::audit::Options {
        gold: crate::audit::GoldPolicy::Column,
        ..Default::default()
    };
    let mut gold = crate::audit::GoldCache::default();
    let a = crate::audit::audit(r, &opts, &mut gold);
    let mut out = BTreeMap::new();
    for set in r
        .glue()
        .and_then(|g| g["tasks"].as_object())
        .into_iter()
        .flat_map(|o| o.keys())
    {
        if let Some(rows) = a.rows(set) {
            out.insert(
                set.clone(),
                rows.into_iter().map(<[PredRow]>::to_vec).collect(),
            );
        }
    }
    if out.is_empty() {
        return Err("no verified predictions".into());
    }
    Ok(out)
}

fn protocol(r: &RunRecord) -> Option<&str> {
    r.glue()?.get("protocol")?.as_str()
}

fn cell(r: &RunRecord, set: &str, metric: &str) -> Option<Cell> {
    let t = &r.glue()?["tasks"][set];
    let median = t["metrics"][metric].as_f64()? * 100.0;
    let trials: Vec<f64> = t["trials"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|tr| tr["metrics"][metric].as_f64().map(|v| v * 100.0))
        .collect();
    let spread = Spread::of(&trials);
    Some(Cell {
        median,
        min: spread.as_ref().map(|s| s.min),
        max: spread.as_ref().map(|s| s.max),
        n: trials.len(),
        delta: None,
        delta_ci95: None,
    })
}

fn f2(v: f64) -> String {
    format!("{v:.2}")
}

fn signed(v: f64) -> String {
    format!("{v:+.2}")
}

/// `+8.00 [+6.50, +9.50]`: a delta and its 95% interval, when there is one.
fn with_interval(d: f64, ci: Option<Interval>) -> String {
    match ci {
        Some(i) => format!("{} [{}, {}]", signed(d), signed(i.lo), signed(i.hi)),
        None => signed(d),
    }
}

impl Comparison {
    /// A plain-text table for people.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        for (i, r) in self.runs.iter().enumerate() {
            s += &format!(
                "[{}] {}  recipe {}  hardware {}  protocol {}  budget {}/{} device-h (used/allowed)",
                i + 1,
                r.source,
                r.recipe.as_deref().unwrap_or("?"),
                r.hardware_class,
                r.protocol.as_deref().unwrap_or("-"),
                r.used_device_hours.map(|v| format!("{v:.3}")).unwrap_or("-".into()),
                r.allowed_device_hours.map(|v| format!("{v:.3}")).unwrap_or("-".into()),
            );
            if let (Some(l), Some(t)) = (r.final_mlm_loss, r.tokens_per_second) {
                s += &format!("  loss {l:.4}  {t:.0} tokens/s");
            }
            s.push('\n');
        }
        if let Some(rc) = &self.reference {
            s += &format!("[ref] {} — {} ({})\n", rc.id, rc.model, rc.source);
        }
        s.push('\n');
        let mut header = vec!["set".to_string(), "metric".to_string()];
        for i in 0..self.runs.len() {
            header.push(format!("[{}] median (min–max, n)", i + 1));
            if i > 0 {
                header.push(format!("Δ[{}] [95% interval]", i + 1));
            }
        }
        if self.reference.is_some() {
            header.push("reference".into());
        }
        let mut table: Vec<Vec<String>> = vec![header];
        for row in &self.rows {
            let mut line = vec![row.set.clone(), row.metric.clone()];
            for (i, c) in row.cells.iter().enumerate() {
                line.push(match c {
                    Some(c) => match (c.min, c.max) {
                        (Some(lo), Some(hi)) => {
                            format!("{} ({}–{}, {})", f2(c.median), f2(lo), f2(hi), c.n)
                        }
                        _ => format!("{} (n=0)", f2(c.median)),
                    },
                    None => "-".into(),
                });
                if i > 0 {
                    line.push(
                        c.as_ref()
                            .and_then(|c| c.delta.map(|d| with_interval(d, c.delta_ci95)))
                            .unwrap_or("-".into()),
                    );
                }
            }
            if self.reference.is_some() {
                line.push(row.reference.map(f2).unwrap_or_default());
            }
            table.push(line);
        }
        let mut agg = vec!["aggregate".to_string(), "rule".to_string()];
        for (i, r) in self.runs.iter().enumerate() {
            agg.push(
                r.aggregate
                    .as_ref()
                    .map(|a| format!("{} ({})", f2(a.value), a.rule))
                    .unwrap_or("-".into()),
            );
            if i > 0 {
                agg.push(
                    r.aggregate
                        .as_ref()
                        .and_then(|a| a.delta.map(|d| with_interval(d, a.delta_ci95)))
                        .unwrap_or("-".into()),
                );
            }
        }
        if let Some(rc) = &self.reference {
            agg.push(rc.aggregate.map(f2).unwrap_or_default());
        }
        table.push(agg);
        let widths: Vec<usize> = (0..table[0].len())
            .map(|j| {
                table
                    .iter()
                    .map(|l| l[j].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for line in &table {
            let cells: Vec<String> = line
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(j, (c, w))| {
                    let pad = w - c.chars().count();
                    if j < 2 {
                        format!("{c}{}", " ".repeat(pad))
                    } else {
                        format!("{}{c}", " ".repeat(pad))
                    }
                })
                .collect();
            s += cells.join("  ").trim_end();
            s.push('\n');
        }
        if !self.verdicts.is_empty() {
            s.push('\n');
        }
        for v in &self.verdicts {
            s += v;
            s.push('\n');
        }
        for w in &self.warnings {
            s += &format!("WARNING: {w}\n");
        }
        s
    }
}

impl Comparison {
    /// Every run's loss, learning-rate and throughput curves against budget time in one unit
    /// (x = budget fraction × the run's allowance, in the unit of
    /// [`crate::report::panels::budget_axis`] for the largest allowance); `None` unless every
    /// log records its budget fraction and every run its allowance.
    fn budget_curves(
        &self,
        logs: &[crate::report::metrics_log::MetricsLog],
    ) -> Option<Vec<[crate::report::metrics_log::Curve; 3]>> {
        if logs.is_empty() || logs.len() != self.runs.len() {
            return None;
        }
        let allowed: Vec<f64> = self
            .runs
            .iter()
            .map(|r| r.allowed_device_hours.filter(|a| *a > 0.0))
            .collect::<Option<_>>()?;
        let max = allowed.iter().copied().reduce(f64::max)?;
        let (_, per_hour) = crate::report::panels::budget_axis(Some(max));
        let unit = per_hour / max; // units per device-hour
        logs.iter()
            .zip(&allowed)
            .map(|(m, a)| {
                let b = m.by_budget.as_ref()?;
                let k = a * unit;
                let scale = |c: &crate::report::metrics_log::Curve| {
                    c.iter().map(|&(x, y)| (x * k, y)).collect()
                };
                Some([scale(&b.loss_smooth), scale(&b.lr), scale(&b.throughput)])
            })
            .collect()
    }

    /// One self-contained HTML page (inline CSS and SVG, no script, nothing loaded): the runs,
    /// the verdicts, the curves of every run overlaid (`logs[i]` is run `i`'s metrics log):
    /// against budget time when every log records it (the loss smoothed, as in the report),
    /// else MLM loss and learning rate against the optimizer step and throughput against
    /// elapsed seconds; and the task table side by side with intervals.
    pub fn to_html(&self, logs: &[crate::report::metrics_log::MetricsLog]) -> Result<String> {
        use crate::escape::html as esc;
        use std::fmt::Write;
        let mut h = String::new();
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
             style-src 'unsafe-inline'\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>crambench compare</title>\n<style>{}</style>\n</head>\n<body>\n\
             <h1>crambench compare: {} runs</h1>\n",
            crate::report::html::STYLE,
            self.runs.len()
        );
        for v in &self.verdicts {
            let _ = writeln!(h, "<p><strong>{}</strong></p>", esc(v));
        }
        h += "<table>\n<tr><th>Run</th><th>Source</th><th>Recipe</th><th>Hardware</th>\
              <th>Protocol</th><th>Used / allowed device-h</th><th>Final MLM loss</th>\
              <th>Aggregate</th></tr>\n";
        let opt = |v: Option<f64>, d: usize| v.map(|v| format!("{v:.d$}")).unwrap_or_default();
        for (i, r) in self.runs.iter().enumerate() {
            let agg = r
                .aggregate
                .as_ref()
                .map(|a| {
                    let d = a
                        .delta
                        .map(|d| format!(" (Δ {})", with_interval(d, a.delta_ci95)))
                        .unwrap_or_default();
                    format!("{} ({}){d}", f2(a.value), a.rule)
                })
                .unwrap_or_default();
            let _ = writeln!(
                h,
                "<tr><td>[{}]</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td>\
                 <td class=\"n\">{} / {}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                i + 1,
                esc(&r.source),
                esc(r.recipe.as_deref().unwrap_or("")),
                esc(&r.hardware_class),
                esc(r.protocol.as_deref().unwrap_or("")),
                opt(r.used_device_hours, 4),
                opt(r.allowed_device_hours, 4),
                opt(r.final_mlm_loss, 4),
                esc(&agg)
            );
        }
        h += "</table>\n<h2>Curves</h2>\n";
        let label = |i: usize| format!("[{}]", i + 1);
        if let Some(curves) = self.budget_curves(logs) {
            // Against budget time, as the paper draws them (every run's log records it).
            let (x, _) = crate::report::panels::budget_axis(
                self.runs
                    .iter()
                    .filter_map(|r| r.allowed_device_hours)
                    .reduce(f64::max),
            );
            for (k, (title, y)) in [
                ("MLM loss (smoothed)", "loss"),
                ("Learning rate", "learning rate"),
                ("Throughput", "tokens per second"),
            ]
            .into_iter()
            .enumerate()
            {
                let series: Vec<(String, &crate::report::metrics_log::Curve)> = curves
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (label(i), &c[k]))
                    .collect();
                if let Some(svg) = crate::report::charts::lines_svg(title, x, y, &series)? {
                    let _ = writeln!(
                        h,
                        "<figure>\n{svg}\n<figcaption>{} against {}, every run</figcaption>\n</figure>",
                        esc(y),
                        esc(x)
                    );
                }
            }
        }
        let by_step = self.budget_curves(logs).is_none();
        for (title, x, y, pick) in [
            (
                "MLM loss",
                "optimizer step",
                "loss",
                (|m: &crate::report::metrics_log::MetricsLog| &m.loss)
                    as fn(
                        &crate::report::metrics_log::MetricsLog,
                    ) -> &crate::report::metrics_log::Curve,
            ),
            ("Learning rate", "optimizer step", "learning rate", |m| {
                &m.lr
            }),
            ("Throughput", "elapsed seconds", "tokens per second", |m| {
                &m.throughput
            }),
        ]
        .into_iter()
        .filter(|_| by_step)
        {
            let series: Vec<(String, &crate::report::metrics_log::Curve)> = logs
                .iter()
                .enumerate()
                .map(|(i, m)| (label(i), pick(m)))
                .collect();
            match crate::report::charts::lines_svg(title, x, y, &series)? {
                Some(svg) => {
                    let _ = writeln!(
                        h,
                        "<figure>\n{svg}\n<figcaption>{} against {}, every run</figcaption>\n</figure>",
                        esc(y),
                        esc(x)
                    );
                }
                None => {
                    let _ = writeln!(
                        h,
                        "<p class=\"note\">No {} values in any metrics log.</p>",
                        esc(y)
                    );
                }
            }
        }
        for (i, m) in logs.iter().enumerate() {
            if let Some(why) = &m.missing {
                let _ = writeln!(
                    h,
                    "<p class=\"note\">[{}]: no curves ({}).</p>",
                    i + 1,
                    esc(why)
                );
            }
        }
        h += "<h2>Tasks</h2>\n<table>\n<tr><th>Set</th><th>Metric</th>";
        for i in 0..self.runs.len() {
            let _ = write!(h, "<th>[{}] median (min–max, n)</th>", i + 1);
            if i > 0 {
                let _ = write!(h, "<th>Δ[{}] [95% interval]</th>", i + 1);
            }
        }
        if self.reference.is_some() {
            h += "<th>Reference</th>";
        }
        h += "</tr>\n";
        for row in &self.rows {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td>",
                esc(&row.set),
                esc(&row.metric)
            );
            for (i, c) in row.cells.iter().enumerate() {
                let cell = match c {
                    Some(c) => match (c.min, c.max) {
                        (Some(lo), Some(hi)) => {
                            format!("{} ({}–{}, {})", f2(c.median), f2(lo), f2(hi), c.n)
                        }
                        _ => f2(c.median),
                    },
                    None => String::new(),
                };
                let _ = write!(h, "<td class=\"n\">{cell}</td>");
                if i > 0 {
                    let d = c
                        .as_ref()
                        .and_then(|c| c.delta.map(|d| with_interval(d, c.delta_ci95)))
                        .unwrap_or_default();
                    let _ = write!(h, "<td class=\"n\">{d}</td>");
                }
            }
            if self.reference.is_some() {
                let _ = write!(
                    h,
                    "<td class=\"n\">{}</td>",
                    row.reference.map(f2).unwrap_or_default()
                );
            }
            h += "</tr>\n";
        }
        h += "</table>\n";
        if let Some(rc) = &self.reference {
            let _ = writeln!(
                h,
                "<p class=\"note\">Reference: <code>{}</code> — {} ({})</p>",
                esc(&rc.id),
                esc(&rc.model),
                esc(&rc.source)
            );
        }
        for w in &self.warnings {
            let _ = writeln!(h, "<p class=\"neg\">WARNING: {}</p>", esc(w));
        }
        h += "</body>\n</html>\n";
        Ok(h)
    }
}
