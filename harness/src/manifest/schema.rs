//! The manifest's JSON Schema (published in `manifests/schema/`) and validation against it.
//!
//! The schema file is compiled into the binary, so `crambench manifest validate` works without
//! the repository. Beyond the schema, validation checks what JSON Schema cannot express: that
//! every derived seed follows from the master seed.
use super::dsse::{Envelope, PAYLOAD_TYPE_IN_TOTO};
use crate::error::Error;
use crate::provenance::seeds::Seeds;
use anyhow::Result;
use serde_json::Value;

/// The schema text, as published at `manifests/schema/crambench-manifest-v0.1.schema.json`:
/// manifests written before the typed predicate (still read and verified).
pub const SCHEMA_V0_1: &str =
    include_str!("../../../manifests/schema/crambench-manifest-v0.1.schema.json");

/// The schema of the predicate written now (`manifests/schema/crambench-manifest-v0.2.schema.json`),
/// checked against the types of [`super::predicate`] by its tests.
pub const SCHEMA_V0_2: &str =
    include_str!("../../../manifests/schema/crambench-manifest-v0.2.schema.json");

/// The schema a statement is checked against: the one its `predicateType` names (v0.1 for
/// v0.1 statements, else the current one, which refuses any other predicate type).
pub fn schema_for(statement: &Value) -> &'static str {
    if statement["predicateType"] == super::statement::PREDICATE_TYPE_V0_1 {
        SCHEMA_V0_1
    } else {
        SCHEMA_V0_2
    }
}

/// One problem found in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// JSON Pointer into the statement, e.g. `/predicate/seeds/master`.
    pub at: String,
    pub message: String,
}

/// Validate a statement; an empty list means valid.
pub fn validate_statement(statement: &Value) -> Vec<Problem> {
    let schema: Value =
        serde_json::from_str(schema_for(statement)).expect("embedded schema is JSON");
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("embedded schema compiles");
    let mut problems: Vec<Problem> = validator
        .iter_errors(statement)
        .map(|e| Problem {
            at: e.instance_path().to_string(),
            message: e.to_string(),
        })
        .collect();
    if problems.is_empty() {
        if let Ok(seeds) = serde_json::from_value::<Seeds>(statement["predicate"]["seeds"].clone())
        {
            for (label, &seed) in &seeds.derived {
                let want = crate::provenance::seeds::derive(seeds.master, label);
                if want != seed {
                    problems.push(Problem {
                        at: format!("/predicate/seeds/derived/{label}"),
                        message: format!(
                            "seed {seed} does not follow from master seed {} (expected {want})",
                            seeds.master
                        ),
                    });
                }
            }
        }
    }
    problems
}

/// A manifest file as read for validation: either a bare statement or a DSSE envelope around one.
pub struct Loaded {
    pub statement: Value,
    /// True when the file was an envelope (its signatures are not checked here; see `verify`).
    pub enveloped: bool,
}

/// Read a statement or an envelope holding one from `bytes` (named `source` in errors).
pub fn load(bytes: &[u8], source: &str) -> Result<Loaded> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::input(source, format!("not JSON: {e}")))?;
    if v.get("payloadType").is_some() && v.get("payload").is_some() {
        let env = Envelope::parse(bytes, source)?;
        if env.payload_type != PAYLOAD_TYPE_IN_TOTO {
            return Err(Error::input(
                source,
                format!(
                    "payloadType is {:?}, expected {PAYLOAD_TYPE_IN_TOTO:?}",
                    env.payload_type
                ),
            )
            .into());
        }
        let decoded = env.decode(source)?;
        let statement: Value = serde_json::from_slice(&decoded.payload)
            .map_err(|e| Error::input(format!("{source}: payload"), format!("not JSON: {e}")))?;
        return Ok(Loaded {
            statement,
            enveloped: true,
        });
    }
    Ok(Loaded {
        statement: v,
        enveloped: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_schema_matches_published_file() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/manifests/schema/crambench-manifest-v0.1.schema.json"
        );
        assert_eq!(std::fs::read_to_string(path).unwrap(), SCHEMA_V0_1);
    }

    #[test]
    fn schema_rejects_wrong_type_and_unsafe_seed() {
        let bad =
            serde_json::json!({"_type": "x", "subject": [], "predicateType": "y", "predicate": {}});
        let p = validate_statement(&bad);
        assert!(p.iter().any(|p| p.at == "/_type"), "{p:?}");
        assert!(p.iter().any(|p| p.at == "/subject"), "{p:?}");
    }
}
