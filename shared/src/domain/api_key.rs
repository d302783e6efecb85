//! API keys and operator credentials: random secrets, stored and compared only as hashes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every key starts with this, so secret scanners and people recognise it.
pub const KEY_PREFIX: &str = "vgk_";

/// Every operator credential starts with this: it is never mistaken for a customer's key
/// (a customer route refuses it by its shape, before any lookup).
pub const OPERATOR_PREFIX: &str = "vgo_";

/// A secret from 32 random bytes: the prefix and the bytes, base64url.
pub fn secret_from(bytes: [u8; 32]) -> String {
    format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// An operator credential from 32 random bytes.
pub fn operator_secret_from(bytes: [u8; 32]) -> String {
    format!("{OPERATOR_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Lower-case hex SHA-256: what the key table and the operator configuration hold.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// What a listing may show: the first 8 characters after the prefix and the last 4.
pub fn display_parts(secret: &str) -> (String, String) {
    let head: String = secret.chars().take(KEY_PREFIX.len() + 8).collect();
    let n = secret.chars().count();
    let tail: String = secret.chars().skip(n.saturating_sub(4)).collect();
    (head, tail)
}

/// Constant-time comparison of two hex digests, so response timing tells nothing about how
/// much of a guess was right.
pub fn hashes_match(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Plausible shape of a presented key: cheap rejection before any lookup.
pub fn looks_like_key(secret: &str) -> bool {
    shaped(KEY_PREFIX, secret)
}

/// The same for an operator credential.
pub fn looks_like_operator_credential(secret: &str) -> bool {
    shaped(OPERATOR_PREFIX, secret)
}

fn shaped(prefix: &str, secret: &str) -> bool {
    secret.len() == prefix.len() + 43
        && secret.starts_with(prefix)
        && secret[prefix.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_recognisable() {
        let a = secret_from([7; 32]);
        assert!(looks_like_key(&a), "{a}");
        assert_ne!(a, secret_from([8; 32]));
        assert!(!looks_like_key("vgk_short"));
        let o = operator_secret_from([7; 32]);
        assert!(
            looks_like_operator_credential(&o) && !looks_like_key(&o),
            "{o}"
        );
        assert!(!looks_like_operator_credential(&a));
        let (head, tail) = display_parts(&a);
        assert_eq!(head.len(), 12);
        assert_eq!(tail.len(), 4);
        assert!(a.ends_with(&tail));
    }

    #[test]
    fn hashes_compare_exactly() {
        let h = hash_secret("vgk_x");
        assert!(hashes_match(&h, &hash_secret("vgk_x")));
        assert!(!hashes_match(&h, &hash_secret("vgk_y")));
        assert!(!hashes_match(&h, "short"));
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
