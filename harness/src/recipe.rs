//! Recipes: the TOML files in `baselines/` that say what to build, train and evaluate.
//!
//! A recipe has a few top-level keys and one table per stage:
//!
//! ```toml
//! name = "crammed-bert"
//! description = "…"
//! extends = "crammed-bert.toml"   # optional: start from another recipe, override below
//! [arch]  …   # model::ArchConfig
//! [train] …   # train::TrainConfig
//! [data]  …   # data::DataConfig
//! [glue]  …   # glue::GlueConfig
//! ```
//!
//! `extends` merges tables key by key (the extending file wins; arrays are replaced, not
//! concatenated), relative to the extending file's directory. Each stage deserialises its own
//! table with [`Recipe::section`], which rejects unknown keys and names the file and the key's
//! dotted path. The fully resolved recipe — every section after defaults — is what goes into
//! the manifest, with the SHA-256 of its canonical JSON.
use crate::error::Error;
use anyhow::Result;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// Top-level keys a recipe may have.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "name",
    "description",
    "extends",
    "arch",
    "train",
    "data",
    "glue",
];

/// Largest recipe file read.
const RECIPE_LIMIT: u64 = 1 << 20;

/// A recipe file after `extends` has been resolved.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The file named by the user.
    pub path: PathBuf,
    /// The files merged into it, outermost first (the user's file, then what it extends, …).
    pub chain: Vec<PathBuf>,
    /// The merged TOML.
    pub table: toml::Table,
}

impl Recipe {
    /// Read and resolve a recipe.
    pub fn load(path: &Path) -> Result<Self> {
        let mut chain = Vec::new();
        let table = load_merged(path, &mut chain)?;
        for key in table.keys() {
            if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
                return Err(Error::input(
                    path.display(),
                    format!(
                        "unknown top-level key `{key}` (expected one of {})",
                        TOP_LEVEL_KEYS.join(", ")
                    ),
                )
                .into());
            }
        }
        let recipe = Recipe {
            path: path.to_path_buf(),
            chain,
            table,
        };
        // The name becomes the run directory (`<out>/<name>/`): an identifier, checked here
        // before anything joins it to a path.
        match recipe.table.get("name") {
            Some(toml::Value::String(n)) => {
                crate::ident::check(format!("{}: name", path.display()), n)?
            }
            Some(other) => {
                return Err(Error::input(
                    format!("{}: name", path.display()),
                    format!("must be a string, got a {}", other.type_str()),
                )
                .into())
            }
            None => {
                let stem = recipe.name();
                if let Some(p) = crate::ident::problem(&stem) {
                    return Err(Error::input(
                        format!("{}: name", path.display()),
                        format!(
                            "not set, and the file stem {stem:?} is not a valid name: it {p}; \
                             set `name`"
                        ),
                    )
                    .into());
                }
            }
        }
        Ok(recipe)
    }

    /// The recipe's name (`name`, else the file stem); [`Recipe::load`] checked that it is an
    /// identifier ([`crate::ident`]).
    pub fn name(&self) -> String {
        self.table
            .get("name")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| {
                self.path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
    }

    /// Whether the recipe has a `[name]` table.
    pub fn has_section(&self, name: &str) -> bool {
        self.table.contains_key(name)
    }

    /// Deserialise the `[name]` table into `T` (missing table: `T` from an empty table, so
    /// defaults apply). Unknown keys are errors naming the file and the key path, provided `T`
    /// uses `#[serde(deny_unknown_fields)]`.
    pub fn section<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        let value = match self.table.get(name) {
            Some(v @ toml::Value::Table(_)) => v.clone(),
            Some(_) => {
                return Err(Error::input(
                    self.path.display(),
                    format!("`{name}` must be a table ([{name}])"),
                )
                .into())
            }
            None => toml::Value::Table(toml::Table::new()),
        };
        serde_path_to_error::deserialize(value).map_err(|e| {
            let at = e.path().to_string();
            let at = if at == "." || at.is_empty() {
                name.to_string()
            } else {
                format!("{name}.{at}")
            };
            Error::input(format!("{}: {at}", self.path.display()), e.inner()).into()
        })
    }
}

