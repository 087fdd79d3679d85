//! Leaderboard tracks: the rules an entry is checked against, read from a TOML file
//! (`manifests/tracks.toml`, embedded as the default; every key is documented there).
//!
//! An entry joins the track named explicitly (`--track`), otherwise the first track in file
//! order whose `aggregate_rule` equals the rule of the entry's signed aggregate
//! ([`Tracks::select`]).
use crate::error::Error;
use crate::glue::aggregate::Rule;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The tracks file shipped with crambench (`manifests/tracks.toml`), used when none is given.
pub const DEFAULT_TRACKS_TOML: &str = include_str!("../../../manifests/tracks.toml");
/// Name used in messages for the embedded file.
pub const DEFAULT_TRACKS_NAME: &str = "manifests/tracks.toml (embedded)";

/// Largest tracks file read.
const LIMIT: u64 = 1 << 20;

/// One track's rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Track {
    /// Track id (`[a-z0-9-]+`).
    pub name: String,
    /// Human-readable name (defaults to `name`).
    #[serde(default)]
    pub title: String,
    /// The aggregate rule entries must use (`cramming`, `bert-paper`, `glue-official`, `demo`).
    pub aggregate_rule: String,
    /// Most device-hours an entry may declare and use.
    pub max_device_hours: f64,
    /// Device-seconds by which `used_device_hours` may exceed the declared budget and the
    /// maximum (the last step, which crosses the budget).
    #[serde(default)]
    pub budget_overrun_seconds: f64,
    /// Exact device count.
    pub devices: u32,
    /// Allowed device-kind prefixes (`cuda` matches `cuda:0`); empty = any.
    #[serde(default)]
    pub device_kinds: Vec<String>,
    /// Most fine-tuning epochs per task.
    pub max_finetune_epochs: f64,
    /// Pretraining must start from random weights.
    #[serde(default = "yes")]
    pub from_scratch: bool,
    /// Allowed dataset root digests (empty: every entry is refused).
    pub data_root_digests: Vec<String>,
}

fn yes() -> bool {
    true
}

impl Track {
    /// The parsed aggregate rule (validated at load).
    pub fn rule(&self) -> Rule {
        Rule::parse(&self.aggregate_rule).expect("validated when the tracks file was loaded")
    }

