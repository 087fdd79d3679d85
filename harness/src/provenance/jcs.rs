//! RFC 8785 JSON Canonicalization Scheme (JCS).
//!
//! Keys sorted by UTF-16 code units, no insignificant whitespace, numbers in ECMAScript form
//! (`100.0` → `100`, `1e-7` → `1e-7`). Serialisation is done by `serde_json_canonicalizer`; this
//! module adds the I-JSON limits that JCS requires and that the Python reference (`rfc8785`)
//! enforces: NaN and infinities are refused, and so is any integer outside ±(2^53 − 1). Seeds,
//! byte counts and token counts therefore stay within that range or are written as strings.
use crate::error::Error;
use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

mod finite;

/// The largest magnitude of an integer in canonical JSON: 2^53 − 1.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Canonical JSON bytes of `value`.
pub fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    value
        .serialize(&finite::Check {
            path: String::from("$"),
        })
        .map_err(|e| Error::input("canonical JSON", e))?;
    let bytes = serde_json_canonicalizer::to_vec(value).map_err(|e| {
        Error::input(
            "canonical JSON",
            format!("{e} (NaN and infinities are refused)"),
        )
    })?;
    // Re-read the canonical text to find integers out of range, naming where they are.
    let parsed: Value = serde_json::from_slice(&bytes)?;
    check_safe_integers(&parsed, &mut String::from("$"))?;
    Ok(bytes)
}

/// Canonical JSON of already-parsed JSON text (for re-canonicalising a file).
pub fn canonicalize_str(json: &str) -> Result<Vec<u8>> {
    let v: Value = serde_json::from_str(json).map_err(|e| Error::input("JSON", e))?;
    to_vec(&v)
}

fn check_safe_integers(v: &Value, path: &mut String) -> Result<()> {
    match v {
        Value::Number(n) => {
            let bad = match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => u > MAX_SAFE_INTEGER,
                (None, Some(i)) => i.unsigned_abs() > MAX_SAFE_INTEGER,
                _ => false,
            };
            if bad {
                return Err(Error::input(
                    format!("canonical JSON at {path}"),
                    format!("integer {n} is outside ±(2^53-1); write it as a string"),
                )
                .into());
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                check_safe_integers(item, path)?;
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                let len = path.len();
                path.push('.');
                path.push_str(k);
                check_safe_integers(item, path)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(v: &Value) -> String {
        String::from_utf8(to_vec(v).unwrap()).unwrap()
    }

    /// Expected strings are RFC 8785's own examples and the outputs of the Python `rfc8785`
    /// package quoted in provenance-and-anchors.md §5.
    #[test]
    fn matches_rfc8785_examples() {
        assert_eq!(
            canon(&json!({"b": 1, "a": [true, null, "x"]})),
            r#"{"a":[true,null,"x"],"b":1}"#
        );
        assert_eq!(canon(&json!(100.0)), "100");
        assert_eq!(canon(&json!(1e-7)), "1e-7");
        assert_eq!(canon(&json!(-0.0)), "0");
        assert_eq!(canon(&json!(1e21)), "1e+21");
        assert_eq!(canon(&json!(0.1)), "0.1");
        // RFC 8785 §3.2.3: sorting by UTF-16 code units.
        let v: Value = serde_json::from_str(
            r#"{"\u20ac":"Euro Sign","\r":"Carriage Return","\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One","\ud83d\ude00":"Emoji: Grinning Face","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis"}"#,
        )
        .unwrap();
        let want = "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}";
        assert_eq!(canon(&v), want);
    }

    #[test]
    fn refuses_unsafe_integers_and_non_finite_numbers() {
        assert!(to_vec(&json!({"seed": MAX_SAFE_INTEGER})).is_ok());
        let e = to_vec(&json!({"x": [1, {"seed": MAX_SAFE_INTEGER + 1}]})).unwrap_err();
        assert!(e.to_string().contains("$.x[1].seed"), "{e}");
        assert!(to_vec(&json!(-(MAX_SAFE_INTEGER as i64) - 1)).is_err());
        assert!(to_vec(&f64::NAN).is_err());
        let e = to_vec(&vec![1.0, f64::INFINITY]).unwrap_err();
        assert!(e.to_string().contains("$[1]"), "{e}");
        #[derive(serde::Serialize)]
        struct Loss {
            steps: Vec<(u64, f32)>,
        }
        let e = to_vec(&Loss {
            steps: vec![(1, 2.0), (2, f32::NAN)],
        })
        .unwrap_err();
        assert!(e.to_string().contains("$.steps[1][1]"), "{e}");
    }
}
