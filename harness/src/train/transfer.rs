//! Checkpoints in and out of crambench (`crambench checkpoint import|export`).
//!
//! **Import** reads one of the published layouts of the paper's models:
//!
//! * a local upstream save (`model_config.json` + `model.safetensors` + tokenizer files, what
//!   `save_final_model` in upstream's `cramming/backend/torch_default.py` at 196c991 writes);
//! * an upstream hub checkpoint (`config.json` with `model_type: crammedBERT` and its `arch`
//!   block, as `JonasGeiping/crammed-bert` and `crammed-bert-legacy` are published);
//! * a Hugging Face `BertForMaskedLM` checkpoint (`config.json` with `model_type: bert`,
//!   `model.safetensors`, `tokenizer.json` or `vocab.txt`; the `bert-base-uncased` layout);
//!
//! translates the config ([`crate::model::upstream`]), renames the tensors, re-ties the decoder
//! (a stored decoder weight must equal the word embedding), and moves the source's special
//! tokens to crambench's fixed ids 0–6 ([`crate::data::tokenizer::special`]): the embedding rows
//! (and decoder bias) are permuted by the same permutation the tokenizer's vocabulary gets.
//! Upstream's special tokens sit at hash-random ids 0–6 per tokenizer build; BERT's
//! `[PAD] [UNK] [CLS] [SEP] [MASK]` become `<pad> <unk> <cls> <sep> <mask>` and its first two
//! `[unusedN]` tokens `<s>` and `</s>`. The result is a checkpoint directory `glue run` and
//! `export` accept: `model.safetensors` (crambench names), `arch.json`, `tokenizer.json`,
//! `import.json` (the source, the sha256 of every source file, the id remap, ignored tensors)
//! and `meta.json` ([`super::checkpoint::seal`]).
//!
//! **Export** writes a crambench checkpoint as `cramming` (upstream's hub layout, loadable by
//! `AutoModelForMaskedLM.from_pretrained` after importing upstream's `crammed_bert` module, plus
//! upstream's local `model_config.json`) or `hf-bert` (`BertForMaskedLM`), each with
//! `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json` naming the special
//! tokens. Settings the target cannot express are errors naming the `arch.json` field.
use crate::data::tokenizer::special;
use crate::error::Error;
use crate::model::upstream::{self, BufferKind, KeyMap, SourceKind};
use crate::model::{self, ArchConfig, QkvLayout};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Format tag of `import.json`.
pub const IMPORT_FORMAT: &str = "crambench-import/v1";
const JSON_LIMIT: u64 = 64 << 20;
const WEIGHTS_LIMIT: u64 = 16 << 30;

/// A source file of an import and its digest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// `import.json`: where an imported checkpoint came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRecord {
    pub format: String,
    /// What the user gave (`hf:OWNER/NAME@REV` resolved to its commit, or the directory).
    pub source: String,
    pub source_kind: SourceKind,
    /// The file the architecture came from (`model_config.json` or `config.json`).
    pub config_file: String,
    /// Every source file read, with its sha256.
    pub source_files: Vec<SourceFile>,
    /// Source token id -> crambench token id, for every id that moved.
    pub token_id_map: BTreeMap<u32, u32>,
    /// Source tensors that are not part of the MLM model (pooler, NSP head).
    pub ignored_tensors: Vec<String>,
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = crate::io::read_limited(path, JSON_LIMIT)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::input(path.display(), format!("not JSON: {e}")).into())
}

fn digest(dir: &Path, name: &str) -> Result<SourceFile> {
    let d = crate::provenance::hash::hash_file(&dir.join(name), &|_| {})?;
    Ok(SourceFile {
        path: name.to_string(),
        size: d.size,
        sha256: d.sha256,
    })
}

/// Read every tensor of a safetensors file with the `safetensors` crate, as f32 (floats) or
/// i64 (integers) CPU tensors.
pub fn read_safetensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    use safetensors::Dtype;
    let bytes = crate::io::read_limited(path, WEIGHTS_LIMIT)?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::input(path.display(), format!("not a safetensors file: {e:?}")))?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let kind = match view.dtype() {
            Dtype::F32 => Kind::Float,
            Dtype::F16 => Kind::Half,
            Dtype::BF16 => Kind::BFloat16,
            Dtype::F64 => Kind::Double,
            Dtype::I64 => Kind::Int64,
            Dtype::I32 => Kind::Int,
            Dtype::BOOL => Kind::Bool,
            other => {
                return Err(Error::input(
                    format!("{}: {name}", path.display()),
                    format!("dtype {other:?} is not a weight dtype crambench reads"),
                )
                .into())
            }
        };
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let t = Tensor::f_from_data_size(view.data(), &shape, kind)
            .map_err(|e| Error::input(format!("{}: {name}", path.display()), e))?;
        let t = if t.is_floating_point() {
            t.to_kind(Kind::Float)
        } else {
            t.to_kind(Kind::Int64)
        };
        out.push((name, t));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Write tensors with the `safetensors` crate, with `{"format": "pt"}` metadata (what
/// `transformers` requires of a `model.safetensors`).
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let mut bufs: Vec<(String, Vec<usize>, safetensors::Dtype, Vec<u8>)> = Vec::new();
    for (name, t) in tensors {
        let (dtype, t) = match t.kind() {
            Kind::Int64 => (safetensors::Dtype::I64, t.contiguous()),
            _ => (safetensors::Dtype::F32, t.to_kind(Kind::Float).contiguous()),
        };
        let n = t.numel();
        let elem = if dtype == safetensors::Dtype::I64 {
            8
        } else {
            4
        };
        let mut data = vec![0u8; n * elem];
        match dtype {
            safetensors::Dtype::I64 => {
                let v: Vec<i64> = Vec::<i64>::try_from(t.reshape([-1]))?;
                for (i, x) in v.iter().enumerate() {
                    data[i * 8..i * 8 + 8].copy_from_slice(&x.to_le_bytes());
                }
            }
            _ => {
                let v: Vec<f32> = Vec::<f32>::try_from(t.reshape([-1]))?;
                for (i, x) in v.iter().enumerate() {
                    data[i * 4..i * 4 + 4].copy_from_slice(&x.to_le_bytes());
                }
            }
        }
        let shape = t.size().iter().map(|&d| d as usize).collect();
        bufs.push((name.clone(), shape, dtype, data));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = bufs
        .iter()
        .map(|(n, s, d, b)| {
            safetensors::tensor::TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| anyhow::anyhow!("{n}: {e:?}"))
        })
        .collect::<Result<_>>()?;
    let meta = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    let bytes = safetensors::tensor::serialize(views, &meta)
        .map_err(|e| anyhow::anyhow!("serialising {}: {e:?}", path.display()))?;
    crate::io::write_atomic(path, &bytes, None)
}