fn read_table(path: &Path) -> Result<toml::Table> {
    let bytes = crate::io::read_limited(path, RECIPE_LIMIT)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| Error::input(path.display(), format!("not UTF-8: {e}")))?;
    parse_toml(text, &path.display().to_string())
}

/// Parse TOML text into a table; a syntax error names `name` (the file) and the line.
pub fn parse_toml(text: &str, name: &str) -> Result<toml::Table> {
    text.parse::<toml::Table>().map_err(|e| {
        let msg = match e.span() {
            Some(span) => {
                let line = text[..span.start].matches('\n').count() + 1;
                format!("line {line}: {}", e.message())
            }
            None => e.message().to_string(),
        };
        Error::input(name, msg).into()
    })
}

fn load_merged(path: &Path, chain: &mut Vec<PathBuf>) -> Result<toml::Table> {
    let canonical = std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
    if chain
        .iter()
        .any(|p| std::fs::canonicalize(p).ok().as_ref() == Some(&canonical))
    {
        return Err(Error::input(path.display(), "`extends` forms a cycle").into());
    }
    chain.push(path.to_path_buf());
    let mut table = read_table(path)?;
    let Some(parent) = table.remove("extends") else {
        return Ok(table);
    };
    let parent = parent.as_str().ok_or_else(|| {
        Error::input(
            format!("{}: extends", path.display()),
            "must be a file name",
        )
    })?;
    let parent_path = path.parent().unwrap_or(Path::new(".")).join(parent);
    let mut base = load_merged(&parent_path, chain)?;
    merge(&mut base, table);
    Ok(base)
}

/// Merge `over` into `base`: tables recursively, everything else replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// SHA-256 (hex) of the canonical JSON of a resolved recipe value.
pub fn resolved_sha256<T: serde::Serialize>(resolved: &T) -> Result<String> {
    Ok(crate::provenance::hash::sha256_hex(
        &crate::provenance::jcs::to_vec(resolved)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Arch {
        layers: u32,
        #[serde(default)]
        hidden: u32,
    }

    #[test]
    fn extends_merges_and_unknown_keys_are_named() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("base.toml"),
            "name = \"base\"\n[arch]\nlayers = 16\nhidden = 768\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("tiny.toml"),
            "extends = \"base.toml\"\nname = \"tiny\"\n[arch]\nlayers = 2\n",
        )
        .unwrap();
        let r = Recipe::load(&d.path().join("tiny.toml")).unwrap();
        assert_eq!(r.name(), "tiny");
        assert_eq!(
            r.section::<Arch>("arch").unwrap(),
            Arch {
                layers: 2,
                hidden: 768
            }
        );
        assert_eq!(r.chain.len(), 2);

        std::fs::write(d.path().join("bad.toml"), "[arch]\nlayers = 2\nlayer = 3\n").unwrap();
        let r = Recipe::load(&d.path().join("bad.toml")).unwrap();
        let e = r.section::<Arch>("arch").unwrap_err().to_string();
        assert!(e.contains("bad.toml") && e.contains("layer"), "{e}");

        std::fs::write(d.path().join("top.toml"), "nam = 1\n").unwrap();
        let e = Recipe::load(&d.path().join("top.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("top.toml") && e.contains("`nam`"), "{e}");

        std::fs::write(d.path().join("syntax.toml"), "name = \"x\"\n[arch\n").unwrap();
        let e = Recipe::load(&d.path().join("syntax.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("syntax.toml") && e.contains("line 2"), "{e}");

        std::fs::write(d.path().join("a.toml"), "extends = \"b.toml\"\n").unwrap();
        std::fs::write(d.path().join("b.toml"), "extends = \"a.toml\"\n").unwrap();
        let e = Recipe::load(&d.path().join("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cycle"), "{e}");
    }
}
