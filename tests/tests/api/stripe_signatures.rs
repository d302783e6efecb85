//! Stripe-Signature verification (`shared::domain::stripe`) against Stripe's own Node library
//! (`tests/stripe_headers.js`, the package pinned in `infra/node`): headers it makes, we
//! accept or refuse as Stripe documents; headers we make, it accepts.

use serde_json::{json, Value};
use shared::domain::stripe::{sign, verify, SignatureError};

/// Runs the library: headers for `sign` cases, verdicts for `verify` cases.
fn library(sign: Value, verify: Value) -> (Vec<String>, Vec<String>) {
    use std::io::Write;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut child = std::process::Command::new("node")
        .arg(root.join("tests/stripe_headers.js"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run node (install with scripts/setup.sh)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(
            json!({"sign": sign, "verify": verify})
                .to_string()
                .as_bytes(),
        )
        .expect("write cases");
    let out = child.wait_with_output().expect("library output");
    assert!(out.status.success(), "the library failed: {out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let list = |k: &str| -> Vec<String> {
        v[k].as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    };
    (list("headers"), list("verdicts"))
}

#[test]
fn headers_from_stripes_library_verify_and_tampering_is_refused() {
    let secret = "whsec_4eC39HqLyjWDarjtT1zdp7dc";
    let body = r#"{"id":"evt_1Q","object":"event","type":"checkout.session.completed","data":{"object":{"id":"cs_test_1","client_reference_id":"acct_1","payment_status":"paid","metadata":{"pack":"pack_2000","公司":"上海影业"}}}}"#;
    let t = 1_795_000_000;
    let (headers, _) = library(
        json!([
            {"payload": body, "secret": secret, "timestamp": t},
            {"payload": body, "secret": "whsec_rolled_new", "timestamp": t},
        ]),
        json!([]),
    );
    let h = &headers[0];
    let b = body.as_bytes();
    assert_eq!(verify(Some(h), b, secret, t), Ok(t));
    assert_eq!(
        verify(Some(h), b, secret, t + 300),
        Ok(t),
        "within five minutes"
    );
    assert_eq!(
        verify(Some(h), b, secret, t + 301),
        Err(SignatureError::OutsideTolerance { age_secs: 301 })
    );
    let tampered = body.replace("pack_2000", "pack_9000");
    assert_eq!(
        verify(Some(h), tampered.as_bytes(), secret, t),
        Err(SignatureError::NoMatch)
    );
    assert_eq!(
        verify(Some(h), b, "whsec_wrong", t),
        Err(SignatureError::NoMatch)
    );
    // During a secret roll Stripe signs with both: the second v1 matches the new secret.
    let new_sig = headers[1]
        .split_once(",v1=")
        .map(|(_, s)| s)
        .unwrap_or_default();
    let both = format!("{h},v1={new_sig}");
    assert_eq!(verify(Some(&both), b, "whsec_rolled_new", t), Ok(t));
    assert_eq!(verify(Some(&both), b, secret, t), Ok(t));
}

#[test]
fn headers_we_make_are_accepted_by_stripes_library_and_only_for_their_body() {
    let secret = "whsec_fake_stripe_local";
    let body = r#"{"id":"evt_2","object":"event","type":"charge.refunded"}"#;
    let t = 1_795_000_000;
    let h = sign(body.as_bytes(), secret, t);
    let (_, verdicts) = library(
        json!([]),
        json!([
            {"payload": body, "header": h, "secret": secret, "now": t},
            {"payload": body.replace("refunded", "captured"), "header": h, "secret": secret, "now": t},
            {"payload": body, "header": h, "secret": secret, "now": t + 301},
        ]),
    );
    assert_eq!(verdicts[0], "ok");
    assert!(
        verdicts[1].contains("SignatureVerification"),
        "{verdicts:?}"
    );
    assert!(verdicts[2].contains("tolerance"), "{verdicts:?}");
}