// ----------------------------------------------------------------------------------------------
// Sources

/// Resolve `hf:OWNER/NAME[@REV]` in the local Hugging Face hub cache (the data sources' layer,
/// [`crate::data::hub`]): the snapshot directory and the source label with the commit.
pub fn resolve_hub_source(spec: &str) -> Result<(PathBuf, String)> {
    let rest = spec.strip_prefix("hf:").unwrap_or(spec);
    let (repo, rev) = match rest.split_once('@') {
        Some((r, v)) => (r, Some(v)),
        None => (rest, None),
    };
    let ok_part = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && !s.starts_with('.')
    };
    match repo.split_once('/') {
        Some((o, n)) if ok_part(o) && ok_part(n) => {}
        _ => {
            return Err(
                Error::input("SRC", format!("{spec:?}: expected hf:OWNER/NAME[@REV]")).into(),
            )
        }
    }
    let root = crate::data::hub::cache_root();
    let folder = root.join(format!("models--{}", repo.replace('/', "--")));
    let rev = rev.unwrap_or("main");
    let commit = if rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit()) {
        rev.to_string()
    } else {
        if !ok_part(rev) {
            return Err(Error::input("SRC", format!("{rev:?} is not a revision")).into());
        }
        let r = folder.join("refs").join(rev);
        let text = std::fs::read_to_string(&r).map_err(|_| {
            Error::input(
                format!("hub model {repo}@{rev}"),
                format!(
                    "not in the local Hugging Face cache ({} missing); run `huggingface-cli download {repo} --revision {rev}` with HF_HOME/HF_HUB_CACHE pointing at {}",
                    r.display(),
                    root.display()
                ),
            )
        })?;
        text.trim().to_string()
    };
    // Every file goes through the hub layer's resolver (the one line to change when it learns
    // to download).
    let resolve = |path: &str| {
        crate::data::hub::resolve(
            &root,
            &crate::data::config::HubFile {
                repo: repo.to_string(),
                repo_type: "model".into(),
                revision: commit.clone(),
                path: path.into(),
            },
        )
    };
    let config = resolve("config.json").or_else(|e| resolve("model_config.json").map_err(|_| e))?;
    resolve("model.safetensors")?;
    let dir = config
        .parent()
        .map(Path::to_path_buf)
        .context("hub snapshot has no directory")?;
    Ok((dir, format!("hf:{repo}@{commit}")))
}

/// The special tokens of a source, by crambench's id (index into [`special::TOKENS`]).
fn source_specials(
    dir: &Path,
    vocab: &BTreeMap<String, u32>,
    kind: SourceKind,
) -> Result<[(String, u32); 7]> {
    let map_path = dir.join("special_tokens_map.json");
    let tc_path = dir.join("tokenizer_config.json");
    let mut named: HashMap<String, String> = HashMap::new();
    for p in [&tc_path, &map_path] {
        if p.is_file() {
            let v = read_json(p)?;
            for role in ["pad", "bos", "eos", "unk", "cls", "sep", "mask"] {
                let key = format!("{role}_token");
                let s = match v.get(&key) {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(Value::Object(o)) => {
                        o.get("content").and_then(|c| c.as_str()).map(String::from)
                    }
                    _ => None,
                };
                if let Some(s) = s {
                    named.insert(role.to_string(), s);
                }
            }
        }
    }
    let defaults: [(&str, &str); 7] = match kind {
        SourceKind::HfBert => [
            ("pad", "[PAD]"),
            ("bos", ""),
            ("eos", ""),
            ("unk", "[UNK]"),
            ("cls", "[CLS]"),
            ("sep", "[SEP]"),
            ("mask", "[MASK]"),
        ],
        _ => [
            ("pad", "<pad>"),
            ("bos", "<s>"),
            ("eos", "</s>"),
            ("unk", "<unk>"),
            ("cls", "<cls>"),
            ("sep", "<sep>"),
            ("mask", "<mask>"),
        ],
    };
    let mut out: Vec<(String, u32)> = Vec::new();
    let mut taken: Vec<u32> = Vec::new();
    for (role, default) in defaults {
        let name = named
            .get(role)
            .cloned()
            .unwrap_or_else(|| default.to_string());
        let id = if name.is_empty() {
            None
        } else {
            vocab.get(&name).copied()
        };
        let id = match id {
            Some(id) => id,
            None if matches!(role, "bos" | "eos") => {
                // BERT has no <s>/</s>: give them the lowest [unusedN] rows (never trained on).
                let mut unused: Vec<(u32, &String)> = vocab
                    .iter()
                    .filter(|(t, _)| {
                        t.strip_prefix("[unused")
                            .and_then(|r| r.strip_suffix(']'))
                            .is_some_and(|n| n.parse::<u32>().is_ok())
                    })
                    .map(|(t, &i)| (i, t))
                    .collect();
                unused.sort();
                let pick = unused
                    .into_iter()
                    .find(|(i, _)| !taken.contains(i))
                    .ok_or_else(|| {
                        Error::input(
                            map_path.display(),
                            format!(
                                "{role}_token: the source has none and no [unusedN] token to hold crambench's {}",
                                special::TOKENS[out.len()]
                            ),
                        )
                    })?;
                pick.0
            }
            None => {
                return Err(Error::input(
                    map_path.display(),
                    format!("{role}_token {name:?} is not in the vocabulary"),
                )
                .into())
            }
        };
        let token = vocab
            .iter()
            .find(|(_, &i)| i == id)
            .map(|(t, _)| t.clone())
            .unwrap_or_default();
        if taken.contains(&id) {
            return Err(Error::input(
                map_path.display(),
                format!("{role}_token shares id {id} with another special token"),
            )
            .into());
        }
        taken.push(id);
        out.push((token, id));
    }
    Ok(out.try_into().expect("seven special tokens"))
}

