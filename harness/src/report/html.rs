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
figure svg{max-width:100%;height:auto;border:1px solid #eee}";

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

    pg.0 += "<h2>Budget</h2>\n";
    pg.key_values(&tables::budget(f));
    let phases = tables::phases(f);
    if !phases.is_empty() {
        pg.0 += "<table>\n<tr><th>Phase (wall time as recorded)</th><th>Seconds</th></tr>\n";
        for (phase, secs) in &phases {
            let _ = writeln!(
                pg.0,
                "<tr><td>{}</td><td class=\"n\">{secs}</td></tr>",
                escape(phase)
            );
        }
        pg.0 += "</table>\n";
    }

    pg.0 += "<h2>Pretraining</h2>\n";
    pg.key_values(&tables::pretraining(f));
    pg.p(
        "note",
        &format!("Metrics log: {}", escape(&f.metrics.summary())),
    );
    let m = &f.metrics;
    if m.missing.is_none() {
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
            match charts::line_svg(&chart)? {
                Some(svg) => {
                    let _ = writeln!(
                        pg.0,
                        "<figure>\n{svg}\n<figcaption>{} against {}</figcaption>\n</figure>",
                        escape(chart.y_label),
                        escape(chart.x_label)
                    );
                }
                None => pg.p(
                    "note",
                    &format!("No {} values in the metrics log.", escape(chart.y_label)),
                ),
            }
        }
    }
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

    glue(&mut pg, f);

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

fn glue(pg: &mut Page, f: &Facts) {
    let g = &f.glue;
    let r = &f.reference;
    pg.0 += "<h2>GLUE</h2>\n";
    if !g.present {
        pg.p("note", "This run has no GLUE results.");
        return;
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
