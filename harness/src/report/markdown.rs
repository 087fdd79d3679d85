//! The Markdown report (`report.md`): GitHub-flavoured tables, every text value from the
//! manifest escaped so it renders as text (a `|` cannot break a table, a `<script>` stays
//! visible text). Curves are only in the HTML page; this file says so.
pub use crate::escape::markdown as escape;
use crate::report::facts::{AggregateReference, Facts};
use crate::report::format;
use crate::report::tables::{self, Cell, KeyValues};
use std::fmt::Write;

/// `text` as a code span (text with backticks or line breaks falls back to escaped text).
fn code(text: &str) -> String {
    if text.contains(['`', '\n', '\r', '|']) {
        escape(text)
    } else {
        format!("`{text}`")
    }
}

fn cell(c: &Cell) -> String {
    match c {
        Cell::Text(t) => escape(t),
        Cell::Code(t) => code(t),
        Cell::Empty => String::new(),
    }
}

fn row(out: &mut String, cells: &[&str]) {
    let _ = writeln!(out, "| {} |", cells.join(" | "));
}

fn key_values(out: &mut String, rows: &KeyValues) {
    row(out, &["Field", "Value"]);
    row(out, &["---", "---"]);
    for (k, v) in rows {
        row(out, &[k, &cell(v)]);
    }
}

/// Render the report as Markdown.
pub fn render(f: &Facts) -> String {
    let mut o = String::new();
    let id = &f.identity;
    let recipe = id.recipe.as_deref().map(escape).unwrap_or_default();
    let _ = writeln!(o, "# crambench run report: {recipe}\n");

    o += "## Summary\n\n";
    key_values(&mut o, &tables::headline(f));
    o += "\n## Recipe\n";
    if f.recipe_panel.is_empty() {
        o += "\nThe statement records no resolved recipe.\n";
    }
    for g in &f.recipe_panel {
        let _ = writeln!(o, "\n### {}\n", g.title);
        key_values(&mut o, &tables::group(g));
    }
    o += "\n## Data\n\n";
    if f.data.is_empty() {
        o += "The statement records no data summary.\n";
    } else {
        key_values(&mut o, &tables::data(f));
    }

    o += "\n## Pretraining\n\n";
    key_values(&mut o, &tables::pretraining(f));
    let _ = writeln!(o, "\nMetrics log: {}", escape(&f.metrics.summary()));
    if let Some(l) = f.metrics.initial_loss {
        let _ = writeln!(
            o,
            "Initial MLM loss (first logged step): {}.",
            format::fixed(l, 4)
        );
    }
    if f.metrics.missing.is_none() {
        o += "The loss (raw and smoothed, against budget time), learning-rate and throughput \
              curves are in `report.html`.\n";
    }
    let published = &crate::reference::table().pretraining_loss;
    if !published.is_empty() {
        o +=
            "\nPublished MLM-loss reference points (not comparable across recipes or budgets):\n\n";
        for p in published {
            let _ = writeln!(
                o,
                "- {}: {} ({})",
                escape(&p.what),
                p.value,
                escape(&p.source)
            );
        }
    }

    glue(&mut o, f);

    o += "\n## Budget\n\n";
    key_values(&mut o, &tables::budget(f));
    let phases = tables::phases(f);
    if !phases.is_empty() {
        o += "\n";
        row(
            &mut o,
            &[
                "Phase, in pipeline order (wall time as recorded)",
                "Seconds",
            ],
        );
        row(&mut o, &["---", "---:"]);
        for (phase, secs) in &phases {
            row(&mut o, &[&escape(phase), secs]);
        }
    }

    o += "\n## Run\n\n";
    key_values(&mut o, &tables::run(f));
    o += "\n### Subjects\n\n";
    if id.subjects.is_empty() {
        o += "None recorded.\n";
    } else {
        row(&mut o, &["Role", "Name", "Digest"]);
        row(&mut o, &["---", "---", "---"]);
        for s in &id.subjects {
            let digests: Vec<String> = s
                .digests
                .iter()
                .map(|(a, h)| format!("{}:{}", escape(a), code(h)))
                .collect();
            let role = s.role.as_deref().map(escape).unwrap_or_default();
            row(&mut o, &[&role, &escape(&s.name), &digests.join("<br>")]);
        }
    }
    o += "\n### What is signed\n\n";
    let _ = writeln!(o, "{}\n", escape(tables::INPUTS_NOTE));
    row(&mut o, &["Input", "Signed", "How"]);
    row(&mut o, &["---", "---", "---"]);
    for i in &f.inputs {
        row(
            &mut o,
            &[
                &escape(&i.what),
                if i.signed { "yes" } else { "no" },
                &escape(&i.how),
            ],
        );
    }

    let r = &f.reference;
    o += "\n## Reference row\n\n";
    let _ = writeln!(o, "{}: {}\n", code(&r.id), escape(&r.model));
    let _ = writeln!(o, "- Source: {}", escape(&r.source));
    let _ = writeln!(o, "- Caveats: {}", escape(&r.caveats));
    if !f.glue.protocol_differences.is_empty() {
        let _ = writeln!(
            o,
            "- Protocol differs from the row's: {}",
            escape(&f.glue.protocol_differences.join("; "))
        );
    }
    o
}

