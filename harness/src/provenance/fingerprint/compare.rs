//! Comparing two fingerprints, and loading one from a file.
//!
//! Comparison works on JSON values, not on [`Fingerprint`](super::Fingerprint), so that it
//! takes fingerprints of any schema version, from files or from inside manifests, and reports
//! fields it does not know about too.
//!
//! Rules:
//! * Objects are compared key by key; a missing key and `null` are the same (so adding a field
//!   to the schema is not a change).
//! * Arrays of objects (GPUs, interfaces) are compared element by element (`gpus[0]`, …).
//! * Arrays of scalars (CPU features) are compared whole, as one value.
//! * Each change is put in a group by its top-level key: `hardware` and `hardware_class` go to
//!   *hardware*; `environment` and `host` to *environment*; everything else (`software`,
//!   `schema`, `notes`, unknown keys) to *software*.
//! * Fields that change from one moment to the next ([`VOLATILE`]) are still reported, marked
//!   volatile, and do not count as a difference by themselves ([`FingerprintDiff::is_same`]).
use crate::error::Error;
use base64::Engine;
use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt::Write;
use std::path::Path;

/// Paths that change from moment to moment on the same machine (`[*]` matches any index):
/// current clocks, and the PCIe link, which trains down when the GPU idles.
pub const VOLATILE: &[&str] = &[
    "hardware.gpus[*].sm_clock_mhz",
    "hardware.gpus[*].mem_clock_mhz",
    "hardware.gpus[*].pcie_link_gen",
    "hardware.gpus[*].pcie_link_width",
];

/// Largest fingerprint, statement or envelope file [`load`] reads.
const MAX_FILE_BYTES: u64 = 64 << 20;

/// One differing field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// Dotted JSON path, e.g. `hardware.gpus[0].power_limit_w`.
    pub path: String,
    /// Value in the first fingerprint; `None` when absent or null.
    pub a: Option<Value>,
    /// Value in the second fingerprint; `None` when absent or null.
    pub b: Option<Value>,
    /// The field is expected to vary between two readings on the same machine ([`VOLATILE`]).
    pub volatile: bool,
}

/// The differences between two fingerprints, grouped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FingerprintDiff {
    /// `hardware_class` differs (or is missing on one side): the runs are not comparable.
    pub hardware_class_changed: bool,
    /// The two hardware classes, `[a, b]` in JSON.
    pub hardware_class: (Option<String>, Option<String>),
    /// Changes under `hardware` (and `hardware_class`).
    pub hardware: Vec<Change>,
    /// Changes under `software`, and any top-level key not named elsewhere.
    pub software: Vec<Change>,
    /// Changes under `environment` and `host`.
    pub environment: Vec<Change>,
}

impl FingerprintDiff {
    /// No change at all, volatile ones included.
    pub fn is_empty(&self) -> bool {
        self.hardware.is_empty() && self.software.is_empty() && self.environment.is_empty()
    }

    /// No change other than volatile ones.
    pub fn is_same(&self) -> bool {
        self.groups()
            .iter()
            .all(|(_, changes)| changes.iter().all(|c| c.volatile))
    }

    fn groups(&self) -> [(&'static str, &Vec<Change>); 3] {
        [
            ("Hardware", &self.hardware),
            ("Software", &self.software),
            ("Environment", &self.environment),
        ]
    }

    /// Human-readable report: the hardware class verdict, then one aligned section per group.
    /// Volatile changes are marked `~`.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let (a, b) = &self.hardware_class;
        let show = |c: &Option<String>| c.clone().unwrap_or_else(|| "(absent)".into());
        if self.hardware_class_changed {
            let _ = writeln!(out, "hardware class: CHANGED {} -> {}", show(a), show(b));
        } else {
            let _ = writeln!(out, "hardware class: same ({})", show(a));
        }
        let width = self
            .groups()
            .iter()
            .flat_map(|(_, cs)| cs.iter().map(|c| c.path.chars().count()))
            .max()
            .unwrap_or(0);
        for (title, changes) in self.groups() {
            let n = changes.len();
            let _ = match n {
                0 => writeln!(out, "\n{title}: no changes"),
                1 => writeln!(out, "\n{title}: 1 change"),
                _ => writeln!(out, "\n{title}: {n} changes"),
            };
            for c in changes {
                let mark = if c.volatile { "~" } else { " " };
                let _ = writeln!(
                    out,
                    " {mark} {:<width$}  {}",
                    c.path,
                    render_change(c.a.as_ref(), c.b.as_ref())
                );
            }
        }
        if self
            .groups()
            .iter()
            .any(|(_, cs)| cs.iter().any(|c| c.volatile))
        {
            let _ = writeln!(
                out,
                "\n~ volatile: varies between readings on the same machine"
            );
        }
        out
    }
}

