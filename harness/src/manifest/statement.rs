//! The in-toto Statement v1 that a crambench manifest is, with crambench's predicate.
//!
//! ```text
//! {"_type": "https://in-toto.io/Statement/v1",
//!  "subject": [{"name": …, "digest": {"sha256": …} | {"dirHash": …}}],
//!  "predicateType": "https://crambench.dev/manifest/v0.2",
//!  "predicate": {crambench_version, created, kind, fingerprint, seeds, materials,
//!                recipe?, data?, budget?, pretraining?, glue?, pipeline?}}
//! ```
//!
//! The sections marked `?` are filled by the stages that produce them (recipe, data pipeline,
//! trainer, GLUE, `crambench run`) as the types of [`super::predicate`]; their JSON shape is
//! published in `manifests/schema/`, which [`super::schema`] embeds. A v0.1 statement (made
//! before the sections were typed) reads into the same types.
use super::jcs;
use super::predicate::{
    BudgetSection, GlueSection, PipelineSection, PretrainingSection, RecipeSection,
};
use crate::provenance::hash::PathDigest;
use crate::provenance::seeds::Seeds;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The predicate type written now.
pub const PREDICATE_TYPE: &str = "https://crambench.dev/manifest/v0.2";
/// The predicate type of manifests written before the typed sections (still read and verified).
pub const PREDICATE_TYPE_V0_1: &str = "https://crambench.dev/manifest/v0.1";

/// An in-toto ResourceDescriptor (the fields crambench uses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceDescriptor {
    pub name: String,
    pub digest: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "mediaType")]
    pub media_type: Option<String>,
    /// Free-form annotations (crambench puts the subject's `role` here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Value>,
}

impl ResourceDescriptor {
    /// `annotations.role`.
    pub fn role(&self) -> Option<&str> {
        self.annotations.as_ref()?.get("role")?.as_str()
    }
}

/// An input or derived file, pinned by content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Material {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub digest: BTreeMap<String, String>,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
}

impl Material {
    pub fn from_digest(name: &str, role: Option<&str>, d: &PathDigest) -> Self {
        Material {
            name: name.to_string(),
            role: role.map(str::to_string),
            digest: d.digest_set(),
            size: d.size(),
            files: match d {
                PathDigest::Dir(dir) => Some(dir.files),
                PathDigest::File(_) => None,
            },
        }
    }
}

/// The crambench predicate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Predicate {
    pub crambench_version: String,
    /// RFC 3339 UTC time the manifest was made.
    pub created: String,
    /// `attestation` (files pinned on a machine) or `run` (a full crambench run).
    pub kind: String,
    pub fingerprint: Value,
    pub seeds: Seeds,
    pub materials: Vec<Material>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<RecipeSection>,
    /// The dataset's manifest section (sources, tokenizer, shards, root digest, processing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretraining: Option<PretrainingSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub glue: Option<GlueSection>,
    /// How a `crambench run` got here: invocations, stage timings, overridden checks (v0.1:
    /// `run`).
    #[serde(default, alias = "run", skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<PipelineSection>,
}

/// An in-toto Statement v1 carrying a crambench predicate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub type_: String,
    pub subject: Vec<ResourceDescriptor>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: Predicate,
}

/// The current time as RFC 3339 UTC with second precision.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    now.format(&fmt)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

impl Statement {
    /// A statement of `kind` with the given fingerprint and seeds, no subjects yet.
    pub fn new(kind: &str, fingerprint: Value, seeds: Seeds) -> Self {
        Statement {
            type_: STATEMENT_TYPE.into(),
            subject: Vec::new(),
            predicate_type: PREDICATE_TYPE.into(),
            predicate: Predicate {
                crambench_version: crate::VERSION.into(),
                created: now_rfc3339(),
                kind: kind.into(),
                fingerprint,
                seeds,
                materials: Vec::new(),
                recipe: None,
                data: None,
                budget: None,
                pretraining: None,
                glue: None,
                pipeline: None,
            },
        }
    }

    pub fn add_subject(&mut self, name: &str, digest: &PathDigest) {
        self.subject.push(ResourceDescriptor {
            name: name.to_string(),
            digest: digest.digest_set(),
            media_type: None,
            annotations: None,
        });
    }

    /// RFC 8785 canonical bytes: what goes into a DSSE payload.
    pub fn to_canonical(&self) -> Result<Vec<u8>> {
        jcs::to_vec(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_serialises_with_in_toto_field_names() {
        let mut st = Statement::new("attestation", serde_json::json!({}), Seeds::new(1).unwrap());
        st.add_subject(
            "a.txt",
            &PathDigest::File(crate::provenance::hash::FileDigest {
                path: "a.txt".into(),
                size: 3,
                sha256: crate::provenance::hash::sha256_hex(b"abc"),
            }),
        );
        let v: Value = serde_json::from_slice(&st.to_canonical().unwrap()).unwrap();
        assert_eq!(v["_type"], STATEMENT_TYPE);
        assert_eq!(v["predicateType"], PREDICATE_TYPE);
        assert_eq!(
            v["subject"][0]["digest"]["sha256"].as_str().unwrap().len(),
            64
        );
        assert!(
            v["predicate"].get("glue").is_none(),
            "absent sections are omitted, not null"
        );
        let back: Statement = serde_json::from_value(v).unwrap();
        assert_eq!(back, st);
    }
}
