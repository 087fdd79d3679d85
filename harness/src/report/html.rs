//! The HTML report (`report.html`): one self-contained page — inline CSS, the charts as inline
//! SVG, no script, no external URL (a Content-Security-Policy meta tag forbids loading
//! anything). Every text value from the manifest or the reference goes through [`escape`].
pub use crate::escape::html as escape;
use crate::report::charts::{self, Chart};
use crate::report::facts::Facts;
use crate::report::tables::{self, Cell, KeyValues};
use crate::report::{format, markdown};
use anyhow::Result;
use std::fmt::Write;

/// The page style, shared with `compare --html`.
pub const STYLE: &str =
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:60rem;\
margin:2rem auto;padding:0 1rem;color:#1b1b1b;line-height:1.45}\
h1{font-size:1.6rem}h2{margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}\
table{border-collapse:collapse;margin:.6rem 0}th,td{border:1px solid #ddd;padding:.25rem .6rem;\
text-align:left;vertical-align:top}th{background:#f5f5f5}td.n{text-align:right;\
font-variant-numeric:tabular-nums}code{font-size:.9em;word-break:break-all}\
.pos{color:#17663a}.neg{color:#a11}.note{color:#555}figure{margin:1rem 0}\
figure svg{max-width:100%;height:auto;border:1px solid #eee}\
.panel{display:grid;grid-template-columns:repeat(auto-fit,minmax(17rem,1fr));gap:0 1rem}\
.panel table{width:100%}.panel h3{margin:.8rem 0 .2rem;font-size:1rem}\
td.yes{color:#17663a}td.no{color:#a11}";

struct Page(String);

impl Page {
    fn key_values(&mut self, rows: &KeyValues) {
        self.0 += "<table>\n";
        for (k, v) in rows {
            let v = match v {
                Cell::Text(t) => escape(t),
                Cell::Code(t) => format!("<code>{}</code>", escape(t)),
                Cell::Empty => String::new(),
            };
            let _ = writeln!(self.0, "<tr><th>{}</th><td>{v}</td></tr>", escape(k));
        }
        self.0 += "</table>\n";
    }

    fn p(&mut self, class: &str, html: &str) {
        if class.is_empty() {
            let _ = writeln!(self.0, "<p>{html}</p>");
        } else {
            let _ = writeln!(self.0, "<p class=\"{class}\">{html}</p>");
        }
    }
}

fn opt(v: &Option<String>) -> String {
    v.as_deref().map(escape).unwrap_or_default()
}

fn delta_cell(d: Option<f64>) -> String {
    match d {
        None => "<td class=\"n\"></td>".into(),
        Some(d) => {
            let class = if d > 0.0 {
                "n pos"
            } else if d < 0.0 {
                "n neg"
            } else {
                "n"
            };
            format!("<td class=\"{class}\">{}</td>", format::delta(d))
        }
    }
}

/// Render the report as one HTML page.
pub fn render(f: &Facts) -> Result<String> {
    let id = &f.identity;
    let recipe = opt(&id.recipe);
    let mut pg = Page(String::new());
    let _ = write!(
        pg.0,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>crambench run report: {recipe}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>crambench run report: {recipe}</h1>\n"
    );

    pg.0 += "<h2>Summary</h2>\n";
    pg.key_values(&tables::headline(f));
    pg.0 += "<h2>Recipe</h2>\n";
    if f.recipe_panel.is_empty() {
        pg.p("note", "The statement records no resolved recipe.");
    } else {
        pg.0 += "<div class=\"panel\">\n";
        for g in &f.recipe_panel {
            let _ = writeln!(pg.0, "<section><h3>{}</h3>", escape(g.title));
            pg.key_values(&tables::group(g));
            pg.0 += "</section>\n";
        }
        pg.0 += "</div>\n";
    }
    pg.0 += "<h2>Data</h2>\n";
    if f.data.is_empty() {
        pg.p("note", "The statement records no data summary.");
    } else {
        pg.key_values(&tables::data(f));
    }

    pg.0 += "<h2>Pretraining</h2>\n";
    pg.key_values(&tables::pretraining(f));
    pg.p(
        "note",
        &format!("Metrics log: {}", escape(&f.metrics.summary())),
    );
    curves(&mut pg, f)?;
    let published = &crate::reference::table().pretraining_loss;
    if !published.is_empty() {
        pg.p(
            "note",
            "Published MLM-loss reference points (not comparable across recipes or budgets):",
        );
        pg.0 += "<ul>\n";
        for p in published {
            let _ = writeln!(
                pg.0,
                "<li>{}: {} ({})</li>",
                escape(&p.what),
                p.value,
                escape(&p.source)
            );
        }
        pg.0 += "</ul>\n";
    }

    glue(&mut pg, f)?;

    pg.0 += "<h2>Budget</h2>\n";
    pg.key_values(&tables::budget(f));
    let phases = tables::phases(f);
    if !phases.is_empty() {
        pg.0 += "<table>\n<tr><th>Phase, in pipeline order (wall time as recorded)</th>\
                 <th>Seconds</th></tr>\n";
        for (phase, secs) in &phases {
            let _ = writeln!(
                pg.0,
                "<tr><td>{}</td><td class=\"n\">{secs}</td></tr>",
                escape(phase)
            );
        }
        pg.0 += "</table>\n";
    }

    pg.0 += "<h2>Run</h2>\n";
    pg.key_values(&tables::run(f));
    pg.0 += "<h3>Subjects</h3>\n";
    if id.subjects.is_empty() {
        pg.p("note", "None recorded.");
    } else {
        pg.0 += "<table>\n<tr><th>Role</th><th>Name</th><th>Digest</th></tr>\n";
        for s in &id.subjects {
            let digests: Vec<String> = s
                .digests
                .iter()
                .map(|(a, h)| format!("{}:<code>{}</code>", escape(a), escape(h)))
                .collect();
            let _ = writeln!(
                pg.0,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                opt(&s.role),
                escape(&s.name),
                digests.join("<br>")
            );
        }
        pg.0 += "</table>\n";
    }
    pg.0 += "<h3>What is signed</h3>\n";
    pg.p("note", &escape(tables::INPUTS_NOTE));
    pg.0 += "<table>\n<tr><th>Input</th><th>Signed</th><th>How</th></tr>\n";
    for i in &f.inputs {
        let (class, word) = if i.signed {
            ("yes", "yes")
        } else {
            ("no", "no")
        };
        let _ = writeln!(
            pg.0,
            "<tr><td>{}</td><td class=\"{class}\">{word}</td><td>{}</td></tr>",
            escape(&i.what),
            escape(&i.how)
        );
    }
    pg.0 += "</table>\n";

    let r = &f.reference;
    pg.0 += "<h2>Reference row</h2>\n";
    let mut kv = vec![
        ("Id", Cell::Code(r.id.clone())),
        ("Model", Cell::Text(r.model.clone())),
        ("Source", Cell::Text(r.source.clone())),
        ("Caveats", Cell::Text(r.caveats.clone())),
    ];
    if !f.glue.protocol_differences.is_empty() {
        kv.push((
            "Protocol differs",
            Cell::Text(f.glue.protocol_differences.join("; ")),
        ));
    }
    pg.key_values(&kv);
    pg.0 += "</body>\n</html>\n";
    Ok(pg.0)
}

/// The pretraining curves: against budget time (the paper's figures) when the log records
/// `budget_fraction`, else against the optimizer step and elapsed seconds as logged.
fn curves(pg: &mut Page, f: &Facts) -> Result<()> {
    let m = &f.metrics;
    if m.missing.is_some() {
        return Ok(());
    }
    let figure = |pg: &mut Page, svg: Option<String>, caption: String, what: &str| match svg {
        Some(svg) => {
            let _ = writeln!(
                pg.0,
                "<figure>\n{svg}\n<figcaption>{}</figcaption>\n</figure>",
                escape(&caption)
            );
        }
        None => pg.p(
            "note",
            &format!("No {} values in the metrics log.", escape(what)),
        ),
    };
    if let Some(b) = &m.by_budget {
        let (x_label, k) = crate::report::panels::budget_axis(f.budget.allowed_device_hours);
        let scale = |c: &crate::report::metrics_log::Curve| -> crate::report::metrics_log::Curve {
            c.iter().map(|&(x, y)| (x * k, y)).collect()
        };
        let svg = charts::loss_svg(
            x_label,
            &scale(&b.loss),
            &scale(&b.loss_smooth),
            b.window,
            m.initial_loss,
        )?;
        let initial = m
            .initial_loss
            .map(|l| format!("; dashed: the initial loss ({})", format::fixed(l, 4)))
            .unwrap_or_default();
        figure(
            pg,
            svg,
            format!(
                "MLM loss against {x_label}: every logged value (faint), smoothed over {} \
                 records{initial}",
                b.window
            ),
            "loss",
        );
        for (title, y, points) in [
            ("Learning rate", "learning rate", &b.lr),
            ("Throughput", "tokens per second", &b.throughput),
        ] {
            let pts = scale(points);
            let svg = charts::line_svg(&Chart {
                title,
                x_label,
                y_label: y,
                points: &pts,
            })?;
            figure(pg, svg, format!("{y} against {x_label}"), y);
        }
        return Ok(());
    }
    for chart in [
        Chart {
            title: "MLM loss",
            x_label: "optimizer step",
            y_label: "loss",
            points: &m.loss,
        },
        Chart {
            title: "Learning rate",
            x_label: "optimizer step",
            y_label: "learning rate",
            points: &m.lr,
        },
        Chart {
            title: "Throughput",
            x_label: "elapsed seconds",
            y_label: "tokens per second",
            points: &m.throughput,
        },
    ] {
        let caption = format!(
            "{} against {} (this log records no budget fraction)",
            chart.y_label, chart.x_label
        );
        figure(pg, charts::line_svg(&chart)?, caption, chart.y_label);
    }
    Ok(())
}

fn glue(pg: &mut Page, f: &Facts) -> Result<()> {
    let g = &f.glue;
    let r = &f.reference;
    pg.0 += "<h2>GLUE</h2>\n";
    if !g.present {
        pg.p("note", "This run has no GLUE results.");
        return Ok(());
    }
    pg.p(
        "",
        &format!(
            "Protocol: {}; fine-tuning epochs: {}. Values are percent points (median over \
             trials, then every trial); the reference is <code>{}</code>, Δ = median − \
             reference. An empty reference cell means the reference publishes no number for it.",
            opt(&g.protocol),
            g.epochs.map(|e| e.to_string()).unwrap_or_default(),
            escape(&r.id)
        ),
    );
    if g.rows.is_empty() {
        pg.p("note", "No evaluation sets recorded.");
    } else {
        let control = match &g.control {
            Some(c) => format!("Control ({})", escape(&c.name)),
            None => "Control".into(),
        };
        let _ = writeln!(
            pg.0,
            "<table>\n<tr><th>Set</th><th>Metric</th><th>Median</th><th>95% interval</th>\
             <th>Trials</th><th>{control}</th><th>Above control</th><th>Reference</th>\
             <th>Δ</th></tr>"
        );
        for gr in &g.rows {
            let _ = writeln!(
                pg.0,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td>{}</tr>",
                escape(&gr.set),
                escape(&gr.metric),
                gr.median.map(format::pct).unwrap_or_default(),
                tables::interval(gr),
                tables::trials(gr),
                gr.control.map(format::pct).unwrap_or_default(),
                tables::above(gr),
                gr.reference.map(format::pct).unwrap_or_default(),
                delta_cell(gr.delta)
            );
        }
        pg.0 += "</table>\n";
        let marks: Vec<charts::TaskMarks> = g
            .rows
            .iter()
            .filter_map(|gr| {
                Some(charts::TaskMarks {
                    label: format!("{} ({})", gr.set, gr.metric),
                    trials: gr.trials.iter().flatten().copied().collect(),
                    median: gr.median?,
                    ci95: gr.ci95.map(|i| (i.lo, i.hi)),
                    control: gr.control,
                    reference: gr.reference,
                })
            })
            .collect();
        let control = g.control.as_ref().map_or("", |c| c.name.as_str());
        if let Some(svg) = charts::tasks_svg(&marks, control)? {
            let _ = writeln!(
                pg.0,
                "<figure>\n{svg}\n<figcaption>Each set: every trial (dots), the median (bar) \
                 and its 95% interval (band), the control (cross) and the reference \
                 (triangle), where recorded.</figcaption>\n</figure>"
            );
        }
    }
    if !g.not_evaluated.is_empty() {
        let sets: Vec<String> = g.not_evaluated.iter().map(|s| escape(s)).collect();
        pg.p(
            "note",
            &format!(
                "Reference sets this run did not evaluate: {}.",
                sets.join(", ")
            ),
        );
    }
    pg.0 += "<h3>Aggregate</h3>\n";
    match &g.aggregate {
        None => pg.p("note", "No aggregate recorded."),
        Some(a) => {
            pg.p(
                "",
                &format!(
                    "Rule <code>{}</code>: <strong>{}</strong>",
                    escape(&a.rule),
                    format::pct(a.value)
                ),
            );
            pg.p(
                "note",
                &markdown::aggregate_note(&a.reference, &a.rule, &r.id, escape),
            );
            if let Some(i) = g.aggregate_ci95 {
                pg.p(
                    "",
                    &format!(
                        "95% interval of the aggregate: [{}, {}] (bootstrap over dev examples).",
                        format::pct(i.lo),
                        format::pct(i.hi)
                    ),
                );
            }
            for n in tables::control_notes(f) {
                pg.p("", &escape(&n));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("plain Δ"), "plain Δ");
    }
}