    /// Whether `kind` (`cuda:0`, `cpu`) is allowed.
    pub fn device_kind_allowed(&self, kind: &str) -> bool {
        let base = kind.split(':').next().unwrap_or("");
        self.device_kinds.is_empty() || self.device_kinds.iter().any(|k| k == base || k == kind)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    track: Vec<Track>,
}

/// The tracks of a leaderboard, in file order.
#[derive(Debug, Clone, Serialize)]
pub struct Tracks {
    /// Where they were read from (for messages).
    pub source: String,
    pub tracks: Vec<Track>,
}

impl Tracks {
    /// Parse a tracks file's text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Tracks> {
        let table = text.parse::<toml::Table>().map_err(|e| {
            let msg = match e.span() {
                Some(span) => format!(
                    "line {}: {}",
                    text[..span.start].matches('\n').count() + 1,
                    e.message()
                ),
                None => e.message().to_string(),
            };
            Error::input(source, msg)
        })?;
        let file: File =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let at = e.path().to_string();
                Error::input(format!("{source}: {at}"), e.inner())
            })?;
        if file.track.is_empty() {
            return Err(Error::input(source, "no [[track]] tables").into());
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut tracks = Vec::new();
        for (i, mut t) in file.track.into_iter().enumerate() {
            let at = |key: &str| format!("{source}: track[{i}].{key}");
            if t.name.is_empty()
                || !t
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(
                    Error::input(at("name"), format!("{:?} is not [a-z0-9-]+", t.name)).into(),
                );
            }
            if !seen.insert(t.name.clone()) {
                return Err(
                    Error::input(at("name"), format!("track {:?} appears twice", t.name)).into(),
                );
            }
            Rule::parse(&t.aggregate_rule)
                .map_err(|e| Error::input(at("aggregate_rule"), format!("{e:#}")))?;
            let finite_pos = |v: f64| v.is_finite() && v > 0.0;
            if !finite_pos(t.max_device_hours) {
                return Err(
                    Error::input(at("max_device_hours"), "must be a positive number").into(),
                );
            }
            if !(t.budget_overrun_seconds.is_finite() && t.budget_overrun_seconds >= 0.0) {
                return Err(Error::input(
                    at("budget_overrun_seconds"),
                    "must be a number of seconds >= 0",
                )
                .into());
            }
            if t.devices == 0 {
                return Err(Error::input(at("devices"), "must be at least 1").into());
            }
            if !finite_pos(t.max_finetune_epochs) {
                return Err(
                    Error::input(at("max_finetune_epochs"), "must be a positive number").into(),
                );
            }
            for (j, d) in t.data_root_digests.iter().enumerate() {
                if !crate::provenance::hash::is_sha256_hex(d) {
                    return Err(Error::input(
                        at(&format!("data_root_digests[{j}]")),
                        format!("{d:?} is not 64 lowercase hex digits"),
                    )
                    .into());
                }
            }
            if t.title.is_empty() {
                t.title = t.name.clone();
            }
            tracks.push(t);
        }
        Ok(Tracks {
            source: source.to_string(),
            tracks,
        })
    }

    /// Read a tracks file.
    pub fn load(path: &Path) -> Result<Tracks> {
        let bytes = crate::io::read_limited(path, LIMIT)?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| Error::input(path.display(), format!("not UTF-8: {e}")))?;
        Tracks::parse(text, &path.display().to_string())
    }

    /// The tracks shipped with crambench.
    pub fn embedded() -> Tracks {
        Tracks::parse(DEFAULT_TRACKS_TOML, DEFAULT_TRACKS_NAME)
            .expect("the embedded tracks file is valid (tested)")
    }

    /// A track by name.
    pub fn get(&self, name: &str) -> Option<&Track> {
        self.tracks.iter().find(|t| t.name == name)
    }

    /// The track an entry joins: `explicit` when given, else the first whose rule is `rule`.
    pub fn select(&self, explicit: Option<&str>, rule: Option<&str>) -> Option<&Track> {
        match explicit {
            Some(n) => self.get(n),
            None => self
                .tracks
                .iter()
                .find(|t| Some(t.aggregate_rule.as_str()) == rule),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_file_parses() {
        let t = Tracks::embedded();
        let one = t.get("1gpu-1day").unwrap();
        assert_eq!(one.rule(), Rule::Cramming);
        assert_eq!(one.max_device_hours, 24.0);
        assert_eq!(one.devices, 1);
        assert_eq!(one.max_finetune_epochs, 5.0);
        assert!(one.from_scratch && one.data_root_digests.is_empty());
        assert!(one.device_kind_allowed("cuda:0") && !one.device_kind_allowed("cpu"));
        let demo = t.get("demo-cpu").unwrap();
        assert_eq!(demo.rule(), Rule::Demo);
        assert_eq!(demo.max_device_hours, 1.0);
        assert!(demo.device_kind_allowed("cpu"));
        assert_eq!(t.select(None, Some("demo")).unwrap().name, "demo-cpu");
        assert_eq!(t.select(None, Some("cramming")).unwrap().name, "1gpu-1day");
        assert!(t.select(None, Some("bert-paper")).is_none());
        assert!(t.select(Some("nope"), Some("demo")).is_none());
    }

    #[test]
    fn unknown_keys_name_file_and_key() {
        let text = DEFAULT_TRACKS_TOML.replace("devices = 1\n", "devices = 1\ngpus = 2\n");
        let e = Tracks::parse(&text, "t.toml").unwrap_err().to_string();
        assert!(e.contains("t.toml") && e.contains("gpus"), "{e}");
        let e = Tracks::parse("[[track]]\nname = \"x\"\nbogus = 1\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.toml") && e.contains("bogus"), "{e}");
        let e = Tracks::parse("colour = 1\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn bad_values_are_refused() {
        let text =
            DEFAULT_TRACKS_TOML.replace("aggregate_rule = \"demo\"", "aggregate_rule = \"mean\"");
        let e = Tracks::parse(&text, "t.toml").unwrap_err().to_string();
        assert!(e.contains("track[1].aggregate_rule"), "{e}");
        let text = DEFAULT_TRACKS_TOML.replacen(
            "data_root_digests = []",
            "data_root_digests = [\"abc\"]",
            1,
        );
        let e = Tracks::parse(&text, "t.toml").unwrap_err().to_string();
        assert!(e.contains("data_root_digests[0]"), "{e}");
    }
}
