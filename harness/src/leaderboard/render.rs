//! The leaderboard site: `leaderboard.md`, `index.html` (static, self-contained, every entry
//! string escaped) and `leaderboard.json`, one ranked table per track (aggregate descending;
//! rules are never mixed in one table) and the rejected entries with all their reasons.
use super::verify::{BuildOptions, EntryReport};
use crate::audit::GoldPolicy;
use crate::error::Error;
pub use crate::escape::html as html_escape;
use crate::escape::markdown as md;
use anyhow::Result;
use serde::Serialize;
use serde_json::json;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Format id of `leaderboard.json`.
pub const SITE_FORMAT: &str = "crambench-leaderboard/v1";

/// One track's ranked table.
#[derive(Debug, Clone, Serialize)]
pub struct TrackTable {
    pub track: super::Track,
    /// Evaluation sets shown, in the rule's order.
    pub sets: Vec<String>,
    /// Accepted entries, best first.
    pub entries: Vec<EntryReport>,
}

/// Everything the site shows.
#[derive(Debug, Clone, Serialize)]
pub struct Site {
    pub format: &'static str,
    pub generated: String,
    pub crambench_version: &'static str,
    pub tracks_source: String,
    /// Trusted key ids.
    pub trusted_keys: Vec<String>,
    pub gold: GoldPolicy,
    pub tracks: Vec<TrackTable>,
    pub rejected: Vec<EntryReport>,
}

impl Site {
    /// Group accepted entries by track and rank them (aggregate descending, then name).
    pub fn rank(reports: Vec<EntryReport>, opts: &BuildOptions) -> Site {
        let (mut accepted, rejected): (Vec<_>, Vec<_>) =
            reports.into_iter().partition(|r| r.accepted);
        accepted.sort_by(|a, b| {
            let va = a
                .aggregate
                .as_ref()
                .map(|x| x.1)
                .unwrap_or(f64::NEG_INFINITY);
            let vb = b
                .aggregate
                .as_ref()
                .map(|x| x.1)
                .unwrap_or(f64::NEG_INFINITY);
            vb.total_cmp(&va).then_with(|| a.name.cmp(&b.name))
        });
        let tracks = opts
            .tracks
            .tracks
            .iter()
            .map(|t| {
                let mut sets: Vec<String> = Vec::new();
                for term in t.rule().terms() {
                    for (s, _) in term {
                        if !sets.iter().any(|x| x == s) {
                            sets.push(s.to_string());
                        }
                    }
                }
                let mut entries: Vec<EntryReport> = accepted
                    .iter()
                    .filter(|e| e.track.as_deref() == Some(t.name.as_str()))
                    .cloned()
                    .collect();
                for (i, e) in entries.iter_mut().enumerate() {
                    e.rank = Some(i + 1);
                }
                TrackTable {
                    track: t.clone(),
                    sets,
                    entries,
                }
            })
            .collect();
        Site {
            format: SITE_FORMAT,
            generated: crate::manifest::statement::now_rfc3339(),
            crambench_version: crate::VERSION,
            tracks_source: opts.tracks.source.clone(),
            trusted_keys: opts.keys.iter().map(|k| k.keyid.clone()).collect(),
            gold: opts.gold,
            tracks,
            rejected,
        }
    }

    /// Number of accepted entries.
    pub fn accepted(&self) -> usize {
        self.tracks.iter().map(|t| t.entries.len()).sum()
    }
}

/// The per-set cell: the median of the set's headline metric(s) in percent, `/`-joined when a
/// set has several (MRPC F1/accuracy).
fn set_cell(e: &EntryReport, set: &str) -> String {
    match e.medians.get(set) {
        None => "–".into(),
        Some(m) => m
            .values()
            .map(|v| format!("{:.2}", 100.0 * v))
            .collect::<Vec<_>>()
            .join("/"),
    }
}

/// How predictions were re-scored, for the page header.
fn gold_sentence(g: GoldPolicy) -> &'static str {
    match g {
        GoldPolicy::Trusted => {
            "Predictions were re-scored against trusted gold labels (the embedded demo dev sets; \
             GLUE dev files where given, else the submitted gold column, as noted per entry)."
        }
        GoldPolicy::Column => {
            "Predictions were re-scored against the gold column each entry submitted."
        }
    }
}

fn short(keyid: &str) -> String {
    keyid.chars().take(16).collect()
}

