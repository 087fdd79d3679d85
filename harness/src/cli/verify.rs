//! `crambench verify PATH`: a run directory or bundle (its signature, then every artifact
//! through [`crambench::audit`], and the checkpoint's model.sig), a DSSE envelope file (the
//! signature only), or an OpenSSF model signature.
use super::args::{GlueDataArg, JsonArg, TrustArgs};
use super::{json_text, print as out};
use anyhow::Result;
use clap::Args;
use crambench::error::Error;
use crambench::manifest::{dsse, keys, oms};
use crambench::ExitCode;
use std::path::{Path, PathBuf};

#[derive(Args)]
#[command(
    after_help = "Without --trust, your own public key is trusted (keys/default.pub in \
    the crambench config directory)."
)]
pub struct VerifyArgs {
    /// A run directory or a `crambench submit` bundle (the signature, then every artifact; a
    /// run's model.sig too), a DSSE envelope file (the signature only), an OpenSSF model
    /// signature file (model.sig) or a checkpoint directory holding one.
    path: PathBuf,
    /// The checkpoint directory an OpenSSF model signature is for (default: the directory
    /// the signature file is in).
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    // Default: your own public key (the crambench config directory's keys/default.pub).
    #[command(flatten)]
    trust: TrustArgs,
    /// The older name of --trust.
    #[arg(long = "key", value_name = "PUB", hide = true)]
    keys: Vec<PathBuf>,
    /// Number of distinct trusted keys that must have signed.
    #[arg(long, default_value_t = 1)]
    threshold: usize,
    // Without --glue-data, re-scoring uses the predictions files' own gold column (demo sets
    // use the embedded dev sets).
    #[command(flatten)]
    glue: GlueDataArg,
    #[command(flatten)]
    json: JsonArg,
}

pub fn run(args: VerifyArgs) -> Result<ExitCode> {
    let trusted = trusted_keys(&args)?;
    let source = args.path.display().to_string();
    let is_dir = args.path.is_dir();
    // An OpenSSF model signature: a bundle file, or a checkpoint directory holding model.sig
    // (and no run record).
    if is_dir
        && args.path.join(oms::SIGNATURE_FILE).is_file()
        && !args.path.join(crambench::record::ENVELOPE_FILE).exists()
        && !args.path.join(crambench::record::STATEMENT_FILE).exists()
    {
        let model = args.model.clone().unwrap_or_else(|| args.path.clone());
        return verify_oms(
            &model,
            &args.path.join(oms::SIGNATURE_FILE),
            &trusted,
            args.json.enabled,
        );
    }
    if !is_dir {
        let head = crambench::io::read_limited(&args.path, dsse::MAX_ENVELOPE_BYTES)?;
        if oms::looks_like_bundle(&head) {
            let model = match &args.model {
                Some(m) => m.clone(),
                None => match args.path.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                },
            };
            return verify_oms(&model, &args.path, &trusted, args.json.enabled);
        }
    }
    // A run directory or bundle: its envelope; a file: the envelope itself.
    let (env, record) = if is_dir {
        let record = crambench::record::RunRecord::open(&args.path)?;
        let env = record.envelope.clone().ok_or_else(|| {
            Error::Check(format!(
                "{source}: not signed ({} missing; `crambench sign` adds a signature)",
                crambench::record::ENVELOPE_FILE
            ))
        })?;
        (env, Some(record))
    } else {
        (dsse::Envelope::read(&args.path)?, None)
    };
    let env_source = match &record {
        Some(r) => r.source.clone(),
        None => source.clone(),
    };
    let decoded = env.decode(&env_source)?;
    let v = dsse::verify(&decoded, &trusted, args.threshold);
    // Subjects are read from the verified bytes only; artifacts are checked only against a
    // verified statement.
    let statement: Option<serde_json::Value> = if v.ok {
        serde_json::from_slice(&decoded.payload).ok()
    } else {
        None
    };
    let audit = match (&record, v.ok) {
        (Some(r), true) => Some(crambench::audit::audit(
            r,
            &crambench::audit::Options {
                materials: true,
                gold: crambench::audit::GoldPolicy::Trusted,
                glue_data: args.glue.glue_data.clone(),
                digests_only: false,
            },
            &mut crambench::audit::GoldCache::default(),
        )),
        _ => None,
    };
    let artifacts_ok = audit.as_ref().is_none_or(|a| a.ok());
    let scope = match (&record, &audit) {
        (None, _) => {
            "signature only; artifacts not checked (pass the run directory or bundle to check them)"
        }
        (Some(_), None) => "artifacts not checked: the signature is not valid",
        (Some(_), Some(_)) => "signature and artifacts",
    };
    // A run's OpenSSF model signature of its checkpoint, checked against the manifest.
    let model_sig = match (&record, &statement) {
        (Some(_), Some(st)) => crambench::audit::model_signature(&args.path, st, &trusted)?,
        _ => None,
    };
    let ok = v.ok && artifacts_ok && model_sig.as_ref().is_none_or(|m| m.ok);
    let c = Checked {
        env_source,
        v,
        statement,
        audit,
        model_sig,
        scope,
        ok,
    };
    out(&if args.json.enabled {
        json_text(&c.to_json()?)?
    } else {
        c.to_table()
    })?;
    Ok(if ok {
        ExitCode::Ok
    } else {
        ExitCode::CheckFailed
    })
}

