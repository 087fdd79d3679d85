//! Identifiers: every name from an input that becomes a path component — a recipe's `name`
//! (the run directory `<out>/<name>/`), a key name (`<name>.key`), a GLUE task or set id
//! (`predictions/<set>/…`), a file name listed in a dataset manifest — is checked here, in one
//! place, before it is joined to a path.
//!
//! An identifier is 1 to [`MAX_LEN`] bytes of ASCII letters, digits, `-`, `_` and `.`, starting
//! with a letter or a digit. So it is exactly one path component, never `.` or `..`, never
//! absolute, never hidden, never empty, without a separator, a newline or a control character,
//! and short enough that no file system refuses it (ENAMETOOLONG) even with the prefixes and
//! suffixes crambench adds (`.tmp-<name>-<pid>`, `<name>.key`).
use crate::error::Error;
use std::fmt;

/// Longest identifier, in bytes.
pub const MAX_LEN: usize = 64;

/// Why `value` is not an identifier, or `None` when it is one.
pub fn problem(value: &str) -> Option<String> {
    let Some(first) = value.chars().next() else {
        return Some("is empty".into());
    };
    if value.len() > MAX_LEN {
        return Some(format!(
            "is {} bytes long; the limit is {MAX_LEN}",
            value.len()
        ));
    }
    if !first.is_ascii_alphanumeric() {
        return Some(format!(
            "starts with {first:?}; it must start with an ASCII letter or digit"
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Some(format!(
            "contains {c:?}; only ASCII letters, digits, '-', '_' and '.' are allowed"
        ));
    }
    None
}

/// Whether `value` is an identifier.
pub fn is_valid(value: &str) -> bool {
    problem(value).is_none()
}

/// `Ok` when `value` is an identifier, else bad input naming `what` (the file and field, or the
/// option) and the value.
pub fn check(what: impl fmt::Display, value: &str) -> Result<(), Error> {
    match problem(value) {
        None => Ok(()),
        Some(p) => Err(Error::input(
            what,
            format!(
                "{value:?} is not a valid name: it {p} (names become file and directory names)"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_single_safe_path_components() {
        for ok in [
            "crammed-bert",
            "demo-cpu",
            "default",
            "mnli-mm",
            "shard-00001.bin",
            "tokenizer.json",
            "A_1",
            &"x".repeat(MAX_LEN),
        ] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../../x",
            "/abs",
            "a/b",
            ".hidden",
            "-flag",
            "new\nline",
            "tab\t",
            "sp ace",
            "nul\0",
            "back\\slash",
            "ünïcode",
            &"x".repeat(MAX_LEN + 1),
        ] {
            assert!(!is_valid(bad), "{bad:?}");
        }
        let e = check("r.toml: name", "../x").unwrap_err();
        assert_eq!(e.exit_code(), crate::ExitCode::BadInput);
        let msg = e.to_string();
        assert!(
            msg.contains("r.toml: name") && msg.contains("../x"),
            "{msg}"
        );
    }
}