/// `old_of_new[new] = old`: the permutation that puts the seven special tokens at ids 0–6
/// (displaced tokens take the vacated ids).
fn special_permutation(n: usize, specials: &[(String, u32); 7]) -> Vec<u32> {
    let mut arr: Vec<u32> = (0..n as u32).collect();
    let mut pos: Vec<usize> = (0..n).collect(); // pos[old] = current index
    for (new, (_, old)) in specials.iter().enumerate() {
        let cur = pos[*old as usize];
        let displaced = arr[new];
        arr.swap(new, cur);
        pos[*old as usize] = new;
        pos[displaced as usize] = cur;
    }
    arr
}

/// Rewrite a `tokenizer.json` for the permutation (`new_of_old`) and the special-token renames.
fn rewrite_tokenizer(
    mut v: Value,
    new_of_old: &[u32],
    rename: &HashMap<String, String>,
    what: &str,
) -> Result<Value> {
    let ren = |s: &str| rename.get(s).cloned().unwrap_or_else(|| s.to_string());
    let map_id = |id: u64| -> Result<u64> {
        new_of_old
            .get(id as usize)
            .map(|&n| n as u64)
            .ok_or_else(|| {
                Error::input(what, format!("token id {id} is outside the vocabulary")).into()
            })
    };
    let vocab = v
        .pointer_mut("/model/vocab")
        .and_then(|x| x.as_object_mut())
        .ok_or_else(|| Error::input(what, "model.vocab: not a WordPiece tokenizer.json"))?;
    let old = std::mem::take(vocab);
    for (tok, id) in old {
        let id = id
            .as_u64()
            .ok_or_else(|| Error::input(what, format!("model.vocab.{tok}: not an id")))?;
        vocab.insert(ren(&tok), map_id(id)?.into());
    }
    if let Some(unk) = v.pointer_mut("/model/unk_token") {
        if let Some(s) = unk.as_str() {
            *unk = ren(s).into();
        }
    }
    if let Some(added) = v.get_mut("added_tokens").and_then(|a| a.as_array_mut()) {
        for t in added.iter_mut() {
            if let Some(id) = t.get("id").and_then(|x| x.as_u64()) {
                t["id"] = map_id(id)?.into();
            }
            if let Some(c) = t.get("content").and_then(|x| x.as_str()).map(String::from) {
                t["content"] = ren(&c).into();
            }
        }
        added.sort_by_key(|t| t.get("id").and_then(|x| x.as_u64()).unwrap_or(0));
    }
    if let Some(pp) = v.get_mut("post_processor").filter(|p| !p.is_null()) {
        match pp.get("type").and_then(|t| t.as_str()) {
            Some("TemplateProcessing") => {
                for key in ["single", "pair"] {
                    if let Some(items) = pp.get_mut(key).and_then(|x| x.as_array_mut()) {
                        for it in items {
                            if let Some(id) = it.pointer_mut("/SpecialToken/id") {
                                if let Some(s) = id.as_str() {
                                    *id = ren(s).into();
                                }
                            }
                        }
                    }
                }
                if let Some(st) = pp.get_mut("special_tokens").and_then(|x| x.as_object_mut()) {
                    let old = std::mem::take(st);
                    for (k, mut e) in old {
                        if let Some(s) = e.get("id").and_then(|x| x.as_str()).map(String::from) {
                            e["id"] = ren(&s).into();
                        }
                        if let Some(ids) = e.get_mut("ids").and_then(|x| x.as_array_mut()) {
                            for i in ids {
                                *i = map_id(i.as_u64().unwrap_or(u64::MAX))?.into();
                            }
                        }
                        if let Some(ts) = e.get_mut("tokens").and_then(|x| x.as_array_mut()) {
                            for t in ts {
                                if let Some(s) = t.as_str().map(String::from) {
                                    *t = ren(&s).into();
                                }
                            }
                        }
                        st.insert(ren(&k), e);
                    }
                }
            }
            Some("BertProcessing") | Some("RobertaProcessing") => {
                for key in ["sep", "cls"] {
                    if let Some(pair) = pp.get_mut(key).and_then(|x| x.as_array_mut()) {
                        if pair.len() == 2 {
                            let s = pair[0].as_str().map(String::from).unwrap_or_default();
                            pair[0] = ren(&s).into();
                            pair[1] = map_id(pair[1].as_u64().unwrap_or(u64::MAX))?.into();
                        }
                    }
                }
            }
            other => {
                return Err(Error::input(
                    what,
                    format!("post_processor.type {other:?} cannot be rewritten"),
                )
                .into())
            }
        }
    }
    Ok(v)
}

