//! The content hash of a definition: SHA-256 of its canonical JSON.
//!
//! Canonical means no insignificant whitespace and object keys sorted by their UTF-8 bytes,
//! so `{"a":1,"b":2}` and `{ "b": 2, "a": 1 }` are the same content and do not make a new
//! version. Keys are sorted here rather than relying on `serde_json::Map`'s order, which
//! becomes insertion order when any crate in the build enables `preserve_order`.

use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The lowercase hex SHA-256 of the canonical form of `json`; `what` names the value in the
/// error when it is not JSON.
pub fn content_hash(json: &str, what: impl FnOnce() -> String) -> Result<String> {
    let value: Value = serde_json::from_str(json).map_err(|source| Error::InvalidJson {
        what: what(),
        source: Arc::new(source),
    })?;
    let mut canonical = String::with_capacity(json.len());
    write_canonical(&value, &mut canonical);
    let digest = Sha256::digest(canonical.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        let _ = write!(hex, "{byte:02x}");
    }
    Ok(hex)
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_scalar(&Value::String(key.clone()), out);
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => write_scalar(scalar, out),
    }
}

/// Strings, numbers, booleans and null as serde_json prints them.
fn write_scalar(value: &Value, out: &mut String) {
    // `Value`'s Display is compact JSON; for scalars that is the canonical form.
    let _ = write!(out, "{value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(s: &str) -> String {
        content_hash(s, || "test".into()).unwrap()
    }

    #[test]
    fn key_order_and_whitespace_do_not_matter() {
        assert_eq!(
            hash(r#"{"a":1,"b":{"y":[1,2],"x":null}}"#),
            hash(r#"{ "b": { "x": null, "y": [1, 2] }, "a": 1 }"#)
        );
        assert_ne!(hash(r#"{"a":[1,2]}"#), hash(r#"{"a":[2,1]}"#));
        assert_eq!(hash("{}").len(), 64);
    }

    #[test]
    fn invalid_json_names_the_value() {
        let err = content_hash("{", || "config of definition x".into()).unwrap_err();
        assert!(err.to_string().contains("config of definition x"));
    }
}