fn glue(o: &mut String, f: &Facts) {
    let g = &f.glue;
    let r = &f.reference;
    o.push_str("\n## GLUE\n\n");
    if !g.present {
        o.push_str("This run has no GLUE results.\n");
        return;
    }
    let _ = writeln!(
        o,
        "Protocol: {}; fine-tuning epochs: {}. Values are percent points (median over trials, \
         then every trial); the reference is {}, Δ = median − reference. An empty reference \
         cell means the reference publishes no number for it.\n",
        g.protocol.as_deref().map(escape).unwrap_or_default(),
        g.epochs.map(|e| e.to_string()).unwrap_or_default(),
        code(&r.id)
    );
    if g.rows.is_empty() {
        o.push_str("No evaluation sets recorded.\n");
    } else {
        let control = match &g.control {
            Some(c) => format!("Control ({})", c.name),
            None => "Control".into(),
        };
        row(
            o,
            &[
                "Set",
                "Metric",
                "Median",
                "95% interval",
                "Trials",
                &escape(&control),
                "Above control",
                "Reference",
                "Δ",
            ],
        );
        row(
            o,
            &[
                "---", "---", "---:", "---:", "---", "---:", "---:", "---:", "---:",
            ],
        );
        for gr in &g.rows {
            row(
                o,
                &[
                    &escape(&gr.set),
                    &escape(&gr.metric),
                    &gr.median.map(format::pct).unwrap_or_default(),
                    &tables::interval(gr),
                    &tables::trials(gr),
                    &gr.control.map(format::pct).unwrap_or_default(),
                    &tables::above(gr),
                    &gr.reference.map(format::pct).unwrap_or_default(),
                    &gr.delta.map(format::delta).unwrap_or_default(),
                ],
            );
        }
    }
    if !g.not_evaluated.is_empty() {
        let sets: Vec<String> = g.not_evaluated.iter().map(|s| escape(s)).collect();
        let _ = writeln!(
            o,
            "\nReference sets this run did not evaluate: {}.",
            sets.join(", ")
        );
    }
    o.push_str("\n### Aggregate\n\n");
    match &g.aggregate {
        None => o.push_str("No aggregate recorded.\n"),
        Some(a) => {
            let ci = g
                .aggregate_ci95
                .map(|i| {
                    format!(
                        " (95% interval [{}, {}])",
                        format::pct(i.lo),
                        format::pct(i.hi)
                    )
                })
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "Rule {}: **{}**{ci}\n",
                code(&a.rule),
                format::pct(a.value)
            );
            o.push_str(&aggregate_note(&a.reference, &a.rule, &r.id, escape));
            o.push('\n');
            for n in tables::control_notes(f) {
                let _ = writeln!(o, "\n{}", escape(&n));
            }
        }
    }
}

/// The sentence about the aggregate and the reference, shared with the HTML page; `esc`
/// escapes the names for the target format.
pub fn aggregate_note(
    reference: &AggregateReference,
    rule: &str,
    reference_id: &str,
    esc: fn(&str) -> String,
) -> String {
    match reference {
        AggregateReference::Compared { value, delta } => format!(
            "Reference {} under the same rule: {}; Δ = {}.",
            esc(reference_id),
            format::pct(*value),
            format::delta(*delta)
        ),
        AggregateReference::Demo => format!(
            "The demo aggregate is the demo suite's own number (mean accuracy of the two demo \
             tasks), not a GLUE score: it is never compared with the reference's GLUE average \
             (reference {}).",
            esc(reference_id)
        ),
        AggregateReference::NotPublished(rules) => format!(
            "The reference {} publishes no average under rule {} (it has: {}); not compared.",
            esc(reference_id),
            esc(rule),
            if rules.is_empty() {
                "none".to_string()
            } else {
                rules.iter().map(|r| esc(r)).collect::<Vec<_>>().join(", ")
            }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_tables_and_html_inert() {
        assert_eq!(escape("a|b"), "a\\|b");
        assert_eq!(escape("<b>&x"), "&lt;b&gt;&amp;x");
        assert_eq!(
            escape("[l](u) *e* _u_ `c`"),
            "\\[l\\](u) \\*e\\* \\_u\\_ \\`c\\`"
        );
        assert_eq!(escape("two\nlines"), "two lines");
        assert_eq!(code("abc"), "`abc`");
        assert_eq!(code("a|b"), "a\\|b");
        assert_eq!(code("a`b"), "a\\`b");
    }
}