/// A `tokenizer.json` for a BERT `vocab.txt` (BertNormalizer, BertPreTokenizer, WordPiece),
/// as `BertTokenizerFast` builds it.
fn tokenizer_from_vocab_txt(dir: &Path, unk: &str, lowercase: bool) -> Result<Value> {
    use tokenizers::models::wordpiece::WordPiece;
    use tokenizers::normalizers::bert::BertNormalizer;
    use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
    let path = dir.join("vocab.txt");
    let wp = WordPiece::from_file(&path.display().to_string())
        .unk_token(unk.to_string())
        .build()
        .map_err(|e| Error::input(path.display(), format!("not a WordPiece vocab: {e}")))?;
    let mut tok = tokenizers::Tokenizer::new(wp);
    tok.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
        .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    let s = tok
        .to_string(false)
        .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
    Ok(serde_json::from_str(&s)?)
}

/// Import `src` (a directory; `label` is what the record calls it) into a new checkpoint
/// directory `out`.
pub fn import(src: &Path, label: &str, out: &Path) -> Result<ImportRecord> {
    if out.exists() {
        return Err(
            Error::input(out.display(), "already exists; give a new --out directory").into(),
        );
    }
    let weights_path = src.join("model.safetensors");
    if !weights_path.is_file() {
        return Err(Error::input(
            weights_path.display(),
            "missing (only safetensors weights are imported; convert pytorch_model.bin first)",
        )
        .into());
    }
    let wp = weights_path.display().to_string();
    let source_tensors = read_safetensors(&weights_path)?;
    let (config_file, kind, cfg) = source_arch(src, &source_tensors)?;
    let mut source_files = vec![digest(src, config_file)?, digest(src, "model.safetensors")?];
    let Mapped {
        mut named,
        mut ignored,
    } = map_tensors(source_tensors, kind, &cfg, &wp)?;
    let (tok_json, tp) = source_tokenizer(src, kind, &mut source_files)?;
    let (tok_new, token_id_map) = move_specials(src, kind, &cfg, tok_json, &tp, &mut named, &wp)?;
    let vs = fill_model(&cfg, &named, &wp)?;

    // Everything into a temporary directory beside `out`, sealed, then renamed.
    crate::io::publish_dir(out, |tmp| {
        vs.save(tmp.join("model.safetensors"))
            .map_err(|e| anyhow::anyhow!("writing model.safetensors: {e}"))?;
        crate::io::write_atomic(
            &tmp.join("arch.json"),
            &serde_json::to_vec_pretty(&cfg)?,
            None,
        )?;
        crate::io::write_atomic(
            &tmp.join("tokenizer.json"),
            &serde_json::to_vec(&tok_new)?,
            None,
        )?;
        // The rewritten tokenizer must load as a crambench tokenizer.
        crate::data::tokenizer::load_tokenizer(&tmp.join("tokenizer.json"))
            .with_context(|| format!("the tokenizer rewritten from {tp}"))?;
        ignored.sort();
        let rec = ImportRecord {
            format: IMPORT_FORMAT.into(),
            source: label.into(),
            source_kind: kind,
            config_file: config_file.into(),
            source_files,
            token_id_map,
            ignored_tensors: ignored,
        };
        let mut j = serde_json::to_vec_pretty(&rec)?;
        j.push(b'\n');
        crate::io::write_atomic(&tmp.join("import.json"), &j, None)?;
        super::checkpoint::seal(tmp, 0)?;
        Ok(rec)
    })
}

/// The source's architecture: from upstream's local save (`model_config.json`) or a hub
/// layout's `config.json` (`crammedBERT` with its `arch` block, or HF `bert`); which file it
/// came from, the source's kind and crambench's architecture.
fn source_arch(
    src: &Path,
    source_tensors: &[(String, Tensor)],
) -> Result<(&'static str, SourceKind, ArchConfig)> {
    let local_cfg = src.join("model_config.json");
    let hub_cfg = src.join("config.json");
    if local_cfg.is_file() {
        let mut arch = read_json(&local_cfg)?;
        // Upstream's local save writes the yaml's `vocab_size: null` (the model got the size
        // from the tokenizer): take it from the embedding's rows.
        if arch
            .pointer("/embedding/vocab_size")
            .is_some_and(|v| v.is_null())
        {
            let rows = source_tensors
                .iter()
                .find(|(k, _)| {
                    k.ends_with("embedding.word_embedding.weight") || k == "decoder.weight"
                })
                .map(|(_, t)| t.size()[0]);
            if let (Some(rows), Some(slot)) = (rows, arch.pointer_mut("/embedding/vocab_size")) {
                *slot = rows.into();
            }
        }
        let (k, c) = upstream::arch_from_upstream(&arch)
            .map_err(|e| Error::input(local_cfg.display(), e.to_string()))?;
        return Ok(("model_config.json", k, c));
    }
    if !hub_cfg.is_file() {
        return Err(Error::input(
            src.display(),
            "no model_config.json (upstream local save) or config.json (hub layout)",
        )
        .into());
    }
    let c = read_json(&hub_cfg)?;
    match c.get("model_type").and_then(|m| m.as_str()) {
        Some("crammedBERT") => {
            let arch = c.get("arch").ok_or_else(|| {
                Error::input(
                    hub_cfg.display(),
                    "arch: missing (model_type crammedBERT needs its arch block)",
                )
            })?;
            let (k, a) = upstream::arch_from_upstream(arch)
                .map_err(|e| Error::input(hub_cfg.display(), e.to_string()))?;
            Ok(("config.json", k, a))
        }
        Some("bert") => {
            let a = upstream::arch_from_hf_bert(&c)
                .map_err(|e| Error::input(hub_cfg.display(), e.to_string()))?;
            Ok(("config.json", SourceKind::HfBert, a))
        }
        other => Err(Error::input(
            hub_cfg.display(),
            format!("model_type: {other:?} is neither crammedBERT nor bert"),
        )
        .into()),
    }
}

