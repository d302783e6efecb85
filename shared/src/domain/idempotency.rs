//! `request_id` idempotency (contract 3.3): the same request_id with the same body gets the
//! same response; with a different body, a conflict. "Same body" means the same JSON value:
//! key order and white space do not count.

use serde_json::Value;
use sha2::{Digest, Sha256};

pub const MAX_REQUEST_ID_CHARS: usize = 128;

/// What a request_id is scoped to, so one id used on two endpoints cannot collide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    CreateBatch,
    CreateFile,
    Grant,
    CreateAccount,
    CancelBatch,
    CreateEndpoint,
    RotateSecret,
    CreateKey,
    CreateExport,
    Adjustment,
    /// Credits bought (a card checkout session, a wire transfer): once per payment.
    Purchase,
    /// A card checkout page for a pack or a top-up.
    Checkout,
    /// A pro-forma invoice (a request to pay by wire).
    ProForma,
    /// A month's invoice summary: once per account and month.
    MonthlySummary,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::CreateBatch => "batch",
            Scope::CreateFile => "file",
            Scope::Grant => "grant",
            Scope::CreateAccount => "account",
            Scope::CancelBatch => "cancel",
            Scope::CreateEndpoint => "endpoint",
            Scope::RotateSecret => "rotate",
            Scope::CreateKey => "key",
            Scope::CreateExport => "export",
            Scope::Adjustment => "adjust",
            Scope::Purchase => "purchase",
            Scope::Checkout => "checkout",
            Scope::ProForma => "proforma",
            Scope::MonthlySummary => "summary",
        }
    }
}

/// The sort key of an idempotency record.
pub fn request_key(scope: Scope, request_id: &str) -> String {
    format!("{}#{request_id}", scope.as_str())
}

/// request_id: 1 to 128 characters of `A-Z a-z 0-9 - _ . :` (UUIDs, ULIDs and most order
/// numbers fit).
pub fn validate_request_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() || id.len() > MAX_REQUEST_ID_CHARS {
        return Err("request_id must be 1 to 128 characters");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err("request_id may contain only letters, digits and - _ . :");
    }
    Ok(())
}

/// SHA-256 (hex) of the canonical form of a JSON value: object keys sorted, no white space.
pub fn fingerprint(v: &Value) -> String {
    let mut out = String::new();
    canonical(v, &mut out);
    hex::encode(Sha256::digest(out.as_bytes()))
}

fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                if let Some(val) = map.get(*k) {
                    canonical(val, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fingerprint_ignores_key_order_and_spacing() {
        let a: Value =
            serde_json::from_str(r#"{"a": 1, "b": [1, {"y": 2, "x": 1}]}"#).unwrap_or_default();
        let b: Value = serde_json::from_str(r#"{"b":[1,{"x":1,"y":2}],"a":1}"#).unwrap_or_default();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(
            fingerprint(&a),
            fingerprint(&json!({"a": 2, "b": [1, {"x": 1, "y": 2}]}))
        );
        assert_ne!(fingerprint(&json!([1, 2])), fingerprint(&json!([2, 1])));
    }

    #[test]
    fn request_ids_are_bounded() {
        assert!(validate_request_id("order-2026-11-24:0001").is_ok());
        assert!(validate_request_id("").is_err());
        assert!(validate_request_id(&"a".repeat(129)).is_err());
        assert!(validate_request_id("has space").is_err());
        assert!(validate_request_id("naïve").is_err());
    }
}