/// A row's cells (unescaped).
fn row(e: &EntryReport, sets: &[String]) -> Vec<String> {
    let mut c = vec![
        e.rank.map(|r| r.to_string()).unwrap_or_default(),
        // Who, by signing key; the directory name is anybody's choice.
        e.submitter
            .clone()
            .unwrap_or_else(|| "(no trusted signer)".into()),
        e.recipe.clone().unwrap_or_default(),
        e.aggregate
            .as_ref()
            .map(|(r, v)| format!("{v:.2} ({r})"))
            .unwrap_or_default(),
    ];
    c.extend(sets.iter().map(|s| set_cell(e, s)));
    c.push(
        e.used_device_hours
            .map(|u| format!("{u:.3}"))
            .unwrap_or_default(),
    );
    c.push(e.hardware_class.clone().unwrap_or_default());
    c.push(
        e.signers
            .iter()
            .map(|k| short(k))
            .collect::<Vec<_>>()
            .join(" "),
    );
    c.push(e.created.clone().unwrap_or_default());
    c.push(e.entry.clone());
    c
}

fn header(sets: &[String]) -> Vec<String> {
    let mut h: Vec<String> = ["rank", "submitter", "recipe", "aggregate (rule)"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    h.extend(sets.iter().cloned());
    h.extend(
        [
            "device-hours used",
            "hardware class",
            "signer keyid",
            "created",
            "entry",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    h
}

/// The Markdown page.
pub fn markdown(site: &Site) -> String {
    let mut s = String::from("# crambench leaderboard\n\n");
    let _ = writeln!(
        s,
        "Generated {} by crambench {} from {} entries ({} accepted, {} rejected). Tracks: {}. \
         Every entry's signature, track rules and predictions were checked; metrics are \
         medians over trials in percent. {}\n",
        md(&site.generated),
        site.crambench_version,
        site.accepted() + site.rejected.len(),
        site.accepted(),
        site.rejected.len(),
        md(&site.tracks_source),
        gold_sentence(site.gold)
    );
    for t in &site.tracks {
        let tr = &t.track;
        let _ = writeln!(s, "## {} (`{}`)\n", md(&tr.title), md(&tr.name));
        let _ = writeln!(
            s,
            "Aggregate rule `{}`; budget ≤ {} device-hours on {} device(s); fine-tuning ≤ {} \
             epochs; pretraining from scratch: {}.\n",
            tr.aggregate_rule,
            tr.max_device_hours,
            tr.devices,
            tr.max_finetune_epochs,
            tr.from_scratch
        );
        if t.entries.is_empty() {
            s += "No accepted entries.\n\n";
            continue;
        }
        let h = header(&t.sets);
        let _ = writeln!(
            s,
            "| {} |",
            h.iter().map(|c| md(c)).collect::<Vec<_>>().join(" | ")
        );
        let _ = writeln!(s, "|{}", "---|".repeat(h.len()));
        for e in &t.entries {
            let cells: Vec<String> = row(e, &t.sets).iter().map(|c| md(c)).collect();
            let _ = writeln!(s, "| {} |", cells.join(" | "));
        }
        let notes: Vec<String> = t
            .entries
            .iter()
            .flat_map(|e| {
                e.notes
                    .iter()
                    .map(move |n| format!("- {}: {}", md(&e.entry), md(n)))
            })
            .collect();
        if !notes.is_empty() {
            s += "\nNotes:\n\n";
            s += &notes.join("\n");
            s.push('\n');
        }
        s.push('\n');
    }
    s += "## Rejected entries\n\n";
    if site.rejected.is_empty() {
        s += "None.\n";
    }
    for e in &site.rejected {
        let _ = writeln!(
            s,
            "- **{}** ({}; recipe {}; track {}):",
            md(e.submitter.as_deref().unwrap_or("(no trusted signer)")),
            md(&e.entry),
            md(e.recipe.as_deref().unwrap_or("?")),
            md(e.track.as_deref().unwrap_or("?"))
        );
        for r in &e.reasons {
            let _ = writeln!(s, "  - {}", md(r));
        }
    }
    s
}

/// The HTML page (no scripts, no external resources).
pub fn html(site: &Site) -> String {
    let mut s = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>crambench leaderboard</title>\n<style>\n\
         body{font-family:system-ui,sans-serif;margin:2em;max-width:80em;color:#222}\n\
         table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}\n\
         th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}\n\
         .rejected li{margin:.3em 0}code{background:#f6f6f6;padding:0 .2em}.meta{color:#555}\n\
         </style></head><body>\n<h1>crambench leaderboard</h1>\n",
    );
    let _ = writeln!(
        s,
        "<p class=\"meta\">Generated {} by crambench {} from {} entries ({} accepted, {} rejected). \
         Every entry's signature, track rules and predictions were checked; metrics are medians \
         over trials in percent. {}</p>",
        html_escape(&site.generated),
        html_escape(site.crambench_version),
        site.accepted() + site.rejected.len(),
        site.accepted(),
        site.rejected.len(),
        html_escape(gold_sentence(site.gold))
    );
    for t in &site.tracks {
        let tr = &t.track;
        let _ = writeln!(
            s,
            "<h2>{} (<code>{}</code>)</h2>\n<p class=\"meta\">Aggregate rule <code>{}</code>; \
             budget ≤ {} device-hours on {} device(s); fine-tuning ≤ {} epochs; pretraining \
             from scratch: {}.</p>",
            html_escape(&tr.title),
            html_escape(&tr.name),
            html_escape(&tr.aggregate_rule),
            tr.max_device_hours,
            tr.devices,
            tr.max_finetune_epochs,
            tr.from_scratch
        );
        if t.entries.is_empty() {
            s += "<p>No accepted entries.</p>\n";
            continue;
        }
        s += "<table>\n<thead><tr>";
        for h in header(&t.sets) {
            let _ = write!(s, "<th>{}</th>", html_escape(&h));
        }
        s += "</tr></thead>\n<tbody>\n";
        let numeric = |i: usize| i == 0 || (3..4 + t.sets.len() + 1).contains(&i);
        for e in &t.entries {
            s += "<tr>";
            for (i, c) in row(e, &t.sets).iter().enumerate() {
                let title = if i == 1 {
                    format!(" title=\"{}\"", html_escape(&e.entry))
                } else {
                    String::new()
                };
                let cls = if numeric(i) { " class=\"num\"" } else { "" };
                let _ = write!(s, "<td{cls}{title}>{}</td>", html_escape(c));
            }
            s += "</tr>\n";
        }
        s += "</tbody></table>\n";
        let notes: Vec<String> = t
            .entries
            .iter()
            .flat_map(|e| {
                e.notes
                    .iter()
                    .map(move |n| format!("<li>{}: {}</li>", html_escape(&e.entry), html_escape(n)))
            })
            .collect();
        if !notes.is_empty() {
            let _ = writeln!(s, "<p>Notes:</p><ul>{}</ul>", notes.join(""));
        }
    }
    s += "<h2>Rejected entries</h2>\n";
    if site.rejected.is_empty() {
        s += "<p>None.</p>\n";
    } else {
        s += "<ul class=\"rejected\">\n";
        for e in &site.rejected {
            let _ = write!(
                s,
                "<li><strong>{}</strong> (<code>{}</code>; recipe {}; track {})<ul>",
                html_escape(e.submitter.as_deref().unwrap_or("(no trusted signer)")),
                html_escape(&e.entry),
                html_escape(e.recipe.as_deref().unwrap_or("?")),
                html_escape(e.track.as_deref().unwrap_or("?"))
            );
            for r in &e.reasons {
                let _ = write!(s, "<li>{}</li>", html_escape(r));
            }
            s += "</ul></li>\n";
        }
        s += "</ul>\n";
    }
    s += "</body></html>\n";
    s
}

/// The JSON document.
pub fn json_doc(site: &Site) -> serde_json::Value {
    json!(site)
}

/// Write `leaderboard.md`, `index.html` and `leaderboard.json` into `out` (created), each
/// atomically. Nothing else in `out`, and nothing outside it, is touched. Returns the paths.
pub fn write_site(site: &Site, out: &Path) -> Result<Vec<PathBuf>> {
    if out.exists() && !out.is_dir() {
        return Err(Error::input(out.display(), "exists and is not a directory").into());
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut j = serde_json::to_vec_pretty(&json_doc(site))?;
    j.push(b'\n');
    let files = [
        ("leaderboard.md", markdown(site).into_bytes()),
        ("index.html", html(site).into_bytes()),
        ("leaderboard.json", j),
    ];
    // Published together: a failure leaves the previous site whole, never half of a new one.
    let paths: Vec<PathBuf> = files.iter().map(|(name, _)| out.join(name)).collect();
    let group: Vec<(&Path, &[u8], Option<u32>)> = paths
        .iter()
        .zip(&files)
        .map(|(p, (_, bytes))| (p.as_path(), bytes.as_slice(), None))
        .collect();
    crate::io::write_all_atomic(&group)?;
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            html_escape("<script>\"a\"&'b'</script>"),
            "&lt;script&gt;&quot;a&quot;&amp;&#39;b&#39;&lt;/script&gt;"
        );
        assert_eq!(md("a|b\nc<d>"), "a\\|b c&lt;d&gt;");
    }
}