/// The source's tensors under crambench's names (`named`: crambench name → (source key,
/// tensor)), and the source keys crambench has no use for.
struct Mapped {
    named: HashMap<String, (String, Tensor)>,
    ignored: Vec<String>,
}

/// Map every source tensor to crambench's names: renamed, q/k/v fused, a tied decoder checked
/// against the word embedding, buffers checked against what crambench computes.
fn map_tensors(
    source_tensors: Vec<(String, Tensor)>,
    kind: SourceKind,
    cfg: &ArchConfig,
    wp: &str,
) -> Result<Mapped> {
    let mut named: HashMap<String, (String, Tensor)> = HashMap::new();
    let mut qkv: BTreeMap<String, [Option<Tensor>; 3]> = BTreeMap::new();
    let mut tied: Vec<(String, Tensor)> = Vec::new();
    let mut ignored = Vec::new();
    for (key, t) in source_tensors {
        let m = match kind {
            SourceKind::HfBert => upstream::hf_key(&key, cfg),
            _ => upstream::upstream_key(&key, cfg),
        };
        match m {
            KeyMap::To(name) => {
                named.insert(name, (key, t));
            }
            KeyMap::QkvPart(name, part) => {
                qkv.entry(name).or_default()[part] = Some(t);
            }
            KeyMap::TiedDecoder => tied.push((key, t)),
            KeyMap::Ignored => ignored.push(key),
            KeyMap::Buffer(b) => {
                if !buffer_is_computed(b, &t, cfg.head_dim()) {
                    return Err(Error::input(
                        format!("{wp}: {key}"),
                        format!("buffer value differs from what crambench computes ({b:?}); this model is not expressible"),
                    )
                    .into());
                }
            }
        }
    }
    for (name, parts) in qkv {
        match parts {
            [Some(q), Some(k), Some(v)] => {
                // HF keeps q, k, v apart: fused in crambench's `blocks` layout (all q, k, v).
                named.insert(name.clone(), (name, Tensor::cat(&[q, k, v], 0)));
            }
            _ => {
                return Err(Error::input(
                    wp,
                    format!("{name}: query, key and value are not all present"),
                )
                .into())
            }
        }
    }
    for (key, t) in tied {
        match named.get(WORD_EMBEDDING) {
            Some((_, e)) => {
                let same = e.size() == t.size() && (e - &t).abs().max().double_value(&[]) == 0.0;
                if !same {
                    return Err(Error::input(
                        format!("{wp}: {key}"),
                        "the decoder weight differs from the word embedding, but the config ties them",
                    )
                    .into());
                }
            }
            // Upstream's loader accepts a save holding only the decoder (torch_default.py).
            None => {
                named.insert(WORD_EMBEDDING.into(), (key, t));
            }
        }
    }
    Ok(Mapped { named, ignored })
}

/// crambench's word embedding variable.
const WORD_EMBEDDING: &str = "encoder.embedding.word_embedding.weight";

/// Whether a source buffer holds what crambench computes in its place (so dropping it loses
/// nothing): all ones, `arange`, or the attention's `1/sqrt(head_dim)`.
fn buffer_is_computed(b: BufferKind, t: &Tensor, head_dim: i64) -> bool {
    match b {
        BufferKind::One => t.to_kind(Kind::Double).eq(1.0).all().int64_value(&[]) == 1,
        BufferKind::Arange => {
            let flat = t.reshape([-1]).to_kind(Kind::Int64);
            flat.equal(&Tensor::arange(
                flat.numel() as i64,
                (Kind::Int64, Device::Cpu),
            ))
        }
        BufferKind::NormFactor => {
            let want = 1.0 / (head_dim as f64).sqrt();
            (t.to_kind(Kind::Double) - want)
                .abs()
                .max()
                .double_value(&[])
                < 1e-6
        }
    }
}

