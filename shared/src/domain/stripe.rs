//! Stripe's webhook signatures (the `Stripe-Signature` header), checked before anything in
//! the body is read: `t=<unix seconds>` and one or more `v1=<hex HMAC-SHA256>` computed with the
//! endpoint's signing secret over `<t>.<raw body>`. Every `v1` is tried (Stripe sends two while
//! a secret is being rolled), compared in constant time; other schemes (`v0`, test-mode
//! extras) are ignored; a timestamp more than [`TOLERANCE_SECS`] away from now is refused, so
//! a captured delivery cannot be replayed later.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a signature's timestamp may be from now (Stripe's own libraries use five minutes).
pub const TOLERANCE_SECS: i64 = 300;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("no Stripe-Signature header")]
    Missing,
    #[error("the Stripe-Signature header has no timestamp or no v1 signature")]
    Malformed,
    #[error("the signature's timestamp is {age_secs} s from now, more than {TOLERANCE_SECS} s")]
    OutsideTolerance { age_secs: i64 },
    #[error("no v1 signature matches the body and the secret")]
    NoMatch,
}

fn mac(secret: &str, timestamp: i64, payload: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length: this cannot fail.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(payload);
    m
}

/// Checks `header` against the raw `payload` at `now_secs`; the signed timestamp when it holds.
pub fn verify(
    header: Option<&str>,
    payload: &[u8],
    secret: &str,
    now_secs: i64,
) -> Result<i64, SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            continue;
        };
        match k {
            "t" => timestamp = v.parse::<i64>().ok(),
            "v1" => {
                if let Ok(sig) = hex::decode(v) {
                    signatures.push(sig);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let age_secs = now_secs.saturating_sub(timestamp);
    if age_secs.abs() > TOLERANCE_SECS {
        return Err(SignatureError::OutsideTolerance { age_secs });
    }
    // `verify_slice` compares in constant time.
    if signatures
        .iter()
        .any(|sig| mac(secret, timestamp, payload).verify_slice(sig).is_ok())
    {
        Ok(timestamp)
    } else {
        Err(SignatureError::NoMatch)
    }
}

/// The header Stripe would send for `payload` at `timestamp` (the fake Stripe of the tests
/// signs with it; it is checked against Stripe's own library there).
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    let sig = mac(secret, timestamp, payload).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(sig))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","object":"event","type":"checkout.session.completed"}"#;

    #[test]
    fn a_signature_holds_within_the_tolerance_and_only_for_its_body_and_secret() {
        let h = sign(BODY, SECRET, 1_000);
        assert_eq!(verify(Some(&h), BODY, SECRET, 1_000), Ok(1_000));
        assert_eq!(verify(Some(&h), BODY, SECRET, 1_300), Ok(1_000));
        assert_eq!(
            verify(Some(&h), BODY, SECRET, 1_301),
            Err(SignatureError::OutsideTolerance { age_secs: 301 })
        );
        assert_eq!(
            verify(Some(&h), BODY, SECRET, 699),
            Err(SignatureError::OutsideTolerance { age_secs: -301 })
        );
        let mut tampered = BODY.to_vec();
        tampered[10] ^= 1;
        assert_eq!(
            verify(Some(&h), &tampered, SECRET, 1_000),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(Some(&h), BODY, "whsec_other", 1_000),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn any_v1_may_match_and_other_schemes_are_ignored() {
        let good = sign(BODY, SECRET, 1_000);
        let good_sig = good.split_once(",v1=").map(|(_, s)| s).unwrap_or_default();
        let rolled = format!("t=1000,v1={},v0=abc,v1={good_sig}", "00".repeat(32));
        assert_eq!(verify(Some(&rolled), BODY, SECRET, 1_000), Ok(1_000));
        let only_v0 = format!("t=1000,v0={good_sig}");
        assert_eq!(
            verify(Some(&only_v0), BODY, SECRET, 1_000),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(None, BODY, SECRET, 1_000),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(Some("v1=zz"), BODY, SECRET, 1_000),
            Err(SignatureError::Malformed)
        );
    }
}