fn render(v: Option<&Value>) -> String {
    match v {
        None => "(absent)".into(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// `a -> b`, or for two arrays of scalars the elements removed and added.
fn render_change(a: Option<&Value>, b: Option<&Value>) -> String {
    if let (Some(Value::Array(xs)), Some(Value::Array(ys))) = (a, b) {
        let removed: Vec<String> = xs
            .iter()
            .filter(|x| !ys.contains(x))
            .map(|x| render(Some(x)))
            .collect();
        let added: Vec<String> = ys
            .iter()
            .filter(|y| !xs.contains(y))
            .map(|y| render(Some(y)))
            .collect();
        let mut parts = Vec::new();
        if !removed.is_empty() {
            parts.push(format!("removed: {}", removed.join(" ")));
        }
        if !added.is_empty() {
            parts.push(format!("added: {}", added.join(" ")));
        }
        if parts.is_empty() {
            parts.push("reordered".into());
        }
        return parts.join("; ");
    }
    format!("{} -> {}", render(a), render(b))
}

/// Compare two fingerprints (JSON). See the module docs for the rules.
pub fn diff(a: &Value, b: &Value) -> FingerprintDiff {
    let class = |v: &Value| {
        v.get("hardware_class")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let (class_a, class_b) = (class(a), class(b));
    let mut changes = Vec::new();
    walk("", non_null(Some(a)), non_null(Some(b)), &mut changes);
    let mut out = FingerprintDiff {
        hardware_class_changed: class_a.is_none() || class_a != class_b,
        hardware_class: (class_a, class_b),
        hardware: Vec::new(),
        software: Vec::new(),
        environment: Vec::new(),
    };
    for change in changes {
        let top = change.path.split(['.', '[']).next().unwrap_or_default();
        match top {
            "hardware" | "hardware_class" => out.hardware.push(change),
            "environment" | "host" => out.environment.push(change),
            _ => out.software.push(change),
        }
    }
    out
}

fn non_null(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null())
}

fn all_scalars(xs: &[Value]) -> bool {
    xs.iter().all(|x| !x.is_object() && !x.is_array())
}

fn walk(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Change>) {
    match (a, b) {
        (None, None) => {}
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(&p, non_null(x.get(k)), non_null(y.get(k)), out);
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) if !(all_scalars(x) && all_scalars(y)) => {
            for i in 0..x.len().max(y.len()) {
                walk(
                    &format!("{path}[{i}]"),
                    non_null(x.get(i)),
                    non_null(y.get(i)),
                    out,
                );
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(Change {
            volatile: is_volatile(path),
            path: path.to_string(),
            a: a.cloned(),
            b: b.cloned(),
        }),
    }
}

/// Whether `path` matches a [`VOLATILE`] pattern (`[<digits>]` matches `[*]`).
fn is_volatile(path: &str) -> bool {
    let mut normal = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                normal.push_str("[*");
            }
            ']' => {
                in_index = false;
                normal.push(']');
            }
            _ if in_index => {}
            _ => normal.push(c),
        }
    }
    VOLATILE.contains(&normal.as_str())
}

/// Read a fingerprint from `path`: a fingerprint JSON file, an in-toto Statement whose
/// `predicate.fingerprint` holds one, or a DSSE envelope (`payload`, `payloadType`) around such
/// a Statement. The signature is not checked here. Errors are bad input naming the file.
pub fn load(path: &Path) -> anyhow::Result<Value> {
    let bytes = crate::io::read_limited(path, MAX_FILE_BYTES)?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::input(path.display(), format!("not valid JSON: {e}")))?;
    extract(value).map_err(|msg| Error::input(path.display(), msg).into())
}

/// The fingerprint inside a fingerprint, Statement or envelope (see [`load`]).
fn extract(value: Value) -> Result<Value, String> {
    let Value::Object(obj) = value else {
        return Err(
            "expected a JSON object (fingerprint, in-toto Statement or DSSE envelope)".into(),
        );
    };
    if obj.contains_key("payload") && obj.contains_key("payloadType") {
        let payload = obj
            .get("payload")
            .and_then(Value::as_str)
            .ok_or("DSSE envelope: `payload` is not a string")?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(payload)
            .map_err(|e| format!("DSSE envelope: `payload` is not valid base64: {e}"))?;
        let statement: Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("DSSE envelope: payload is not valid JSON: {e}"))?;
        let Value::Object(statement) = statement else {
            return Err("DSSE envelope: payload is not a JSON object".into());
        };
        return from_statement(&statement, "DSSE envelope payload");
    }
    if obj.contains_key("_type") {
        return from_statement(&obj, "in-toto Statement");
    }
    check_fingerprint(Value::Object(obj), "file")
}

fn from_statement(statement: &Map<String, Value>, what: &str) -> Result<Value, String> {
    let predicate = statement
        .get("predicate")
        .ok_or(format!("{what}: no `predicate`"))?;
    let fingerprint = predicate
        .get("fingerprint")
        .ok_or(format!("{what}: no `predicate.fingerprint`"))?;
    check_fingerprint(
        fingerprint.clone(),
        &format!("{what}: `predicate.fingerprint`"),
    )
}