/// The source's tokenizer as `tokenizer.json` (built from `vocab.txt` for a BERT checkpoint
/// without one) and the path named in errors; the files read join `source_files`.
fn source_tokenizer(
    src: &Path,
    kind: SourceKind,
    source_files: &mut Vec<SourceFile>,
) -> Result<(Value, String)> {
    let tok_json_path = src.join("tokenizer.json");
    let tok_json = if tok_json_path.is_file() {
        source_files.push(digest(src, "tokenizer.json")?);
        read_json(&tok_json_path)?
    } else if kind == SourceKind::HfBert && src.join("vocab.txt").is_file() {
        source_files.push(digest(src, "vocab.txt")?);
        let lower = src.join("tokenizer_config.json");
        let lowercase = if lower.is_file() {
            read_json(&lower)?
                .get("do_lower_case")
                .and_then(|x| x.as_bool())
                .unwrap_or(true)
        } else {
            true
        };
        tokenizer_from_vocab_txt(src, "[UNK]", lowercase)?
    } else {
        return Err(Error::input(
            src.display(),
            "no tokenizer.json (or vocab.txt for a BERT checkpoint)",
        )
        .into());
    };
    for f in ["special_tokens_map.json", "tokenizer_config.json"] {
        if src.join(f).is_file() {
            source_files.push(digest(src, f)?);
        }
    }
    Ok((tok_json, tok_json_path.display().to_string()))
}

/// Move the source's special tokens to crambench's fixed ids: the tokenizer rewritten (ids
/// permuted, specials renamed) and the vocabulary-indexed rows of `named` (word embedding,
/// decoder bias, an untied decoder) permuted alike. Returns the new tokenizer and the ids that
/// moved (old → new).
#[allow(clippy::too_many_arguments)]
fn move_specials(
    src: &Path,
    kind: SourceKind,
    cfg: &ArchConfig,
    tok_json: Value,
    tp: &str,
    named: &mut HashMap<String, (String, Tensor)>,
    wp: &str,
) -> Result<(Value, BTreeMap<u32, u32>)> {
    let mut vocab: BTreeMap<String, u32> = BTreeMap::new();
    for (t, id) in tok_json
        .pointer("/model/vocab")
        .and_then(|v| v.as_object())
        .ok_or_else(|| Error::input(tp, "model.vocab: not a WordPiece tokenizer"))?
    {
        vocab.insert(t.clone(), id.as_u64().unwrap_or(u64::MAX) as u32);
    }
    for t in tok_json
        .get("added_tokens")
        .and_then(|a| a.as_array())
        .into_iter()
        .flatten()
    {
        if let (Some(c), Some(i)) = (
            t.get("content").and_then(|x| x.as_str()),
            t.get("id").and_then(|x| x.as_u64()),
        ) {
            vocab.entry(c.to_string()).or_insert(i as u32);
        }
    }
    let n_tok = vocab.values().max().map(|&m| m as usize + 1).unwrap_or(0);
    if n_tok > cfg.vocab_size as usize {
        return Err(Error::input(
            tp,
            format!(
                "{n_tok} token ids, but the model's vocab_size is {}",
                cfg.vocab_size
            ),
        )
        .into());
    }
    let specials = source_specials(src, &vocab, kind)?;
    let old_of_new = special_permutation(cfg.vocab_size as usize, &specials);
    let mut new_of_old = vec![0u32; old_of_new.len()];
    for (new, &old) in old_of_new.iter().enumerate() {
        new_of_old[old as usize] = new as u32;
    }
    let rename: HashMap<String, String> = specials
        .iter()
        .enumerate()
        .filter(|(_, (t, _))| !t.is_empty())
        .map(|(i, (t, _))| (t.clone(), special::TOKENS[i].to_string()))
        .collect();
    let tok_new = rewrite_tokenizer(tok_json, &new_of_old, &rename, tp)?;
    let token_id_map: BTreeMap<u32, u32> = new_of_old
        .iter()
        .enumerate()
        .filter(|(o, &n)| *o as u32 != n)
        .map(|(o, &n)| (o as u32, n))
        .collect();
    let perm = Tensor::from_slice(&old_of_new.iter().map(|&x| x as i64).collect::<Vec<_>>());
    for name in [WORD_EMBEDDING, "decoder.bias"]
        .into_iter()
        .chain((!cfg.tie_weights).then_some("decoder.weight"))
    {
        if let Some((k, t)) = named.remove(name) {
            if t.size().first() != Some(&cfg.vocab_size) {
                return Err(Error::input(
                    format!("{wp}: {k}"),
                    format!("shape {:?}, vocab_size is {}", t.size(), cfg.vocab_size),
                )
                .into());
            }
            named.insert(name.to_string(), (k, t.index_select(0, &perm)));
        }
    }
    Ok((tok_new, token_id_map))
}

/// crambench's model for `cfg` with every variable given by `named` (each source tensor must
/// have a counterpart of the same shape, and every trainable variable a source).
fn fill_model(
    cfg: &ArchConfig,
    named: &HashMap<String, (String, Tensor)>,
    wp: &str,
) -> Result<tch::nn::VarStore> {
    let vs = tch::nn::VarStore::new(Device::Cpu);
    model::build(&vs.root(), cfg)?;
    let vars = vs.variables();
    for (name, (key, _)) in named {
        if !vars.contains_key(name) {
            return Err(Error::input(
                format!("{wp}: {key}"),
                format!("no counterpart in crambench's model (would be {name})"),
            )
            .into());
        }
    }
    let mut missing = Vec::new();
    tch::no_grad(|| -> Result<()> {
        for (name, var) in &vars {
            match named.get(name) {
                Some((_, t)) if t.size() == var.size() => {
                    var.shallow_clone().copy_(t);
                }
                Some((key, t)) => {
                    return Err(Error::input(
                        format!("{wp}: {key}"),
                        format!(
                            "shape {:?}, crambench's {name} is {:?}",
                            t.size(),
                            var.size()
                        ),
                    )
                    .into())
                }
                None if var.requires_grad() => missing.push(name.clone()),
                None => {} // norm_factor: computed
            }
        }
        Ok(())
    })?;
    if !missing.is_empty() {
        missing.sort();
        return Err(Error::input(wp, format!("weights missing: {}", missing.join(", "))).into());
    }
    Ok(vs)
}

