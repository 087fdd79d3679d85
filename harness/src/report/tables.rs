//! The report's key–value tables (run identity, budget, pretraining) and the GLUE trial lists
//! as plain text, built once and shared by the Markdown and HTML renderings, which only
//! escape and mark them up. A value the manifest lacks is [`Cell::Empty`].
use crate::report::facts::{Facts, GlueRow};
use crate::report::format;

/// One table cell, before escaping.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    /// Shown as code (digests, ids).
    Code(String),
    Empty,
}

impl Cell {
    fn text(v: Option<String>) -> Cell {
        v.map_or(Cell::Empty, Cell::Text)
    }
    fn code(v: Option<String>) -> Cell {
        v.map_or(Cell::Empty, Cell::Code)
    }
}

/// What the "What is signed" table means, shared by both renderings.
pub const INPUTS_NOTE: &str = "A signed input is one the DSSE-signed statement vouches for, \
itself or by digest. This report reads the statement without checking its signature or the \
digests (only the metrics log's digest is checked here, because the curves are drawn from \
it): run crambench verify on the run directory to check them all.";

/// A table of (label, value) rows.
pub type KeyValues = Vec<(&'static str, Cell)>;

/// The answer first: the GLUE aggregate with its interval, against the control and the
/// reference, the final loss, the budget used of allowed, and whether the statement is signed.
pub fn headline(f: &Facts) -> KeyValues {
    let g = &f.glue;
    let agg = g.aggregate.as_ref().map(|a| {
        let ci = g
            .aggregate_ci95
            .map(|i| {
                format!(
                    ", 95% interval [{}, {}]",
                    format::pct(i.lo),
                    format::pct(i.hi)
                )
            })
            .unwrap_or_default();
        format!("{} ({} rule{ci})", format::pct(a.value), a.rule)
    });
    let reference = g.aggregate.as_ref().map(|a| match &a.reference {
        crate::report::facts::AggregateReference::Compared { value, delta } => format!(
            "{} {}: Δ = {}",
            f.reference.id,
            format::pct(*value),
            format::delta(*delta)
        ),
        crate::report::facts::AggregateReference::Demo => {
            "not compared: the demo aggregate is not a GLUE score".to_string()
        }
        crate::report::facts::AggregateReference::NotPublished(_) => format!(
            "not compared: {} publishes no average under the {} rule",
            f.reference.id, a.rule
        ),
    });
    let b = &f.budget;
    let budget = match (b.used_device_hours, b.allowed_device_hours) {
        (Some(u), Some(a)) => Some(format!(
            "{} of {} device-hours",
            format::fixed(u, 4),
            format::fixed(a, 4)
        )),
        _ => None,
    };
    let signed = if f.identity.signatures == 0 {
        "no".to_string()
    } else {
        "yes (check it with crambench verify)".to_string()
    };
    vec![
        ("Recipe", Cell::text(f.identity.recipe.clone())),
        (
            "Hardware",
            Cell::text(
                f.identity
                    .hardware_words
                    .clone()
                    .or_else(|| f.identity.hardware_class.clone()),
            ),
        ),
        ("Precision", Cell::text(f.identity.precision.clone())),
        ("GLUE aggregate", Cell::text(agg)),
        ("Above control", Cell::text(g.above_control())),
        ("Against reference", Cell::text(reference)),
        (
            "Final MLM loss",
            Cell::text(f.pretraining.final_mlm_loss.map(|l| format::fixed(l, 4))),
        ),
        ("Budget used", Cell::text(budget)),
        ("Signed", Cell::Text(signed)),
    ]
}

/// A median's interval, `[lo, hi]` in points.
pub fn interval(row: &GlueRow) -> String {
    row.ci95
        .map(|i| format!("[{}, {}]", format::pct(i.lo), format::pct(i.hi)))
        .unwrap_or_default()
}

/// Run − control of a row, `X ± Y`.
pub fn above(row: &GlueRow) -> String {
    row.above_control
        .map(|d| {
            format!(
                "{} ± {}",
                format::delta(d.delta),
                format::fixed(d.ci95.half_width(), 2)
            )
        })
        .unwrap_or_default()
}

/// The aggregate's control sentences (empty for manifests without controls).
pub fn control_notes(f: &Facts) -> Vec<String> {
    let g = &f.glue;
    let Some(c) = &g.control else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(t) = g.above_control() {
        out.push(format!("The run is {t}."));
    }
    out.push(format!("Control ({}): {}.", c.name, c.description));
    if c.name != "constant" {
        if let Some(v) = c.constant_aggregate {
            out.push(format!(
                "The constant (majority-class) predictor scores {} on the same rule.",
                format::pct(v)
            ));
        }
    }
    out
}

/// Run identity.
pub fn run(f: &Facts) -> KeyValues {
    let id = &f.identity;
    let signed = if id.signatures == 0 {
        "no (unsigned statement)".to_string()
    } else {
        format!(
            "yes ({} signature{}; not checked by the report: use crambench verify)",
            id.signatures,
            if id.signatures == 1 { "" } else { "s" }
        )
    };
    vec![
        ("Recipe", Cell::text(id.recipe.clone())),
        ("Recipe SHA-256", Cell::code(id.recipe_sha256.clone())),
        ("Created", Cell::text(id.created.clone())),
        (
            "crambench version",
            Cell::text(id.crambench_version.clone()),
        ),
        ("Hardware class", Cell::text(id.hardware_class.clone())),
        ("Device kind", Cell::text(id.device_kind.clone())),
        ("Devices", Cell::text(id.devices.map(|d| d.to_string()))),
        (
            "Master seed",
            Cell::text(id.master_seed.map(|d| d.to_string())),
        ),
        ("Signed", Cell::Text(signed)),
    ]
}

/// Budget accounting.
pub fn budget(f: &Facts) -> KeyValues {
    let b = &f.budget;
    let hours =
        |v: Option<f64>| Cell::text(v.map(|v| format!("{} device-hours", format::fixed(v, 4))));
    let mut rows = vec![
        ("Allowed", hours(b.allowed_device_hours)),
        ("Used", hours(b.used_device_hours)),
    ];
    if let (Some(a), Some(u)) = (b.allowed_device_hours, b.used_device_hours) {
        if a > 0.0 {
            let share = format!("{} %", format::fixed(100.0 * u / a, 1));
            rows.push(("Used / allowed", Cell::Text(share)));
        }
    }
    let list = |v: &[String]| Cell::text((!v.is_empty()).then(|| v.join("; ")));
    rows.push(("Counted phases", list(&b.counted)));
    rows.push(("Uncounted phases", list(&b.uncounted)));
    rows
}

/// Phase wall times in pipeline order with human names: (phase, seconds as text).
pub fn phases(f: &Facts) -> Vec<(String, String)> {
    crate::report::panels::phases(&f.budget.phase_seconds)
        .into_iter()
        .map(|(p, s)| (p, format::seconds(s)))
        .collect()
}

/// Pretraining summary.
pub fn pretraining(f: &Facts) -> KeyValues {
    let t = &f.pretraining;
    let loss = t.final_mlm_loss.map(|l| {
        let over = t
            .final_loss_window
            .map(|w| format!(" (mean over the last {w} micro-steps)"))
            .unwrap_or_default();
        format!("{}{over}", format::fixed(l, 4))
    });
    vec![
        ("Optimizer steps", Cell::text(t.steps.map(format::count))),
        ("Tokens seen", Cell::text(t.tokens_seen.map(format::count))),
        ("Final MLM loss", Cell::text(loss)),
        (
            "Throughput",
            Cell::text(
                t.tokens_per_second
                    .map(|v| format!("{} tokens/s", format::fixed(v, 0))),
            ),
        ),
    ]
}

/// Every trial of a GLUE row in trial order (`–` for a trial without the metric).
pub fn trials(row: &GlueRow) -> String {
    row.trials
        .iter()
        .map(|t| t.map(format::pct).unwrap_or_else(|| "–".into()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The data summary as a key–value table (names and digests as code).
pub fn data(f: &Facts) -> KeyValues {
    f.data
        .iter()
        .map(|(k, v)| {
            let cell = if matches!(*k, "Dataset" | "Root digest") {
                Cell::Code(v.clone())
            } else {
                Cell::Text(v.clone())
            };
            (*k, cell)
        })
        .collect()
}

/// One recipe panel group as a key–value table.
pub fn group(g: &crate::report::panels::Group) -> KeyValues {
    g.rows
        .iter()
        .map(|(k, v)| (*k, Cell::Text(v.clone())))
        .collect()
}