/// `crambench verify` of an OpenSSF model signature.
fn verify_oms(
    model: &Path,
    signature: &Path,
    trusted: &[keys::PublicKey],
    json: bool,
) -> Result<ExitCode> {
    let v = oms::verify_model(model, signature, trusted)?;
    if json {
        out(&json_text(&v)?)?;
    } else {
        out(&v.to_table())?;
    }
    Ok(if v.ok {
        ExitCode::Ok
    } else {
        ExitCode::CheckFailed
    })
}

/// What `verify` found for a run or an envelope.
struct Checked {
    env_source: String,
    v: dsse::Verification,
    statement: Option<serde_json::Value>,
    audit: Option<crambench::audit::Audit>,
    model_sig: Option<oms::ModelVerification>,
    scope: &'static str,
    ok: bool,
}

impl Checked {
    fn to_json(&self) -> Result<serde_json::Value> {
        let mut j = serde_json::to_value(&self.v)?;
        j["envelope"] = self.env_source.clone().into();
        j["subject"] = self
            .statement
            .as_ref()
            .and_then(|s| s.get("subject"))
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        j["checked"] = self.scope.into();
        j["artifacts"] = match &self.audit {
            Some(a) => serde_json::to_value(a)?,
            None => serde_json::Value::Null,
        };
        j["model_signature"] = match &self.model_sig {
            Some(m) => serde_json::to_value(m)?,
            None => serde_json::Value::Null,
        };
        j["ok"] = self.ok.into();
        Ok(j)
    }

    fn to_table(&self) -> String {
        let mut t = format!(
            "envelope     {}\npayloadType  {}\npayload      sha256:{}\n",
            self.env_source, self.v.payload_type, self.v.payload_sha256
        );
        if self.v.signatures.is_empty() {
            t += "signatures   none\n";
        }
        for s in &self.v.signatures {
            let who = match (&s.verified_keyid, &s.verified_key_source) {
                (Some(k), Some(src)) => format!(
                    "by {k} ({src}){}",
                    if s.duplicate {
                        ", duplicate: counted once"
                    } else {
                        ""
                    }
                ),
                _ => format!("keyid hint {}", s.keyid_hint.as_deref().unwrap_or("(none)")),
            };
            t += &format!("signature {}  {:<9} {who}\n", s.index, s.status);
        }
        t += &format!(
            "signed       {} ({} distinct trusted key(s) signed; threshold {})\n",
            if self.v.ok { "VALID" } else { "NOT VALID" },
            self.v.valid_keys.len(),
            self.v.threshold
        );
        match &self.audit {
            Some(a) => t += &a.to_table(),
            None => {
                if !self.v.ok {
                    t += "subject      (not shown: the payload is not verified)\n";
                }
                for s in self
                    .statement
                    .as_ref()
                    .and_then(|s| s["subject"].as_array())
                    .into_iter()
                    .flatten()
                {
                    let digest = s["digest"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| format!("{k}:{}", v.as_str().unwrap_or("?")))
                                .collect::<Vec<_>>()
                                .join(" ")
                        })
                        .unwrap_or_default();
                    t += &format!(
                        "subject      {}  {digest}\n",
                        s["name"].as_str().unwrap_or("?")
                    );
                }
            }
        }
        if let Some(m) = &self.model_sig {
            for line in m.to_table().lines() {
                t += &format!("model.sig    {line}\n");
            }
        }
        let failed = self
            .audit
            .as_ref()
            .map(|a| a.failures().count())
            .unwrap_or(0);
        t += &format!(
            "result       {} ({}{})\n",
            if self.ok { "VALID" } else { "NOT VALID" },
            self.scope,
            if failed > 0 {
                format!("; {failed} artifact(s) do not match")
            } else {
                String::new()
            }
        );
        t
    }
}

/// `--trust` (and its older name), else the user's own public key.
fn trusted_keys(args: &VerifyArgs) -> Result<Vec<keys::PublicKey>> {
    let given = args.trust.paths(&args.keys);
    let key_paths = if given.is_empty() {
        match keys::default_public_key() {
            Some(p) => {
                eprintln!(
                    "verify: trusting your own public key {} (pass --trust PUB to trust others)",
                    p.display()
                );
                vec![p]
            }
            None => {
                return Err(Error::input(
                    "--trust",
                    "no trusted public key given, and you have no default key yet \
                     (crambench run creates one); pass --trust PUB (a .pub file or a directory)",
                )
                .into())
            }
        }
    } else {
        given
    };
    keys::load_trusted(&key_paths, "--trust")
}