/// Read the `import.json` of a checkpoint directory, if it has one.
pub fn import_record(dir: &Path) -> Result<Option<ImportRecord>> {
    let p = dir.join("import.json");
    if !p.is_file() {
        return Ok(None);
    }
    let rec: ImportRecord = serde_json::from_slice(&crate::io::read_limited(&p, JSON_LIMIT)?)
        .map_err(|e| Error::input(p.display(), e))?;
    if rec.format != IMPORT_FORMAT {
        return Err(Error::input(p.display(), format!("unknown format {:?}", rec.format)).into());
    }
    Ok(Some(rec))
}

// ----------------------------------------------------------------------------------------------
// Export

/// Target layouts of `checkpoint export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// upstream cramming v2: hub `config.json` (`model_type: crammedBERT`) + `model_config.json`.
    Cramming,
    /// Hugging Face `BertForMaskedLM`.
    HfBert,
}

impl std::str::FromStr for ExportFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "cramming" => Ok(ExportFormat::Cramming),
            "hf-bert" => Ok(ExportFormat::HfBert),
            other => Err(Error::input(
                "--format",
                format!("{other:?}: expected cramming or hf-bert"),
            )),
        }
    }
}

/// The fused QKV `[3H, H]` (or `[3H]`) of `layout` as (q, k, v).
fn split_qkv(t: &Tensor, layout: QkvLayout, heads: i64) -> (Tensor, Tensor, Tensor) {
    let h3 = t.size()[0];
    let h = h3 / 3;
    let rest: Vec<i64> = t.size()[1..].to_vec();
    match layout {
        QkvLayout::Blocks => {
            let c = t.chunk(3, 0);
            (
                c[0].shallow_clone(),
                c[1].shallow_clone(),
                c[2].shallow_clone(),
            )
        }
        QkvLayout::PerHead => {
            let hd = h / heads;
            let mut shape = vec![heads, 3, hd];
            shape.extend(&rest);
            let v = t.reshape(&shape[..]);
            let mut out_shape = vec![h];
            out_shape.extend(&rest);
            let part = |i: i64| v.select(1, i).reshape(&out_shape[..]);
            (part(0), part(1), part(2))
        }
    }
}

fn special_files(tok: &tokenizers::Tokenizer, max_len: i64) -> (Value, Value) {
    let _ = tok;
    let names = json!({
        "pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "cls_token": "<cls>", "sep_token": "<sep>", "mask_token": "<mask>",
    });
    let mut cfg = names.clone();
    cfg["tokenizer_class"] = json!("PreTrainedTokenizerFast");
    cfg["model_max_length"] = json!(max_len);
    cfg["clean_up_tokenization_spaces"] = json!(false);
    (cfg, names)
}

