//! Tenant isolation: another account's ids answer exactly like ids that do not exist.

use integration_tests::{tasks, TestApp};
use serde_json::json;

#[tokio::test]
async fn another_accounts_objects_are_indistinguishable_from_missing_ones() {
    let app = TestApp::spawn().await;
    let (_, key_a) = app.account_with(10_000).await;
    let (acct_b, key_b) = app.account_with(10_000).await;
    let batch = app
        .post(
            "/v1/batches",
            &key_a,
            &json!({"request_id": "mine", "model": "sora-2", "tasks": tasks(10)}),
        )
        .await;
    let batch_id = batch.body["id"].as_str().unwrap_or_default().to_string();
    let file = app
        .post("/v1/files", &key_a, &json!({"request_id": "mine"}))
        .await;
    let file_id = file.body["id"].as_str().unwrap_or_default().to_string();
    let missing_batch = "bat_01M87QK0NREPX2ZHGKMMS7YBB3";
    let missing_file = "file_01M87QK0NREPX2ZHGKMMS7YBB3";

    for (theirs, missing) in [
        (
            format!("/v1/batches/{batch_id}"),
            format!("/v1/batches/{missing_batch}"),
        ),
        (
            format!("/v1/batches/{batch_id}/tasks"),
            format!("/v1/batches/{missing_batch}/tasks"),
        ),
        (
            format!("/v1/files/{file_id}"),
            format!("/v1/files/{missing_file}"),
        ),
    ] {
        let a = app.get(&theirs, &key_b).await;
        let b = app.get(&missing, &key_b).await;
        assert_eq!(a.status, 404, "{theirs}");
        assert_eq!(
            a.body, b.body,
            "{theirs} leaks nothing a missing id would not"
        );
    }
    // B's own request_id space is separate: the same request_id makes B's own batch.
    let r = app
        .post(
            "/v1/batches",
            &key_b,
            &json!({"request_id": "mine", "model": "sora-2", "tasks": tasks(10)}),
        )
        .await;
    assert_eq!((r.status, r.replayed()), (201, false));
    assert_ne!(r.body["id"], batch.body["id"]);
    // B's input file cannot name A's file.
    let r = app
        .post(
            "/v1/batches",
            &key_b,
            &json!({"request_id": "steal", "model": "sora-2", "input_file_id": file_id}),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    // B's lists show only B.
    let list = app.get("/v1/batches", &key_b).await;
    assert_eq!(list.body["data"].as_array().map(Vec::len), Some(1));
    let ledger = app.get("/v1/credits/ledger", &key_b).await;
    for e in ledger.body["data"].as_array().into_iter().flatten() {
        assert_ne!(e["batch_id"], batch.body["id"]);
    }
    assert_eq!(app.account(&acct_b).await.balance, 10_000 - 490);
    app.assert_invariants().await;
}