fn check_fingerprint(v: Value, what: &str) -> Result<Value, String> {
    match v.get("hardware_class") {
        Some(Value::String(_)) => Ok(v),
        Some(_) => Err(format!("{what}: `hardware_class` is not a string")),
        None => Err(format!(
            "{what}: no `hardware_class`; not a crambench fingerprint, in-toto Statement or DSSE envelope"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "schema": "crambench.fingerprint/v1",
            "hardware_class": "gpu-nvidia-h200x1-140g-700w-0a1b2c3d",
            "hardware": {
                "cpu": {"model": "X", "features": ["avx", "avx2"]},
                "gpus": [{"name": "NVIDIA H200", "power_limit_w": 700.0, "sm_clock_mhz": 1980}]
            },
            "software": {"device": "cuda", "git": null},
            "environment": {"variables": {"OMP_NUM_THREADS": "4"}},
            "notes": []
        })
    }

    #[test]
    fn identical_is_empty() {
        let d = diff(&sample(), &sample());
        assert!(d.is_empty() && d.is_same() && !d.hardware_class_changed);
        assert!(d.to_table().contains("hardware class: same"));
    }

    #[test]
    fn changes_are_grouped_and_marked() {
        let a = sample();
        let mut b = sample();
        b["hardware"]["gpus"][0]["power_limit_w"] = json!(600.0);
        b["hardware"]["gpus"][0]["sm_clock_mhz"] = json!(345);
        b["hardware"]["cpu"]["features"] = json!(["avx", "avx512f"]);
        b["environment"]["variables"]["OMP_NUM_THREADS"] = json!("8");
        b["environment"]["variables"]["CUBLAS_WORKSPACE_CONFIG"] = json!(":4096:8");
        b["software"]["device"] = json!("cpu");
        b["software"]["new_field"] = Value::Null; // absent vs null: not a change
        b["hardware_class"] = json!("gpu-nvidia-h200x1-140g-600w-99999999");
        b["extra"] = json!(1);
        let d = diff(&a, &b);
        assert!(d.hardware_class_changed);
        let paths = |cs: &[Change]| cs.iter().map(|c| c.path.clone()).collect::<Vec<_>>();
        assert_eq!(
            paths(&d.hardware),
            [
                "hardware.cpu.features",
                "hardware.gpus[0].power_limit_w",
                "hardware.gpus[0].sm_clock_mhz",
                "hardware_class"
            ]
        );
        assert!(d.hardware[2].volatile && !d.hardware[1].volatile);
        assert_eq!(paths(&d.software), ["extra", "software.device"]);
        assert_eq!(
            paths(&d.environment),
            [
                "environment.variables.CUBLAS_WORKSPACE_CONFIG",
                "environment.variables.OMP_NUM_THREADS"
            ]
        );
        assert_eq!(d.environment[0].a, None);
        let table = d.to_table();
        assert!(table.contains("CHANGED"), "{table}");
        assert!(table.contains("removed: avx2; added: avx512f"), "{table}");
        assert!(table.contains("(absent) -> :4096:8"), "{table}");
        assert!(
            table.contains(" ~ hardware.gpus[0].sm_clock_mhz"),
            "{table}"
        );
    }

    #[test]
    fn volatile_only_is_same() {
        let mut b = sample();
        b["hardware"]["gpus"][0]["sm_clock_mhz"] = json!(1);
        let d = diff(&sample(), &b);
        assert!(!d.is_empty() && d.is_same());
        assert!(is_volatile("hardware.gpus[12].pcie_link_gen"));
        assert!(!is_volatile("hardware.gpus[0].pcie_link_gen_max"));
    }

    #[test]
    fn load_all_three_forms() {
        let dir = tempfile::tempdir().unwrap();
        let fp = sample();
        let statement = json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [],
            "predicateType": "https://crambench.dev/run/v1",
            "predicate": {"fingerprint": fp}
        });
        let payload = base64::engine::general_purpose::STANDARD
            .encode(serde_json::to_vec(&statement).unwrap());
        let envelope = json!({
            "payloadType": "application/vnd.in-toto+json",
            "payload": payload,
            "signatures": []
        });
        for (name, v) in [
            ("fp.json", &fp),
            ("st.json", &statement),
            ("env.json", &envelope),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, serde_json::to_vec(v).unwrap()).unwrap();
            assert_eq!(load(&p).unwrap(), fp, "{name}");
        }

        let bad = [
            ("a.json", "[1]", "expected a JSON object"),
            ("b.json", "{\"x\":1}", "no `hardware_class`"),
            (
                "c.json",
                "{\"_type\":\"x\",\"predicate\":{}}",
                "no `predicate.fingerprint`",
            ),
            (
                "d.json",
                "{\"payload\":\"!!\",\"payloadType\":\"x\"}",
                "not valid base64",
            ),
            ("e.json", "{not json", "not valid JSON"),
        ];
        for (name, text, msg) in bad {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            let e = load(&p).unwrap_err();
            assert_eq!(crate::error::exit_code_of(&e), crate::ExitCode::BadInput);
            let s = format!("{e:#}");
            assert!(s.contains(msg) && s.contains(name), "{s}");
        }
        let e = load(&dir.path().join("missing.json")).unwrap_err();
        assert_eq!(crate::error::exit_code_of(&e), crate::ExitCode::BadInput);
    }
}