/// Export the crambench checkpoint `ckpt` (verified against its `meta.json`) to `out`.
pub fn export(ckpt: &Path, format: ExportFormat, out: &Path) -> Result<Vec<String>> {
    if out.exists() {
        return Err(
            Error::input(out.display(), "already exists; give a new --out directory").into(),
        );
    }
    let (meta, _) = super::checkpoint::verify_files(ckpt)?;
    for required in ["model.safetensors", "arch.json", "tokenizer.json"] {
        if !meta.files.contains_key(required) {
            return Err(Error::input(
                ckpt.join("meta.json").display(),
                format!("lists no {required}"),
            )
            .into());
        }
    }
    let arch_path = ckpt.join("arch.json");
    let cfg: ArchConfig = serde_json::from_slice(&crate::io::read_limited(&arch_path, 1 << 20)?)
        .map_err(|e| Error::input(arch_path.display(), e))?;
    let tok_path = ckpt.join("tokenizer.json");
    let tok = crate::data::tokenizer::load_tokenizer(&tok_path)?;
    let weights: HashMap<String, Tensor> = read_safetensors(&ckpt.join("model.safetensors"))?
        .into_iter()
        .collect();
    let w = |name: &str| -> Result<Tensor> {
        weights.get(name).map(|t| t.shallow_clone()).ok_or_else(|| {
            Error::input(
                ckpt.join("model.safetensors").display(),
                format!("{name}: missing"),
            )
            .into()
        })
    };
    let bad = |e: upstream::Untranslatable| -> anyhow::Error {
        Error::input(format!("{}: {}", arch_path.display(), e.field), e.message).into()
    };
    let emb = "encoder.embedding.word_embedding.weight";
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let tensors: Vec<(String, Tensor)> = match format {
        ExportFormat::Cramming => {
            let container = upstream::arch_to_upstream_v2(&cfg).map_err(bad)?;
            let mut t: Vec<(String, Tensor)> = weights
                .iter()
                .map(|(k, v)| (k.clone(), v.shallow_clone()))
                .collect();
            // Upstream's module ties decoder.weight to the embedding; its loader also reads
            // a state dict that has both.
            t.push(("decoder.weight".into(), w(emb)?));
            if cfg.positions == model::Positions::Learned {
                t.push((
                    "encoder.embedding.pos_embedding.position_ids".into(),
                    Tensor::arange(cfg.max_seq_len, (Kind::Int64, Device::Cpu)).unsqueeze(0),
                ));
            }
            let config = json!({
                "architectures": ["ScriptableLMForPreTraining"],
                "model_type": "crammedBERT",
                "arch": container,
                "torch_dtype": "float32",
            });
            files.push(("config.json".into(), serde_json::to_vec_pretty(&config)?));
            files.push((
                "model_config.json".into(),
                serde_json::to_vec_pretty(&container)?,
            ));
            t
        }
        ExportFormat::HfBert => {
            let config = upstream::arch_to_hf_bert(&cfg).map_err(bad)?;
            let mut t: Vec<(String, Tensor)> = Vec::new();
            let e = "bert.embeddings";
            t.push((format!("{e}.word_embeddings.weight"), w(emb)?));
            t.push((
                format!("{e}.position_embeddings.weight"),
                w("encoder.embedding.pos_embedding.embedding.weight")?,
            ));
            let tt = if cfg.type_vocab_size > 0 {
                w("encoder.embedding.token_type_embedding.weight")?
            } else {
                Tensor::zeros([1, cfg.hidden], (Kind::Float, Device::Cpu))
            };
            t.push((format!("{e}.token_type_embeddings.weight"), tt));
            t.push((
                format!("{e}.LayerNorm.weight"),
                w("encoder.embedding.norm.weight")?,
            ));
            t.push((
                format!("{e}.LayerNorm.bias"),
                w("encoder.embedding.norm.bias")?,
            ));
            for l in 0..cfg.layers {
                let src = format!("encoder.layers.{l}");
                let dst = format!("bert.encoder.layer.{l}");
                for wb in ["weight", "bias"] {
                    let fused = w(&format!("{src}.attn.self_attention.query_key_value.{wb}"))?;
                    let (q, k, v) = split_qkv(&fused, cfg.qkv_layout, cfg.heads);
                    t.push((format!("{dst}.attention.self.query.{wb}"), q));
                    t.push((format!("{dst}.attention.self.key.{wb}"), k));
                    t.push((format!("{dst}.attention.self.value.{wb}"), v));
                    for (a, b) in [
                        ("attn.dense", "attention.output.dense"),
                        ("norm1", "attention.output.LayerNorm"),
                        ("ffn.dense_in", "intermediate.dense"),
                        ("ffn.dense_out", "output.dense"),
                        ("norm2", "output.LayerNorm"),
                    ] {
                        t.push((format!("{dst}.{b}.{wb}"), w(&format!("{src}.{a}.{wb}"))?));
                    }
                }
            }
            for wb in ["weight", "bias"] {
                t.push((
                    format!("cls.predictions.transform.dense.{wb}"),
                    w(&format!("prediction_head.dense.{wb}"))?,
                ));
                t.push((
                    format!("cls.predictions.transform.LayerNorm.{wb}"),
                    w(&format!("prediction_head.norm.{wb}"))?,
                ));
            }
            t.push((
                "cls.predictions.decoder.weight".into(),
                if cfg.tie_weights {
                    w(emb)?
                } else {
                    w("decoder.weight")?
                },
            ));
            t.push(("cls.predictions.bias".into(), w("decoder.bias")?));
            files.push(("config.json".into(), serde_json::to_vec_pretty(&config)?));
            // vocab.txt for BertTokenizer (slow); tokenizer.json is what the fast one loads.
            let mut by_id: Vec<(u32, String)> = tok
                .get_vocab(true)
                .into_iter()
                .map(|(t, i)| (i, t))
                .collect();
            by_id.sort();
            let mut vt = String::new();
            for (_, t) in by_id {
                vt.push_str(&t);
                vt.push('\n');
            }
            files.push(("vocab.txt".into(), vt.into_bytes()));
            t
        }
    };
    let (tok_cfg, special_map) = special_files(&tok, cfg.max_seq_len);
    files.push((
        "tokenizer_config.json".into(),
        serde_json::to_vec_pretty(&tok_cfg)?,
    ));
    files.push((
        "special_tokens_map.json".into(),
        serde_json::to_vec_pretty(&special_map)?,
    ));
    files.push((
        "tokenizer.json".into(),
        crate::io::read_limited(&tok_path, 1 << 30)?,
    ));

    crate::io::publish_dir(out, |tmp| {
        let mut tensors = tensors;
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        write_safetensors(&tmp.join("model.safetensors"), &tensors)?;
        let mut names = vec!["model.safetensors".to_string()];
        for (name, bytes) in &files {
            crate::io::write_atomic(&tmp.join(name), bytes, None)?;
            names.push(name.clone());
        }
        names.sort();
        Ok(names)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_moves_specials_and_keeps_a_bijection() {
        let names = ["<pad>", "<s>", "</s>", "<unk>", "<cls>", "<sep>", "<mask>"];
        // BERT-like: [PAD]=0, unused at 1,2, UNK..MASK at 100..103.
        let ids = [0u32, 1, 2, 100, 101, 102, 103];
        let specials: [(String, u32); 7] = std::array::from_fn(|i| (names[i].to_string(), ids[i]));
        let p = special_permutation(110, &specials);
        for (new, &old) in ids.iter().enumerate() {
            assert_eq!(p[new], old);
        }
        let mut sorted = p.clone();
        sorted.sort();
        assert_eq!(sorted, (0..110).collect::<Vec<u32>>());
        // Upstream-like: a shuffle of 0..6 stays inside 0..6.
        let ids = [6u32, 4, 0, 2, 5, 3, 1];
        let specials: [(String, u32); 7] = std::array::from_fn(|i| (names[i].to_string(), ids[i]));
        let p = special_permutation(20, &specials);
        assert_eq!(&p[..7], &ids);
        assert_eq!(&p[7..], &(7..20).collect::<Vec<u32>>()[..]);
    }
}
