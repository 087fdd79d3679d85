//! SLSA v1 provenance of a run (<https://slsa.dev/spec/v1.0/provenance>), derived from the run
//! manifest so that SLSA-aware policy engines can read what crambench's own predicate says:
//!
//! * `subject` — the run manifest's subjects (checkpoint, tokenizer, dataset, predictions);
//! * `buildDefinition.buildType` — [`BUILD_TYPE`]; `externalParameters` — the recipe (name,
//!   path, SHA-256) and the seeds (master seed, whether the OS drew it, every derived seed);
//!   `internalParameters` — the resolved recipe;
//! * `resolvedDependencies` — every material of the run (recipe files, corpus sources,
//!   tokenizer, GLUE data), every dataset shard, libtorch (by version) and the crambench source
//!   commit (`gitCommit`);
//! * `runDetails.builder` — crambench, with its version; `metadata` — start (the run's first
//!   invocation) and finish times.
use super::oms::STATEMENT_TYPE;
use anyhow::{Context, Result};
use serde_json::{json, Value};

/// Predicate type of SLSA provenance v1.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// The build type of a crambench run.
pub const BUILD_TYPE: &str = "https://crambench.dev/slsa/run/v0.1";
/// The builder id.
pub const BUILDER_ID: &str = "https://crambench.dev/builder/crambench";
/// File name of the signed provenance in a run directory.
pub const ENVELOPE_FILE: &str = "provenance.slsa.dsse.json";

fn descriptor(name: &str, digest: &Value, annotations: Value) -> Option<Value> {
    let digest = digest.as_object().filter(|d| !d.is_empty())?;
    Some(json!({"name": name, "digest": digest, "annotations": annotations}))
}

/// The SLSA provenance Statement of the run whose manifest (crambench statement, `kind` run)
/// is `run`, started at `started_on` and finished at `finished_on` (RFC 3339 UTC).
pub fn provenance(run: &Value, started_on: &str, finished_on: &str) -> Result<Value> {
    let p = &run["predicate"];
    let recipe = &p["recipe"];
    let external = json!({
        "recipe": {
            "name": recipe["name"],
            "path": recipe["path"],
            "sha256": recipe["sha256"],
        },
        "seeds": p["seeds"],
    });
    let mut deps: Vec<Value> = Vec::new();
    for m in p["materials"].as_array().into_iter().flatten() {
        let name = m["name"]
            .as_str()
            .context("manifest: a material has no name")?;
        if let Some(d) = descriptor(
            name,
            &m["digest"],
            json!({"role": m["role"].as_str().unwrap_or("material"), "size": m["size"]}),
        ) {
            deps.push(d);
        }
    }
    let ds_name = p["data"]["name"].as_str().unwrap_or("dataset");
    for s in p["data"]["shards"].as_array().into_iter().flatten() {
        let shard = s["name"]
            .as_str()
            .context("manifest: a shard has no name")?;
        if let Some(d) = descriptor(
            &format!("dataset/{ds_name}/{shard}"),
            &s["digest"],
            json!({"role": "dataset-shard"}),
        ) {
            deps.push(d);
        }
    }
    let sw = &p["fingerprint"]["software"];
    if let Some(v) = sw["libtorch"]["version"].as_str() {
        deps.push(json!({
            "name": "libtorch",
            "uri": format!("pkg:generic/libtorch@{v}"),
            "annotations": {"role": "runtime", "tch": sw["libtorch"]["tch_version"]},
        }));
    }
    if let Some(c) = sw["git"]["commit"].as_str() {
        deps.push(json!({
            "name": "crambench",
            "digest": {"gitCommit": c},
            "annotations": {
                "role": "source",
                "dirty": sw["git"]["dirty"],
                "diff_sha256": sw["git"]["diff_sha256"],
            },
        }));
    }
    let version = p["crambench_version"].as_str().unwrap_or("unknown");
    Ok(json!({
        "_type": STATEMENT_TYPE,
        "subject": run["subject"],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external,
                "internalParameters": {"resolved_recipe": recipe["resolved"]},
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID, "version": {"crambench": version}},
                "metadata": {"startedOn": started_on, "finishedOn": finished_on},
            },
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> Value {
        json!({
            "_type": STATEMENT_TYPE,
            "subject": [{"name": "pretrain/ck", "digest": {"dirHash": "ab"}}],
            "predicateType": "https://crambench.dev/manifest/v0.2",
            "predicate": {
                "crambench_version": "0.1.0",
                "recipe": {"name": "micro", "path": "r.toml", "sha256": "cd", "resolved": {"a": 1}},
                "seeds": {"master": 11, "derived": {"init": 5}},
                "materials": [{"name": "r.toml", "role": "recipe", "digest": {"sha256": "cd"}, "size": 3}],
                "data": {"name": "ds", "shards": [{"name": "shard-0.bin", "digest": {"sha256": "ef"}}]},
                "fingerprint": {"software": {
                    "libtorch": {"version": "2.11.0", "tch_version": "0.24.0"},
                    "git": {"commit": "0123", "dirty": false, "diff_sha256": null}
                }}
            }
        })
    }

    #[test]
    fn fields_come_from_the_run_manifest() {
        let s = provenance(&run(), "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z").unwrap();
        assert_eq!(s["predicateType"], PREDICATE_TYPE);
        assert_eq!(s["subject"], run()["subject"]);
        let b = &s["predicate"]["buildDefinition"];
        assert_eq!(b["externalParameters"]["seeds"]["master"], 11);
        assert_eq!(b["externalParameters"]["recipe"]["sha256"], "cd");
        let names: Vec<&str> = b["resolvedDependencies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["r.toml", "dataset/ds/shard-0.bin", "libtorch", "crambench"]
        );
        assert_eq!(b["resolvedDependencies"][3]["digest"]["gitCommit"], "0123");
        assert_eq!(
            s["predicate"]["runDetails"]["metadata"]["finishedOn"],
            "2026-01-01T01:00:00Z"
        );
    }
}
