//! Every kind of bad input gets its documented status and code, and writes nothing.

use integration_tests::{tasks, TestApp};
use serde_json::json;

/// (label, method, path, auth, raw body, expected status, expected code)
type Case<'a> = (
    &'a str,
    &'a str,
    String,
    Option<&'a str>,
    Option<Vec<u8>>,
    u16,
    &'a str,
);

#[tokio::test]
async fn bad_inputs_get_documented_errors_and_change_nothing() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(50_000).await;
    let before = app.account(&acct).await;
    let ok_tasks = tasks(10);
    let long_prompt = "x".repeat(4_001);
    let big_metadata: serde_json::Map<String, serde_json::Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();

    let cases: Vec<Case> = vec![
        ("no key", "GET", "/v1/credits".into(), None, None, 401, "unauthorized"),
        ("unknown key", "GET", "/v1/credits".into(), Some("vgk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), None, 401, "unauthorized"),
        ("garbage key", "GET", "/v1/credits".into(), Some("hello"), None, 401, "unauthorized"),
        ("operator token is not a customer key", "GET", "/v1/credits".into(), Some(&app.operator), None, 401, "unauthorized"),
        ("customer key on operator API", "POST", "/admin/v1/accounts".into(), Some(&key), Some(b"{}".to_vec()), 401, "unauthorized"),
        ("malformed JSON", "POST", "/v1/batches".into(), Some(&key), Some(b"{\"request_id\": ".to_vec()), 400, "invalid_json"),
        ("invalid UTF-8", "POST", "/v1/batches".into(), Some(&key), Some(b"{\"request_id\": \"\xff\xfe\"}".to_vec()), 400, "invalid_json"),
        ("not an object", "POST", "/v1/batches".into(), Some(&key), Some(b"[1,2]".to_vec()), 400, "invalid_request"),
        ("empty body (read as {}: names the missing field)", "POST", "/v1/batches".into(), Some(&key), Some(Vec::new()), 400, "invalid_request"),
        ("whitespace is not an empty body", "POST", format!("/admin/v1/accounts/{acct}/api-keys"), Some(&app.operator), Some(b"\r".to_vec()), 400, "invalid_json"),
        ("unknown field", "POST", "/v1/batches".into(), Some(&key), Some(json!({"request_id": "u1", "model": "sora-2", "tasks": ok_tasks, "priority": 1}).to_string().into_bytes()), 400, "invalid_request"),
        ("wrong type", "POST", "/v1/batches".into(), Some(&key), Some(json!({"request_id": 7, "model": "sora-2", "tasks": ok_tasks}).to_string().into_bytes()), 400, "invalid_request"),
        ("missing model", "POST", "/v1/batches".into(), Some(&key), Some(json!({"request_id": "m1", "tasks": ok_tasks}).to_string().into_bytes()), 400, "invalid_request"),
        ("bad request_id", "POST", "/v1/batches".into(), Some(&key), Some(json!({"request_id": "has space", "model": "sora-2", "tasks": ok_tasks}).to_string().into_bytes()), 422, "invalid_request_id"),
        ("empty request_id", "POST", "/v1/batches".into(), Some(&key), Some(json!({"request_id": "", "model": "sora-2", "tasks": ok_tasks}).to_string().into_bytes()), 422, "invalid_request_id"),
        ("unknown model", "POST", "/v1/batches".into(), Some(&key), Some(json!({"request_id": "m2", "model": "sora-3", "tasks": ok_tasks}).to_string().into_bytes()), 422, "unknown_model"),
        ("empty prompt", "POST", "/v1/batches".into(), Some(&key), Some(json!({"request_id": "p1", "model": "sora-2", "tasks": [{"prompt": " "}]}).to_string().into_bytes()), 422, "invalid_task"),
        ("long prompt", "POST", "/v1/batches".into(), Some(&key), Some(json!({"request_id": "p2", "model": "sora-2", "tasks": [{"prompt": long_prompt}]}).to_string().into_bytes()), 422, "invalid_task"),
        ("task not an object", "POST", "/v1/batches".into(), Some(&key), Some(json!({"request_id": "p3", "model": "sora-2", "tasks": ["a cat"]}).to_string().into_bytes()), 422, "invalid_task"),
        ("bad duration", "POST", "/v1/batches".into(), Some(&key), Some(json!({"request_id": "p4", "model": "sora-2", "tasks": [{"prompt": "a", "duration_seconds": 6}]}).to_string().into_bytes()), 422, "invalid_task"),
        ("unknown task field", "POST", "/v1/batches".into(), Some(&key), Some(json!({"request_id": "p5", "model": "sora-2", "tasks": [{"prompt": "a", "style": "noir"}]}).to_string().into_bytes()), 422, "invalid_task"),
        ("too few tasks", "POST", "/v1/batches".into(), Some(&key), Some(json!({"request_id": "s1", "model": "sora-2", "tasks": tasks(9)}).to_string().into_bytes()), 422, "batch_too_small"),
        ("no tasks at all", "POST", "/v1/batches".into(), Some(&key), Some(json!({"request_id": "s2", "model": "sora-2", "tasks": []}).to_string().into_bytes()), 422, "batch_too_small"),
        ("too many tasks", "POST", "/v1/batches".into(), Some(&key), Some(json!({"request_id": "s3", "model": "sora-2", "tasks": tasks(10_001)}).to_string().into_bytes()), 422, "batch_too_large"),
        ("tasks and file", "POST", "/v1/batches".into(), Some(&key), Some(json!({"request_id": "s4", "model": "sora-2", "tasks": ok_tasks, "input_file_id": "file_x"}).to_string().into_bytes()), 400, "invalid_request"),
        ("neither tasks nor file", "POST", "/v1/batches".into(), Some(&key), Some(json!({"request_id": "s5", "model": "sora-2"}).to_string().into_bytes()), 400, "invalid_request"),
        ("unknown file", "POST", "/v1/batches".into(), Some(&key), Some(json!({"request_id": "s6", "model": "sora-2", "input_file_id": "file_01M87QK0NREPX2ZHGKMMS7YBB3"}).to_string().into_bytes()), 404, "not_found"),
        ("too much metadata", "POST", "/v1/batches".into(), Some(&key), Some(json!({"request_id": "s7", "model": "sora-2", "tasks": ok_tasks, "metadata": big_metadata}).to_string().into_bytes()), 422, "invalid_metadata"),
        ("oversized body", "POST", "/v1/batches".into(), Some(&key), Some(vec![b' '; 6 * 1024 * 1024 + 1]), 413, "payload_too_large"),
        ("bad cursor", "GET", "/v1/credits/ledger?cursor=bm90LW91cnM".into(), Some(&key), None, 400, "invalid_cursor"),
        ("garbage cursor", "GET", "/v1/batches?cursor=%%%".into(), Some(&key), None, 400, "invalid_cursor"),
        ("bad limit", "GET", "/v1/batches?limit=0".into(), Some(&key), None, 400, "invalid_parameter"),
        ("unknown query parameter", "GET", "/v1/batches?sort=asc".into(), Some(&key), None, 400, "invalid_parameter"),
        ("bad kind", "GET", "/v1/credits/ledger?kind=gift".into(), Some(&key), None, 400, "invalid_parameter"),
        ("bad time", "GET", "/v1/credits/ledger?from=yesterday".into(), Some(&key), None, 400, "invalid_parameter"),
        ("bad status", "GET", "/v1/batches?status=done".into(), Some(&key), None, 400, "invalid_parameter"),
        ("unknown batch", "GET", "/v1/batches/bat_01M87QK0NREPX2ZHGKMMS7YBB3".into(), Some(&key), None, 404, "not_found"),
        ("malformed batch id", "GET", "/v1/batches/..%2F..%2Fetc".into(), Some(&key), None, 404, "not_found"),
        ("unknown route", "GET", "/v1/nothing".into(), Some(&key), None, 404, "not_found"),
        ("wrong method", "DELETE", "/v1/batches".into(), Some(&key), None, 405, "method_not_allowed"),
        ("grant without amount", "POST", format!("/admin/v1/accounts/{acct}/grants"), Some(&app.operator), Some(json!({"request_id": "g1", "reason": "r"}).to_string().into_bytes()), 422, "invalid_grant"),
        ("negative grant", "POST", format!("/admin/v1/accounts/{acct}/grants"), Some(&app.operator), Some(json!({"request_id": "g2", "amount": -5, "reason": "r"}).to_string().into_bytes()), 422, "invalid_grant"),
        ("unknown pack", "POST", format!("/admin/v1/accounts/{acct}/grants"), Some(&app.operator), Some(json!({"request_id": "g3", "pack": "pack_1", "reason": "r"}).to_string().into_bytes()), 400, "invalid_request"),
        ("bad retention", "POST", "/admin/v1/accounts".into(), Some(&app.operator), Some(json!({"request_id": "a1", "name": "X", "plan": "payg", "retention_days": 60, "max_concurrency": 1}).to_string().into_bytes()), 422, "invalid_account_terms"),
        ("grant to unknown account", "POST", "/admin/v1/accounts/acct_01M87QK0NREPX2ZHGKMMS7YBB3/grants".into(), Some(&app.operator), Some(json!({"request_id": "g4", "amount": 5, "reason": "r"}).to_string().into_bytes()), 404, "not_found"),
    ];
    for (label, method, path, auth, body, status, code) in cases {
        let r = app.send(method, &path, auth, body).await;
        assert_eq!(
            (r.status, r.code()),
            (status, code),
            "{label}: {:?}",
            r.body
        );
        assert!(
            !r.body["error"]["message"].as_str().unwrap_or("").is_empty(),
            "{label}: a human message"
        );
    }
    let after = app.account(&acct).await;
    assert_eq!(
        (after.balance.value(), after.held.value(), after.ledger_seq),
        (
            before.balance.value(),
            before.held.value(),
            before.ledger_seq
        )
    );
    assert!(app.batches_of(&acct).await.is_empty());
    app.assert_invariants().await;
}

/// A `null` is refused wherever the API document does not allow it, rather than read as
/// "absent"; where the document allows it, it means what the document says.
#[tokio::test]
async fn null_is_refused_where_the_document_does_not_allow_it() {
    let app = TestApp::spawn().await;
    let (_, key) = app.account_with(0).await;
    for (path, body) in [
        (
            "/v1/exports",
            json!({"request_id": "e", "dataset": "ledger", "to": null}),
        ),
        ("/v1/files", json!({"request_id": "f", "purpose": null})),
        ("/v1/api-keys", json!({"request_id": "k", "name": null})),
    ] {
        let r = app.post(path, &key, &body).await;
        assert_eq!(
            (r.status, r.code()),
            (400, "invalid_request"),
            "{path}: {:?}",
            r.body
        );
        assert!(r.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("may not be null"));
    }
    let r = app
        .send(
            "PATCH",
            "/v1/account",
            Some(&key),
            Some(
                json!({"low_balance_threshold": null})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(app.get("/v1/exports", &key).await.body["data"]
        .as_array()
        .is_some_and(Vec::is_empty));
}
