//! Large batches through an uploaded JSON Lines input file.

use integration_tests::TestApp;
use serde_json::json;

async fn upload(app: &TestApp, key: &str, request_id: &str, content: Vec<u8>) -> String {
    let f = app
        .post(
            "/v1/files",
            key,
            &json!({"request_id": request_id, "purpose": "batch_input"}),
        )
        .await;
    assert_eq!(f.status, 201, "{:?}", f.body);
    let url = f.body["upload_url"]
        .as_str()
        .expect("upload_url")
        .to_string();
    assert!(
        url.contains("X-Amz-Expires=3600"),
        "documented one-hour expiry: {url}"
    );
    assert!(
        url.contains("/files/"),
        "scoped to the account's files: {url}"
    );
    let status = app.upload(&f.body, content).await;
    assert!((200..300).contains(&status), "{status}");
    f.body["id"].as_str().expect("file id").to_string()
}

#[tokio::test]
async fn a_batch_from_an_uploaded_file() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(1_000_000).await;
    let lines: String = (0..1_200)
        .map(|i| json!({"prompt": format!("Timelapse of a city, variant {i} — 東京"), "client_ref": format!("row-{i}")}).to_string() + "\n")
        .collect();
    let file_id = upload(&app, &key, "f-1", lines.into_bytes()).await;
    // The prompts follow the account's retention like its videos: the upload link makes the
    // uploader send the tag the bucket's lifecycle rules delete by.
    let days = app.account(&acct).await.retention_days;
    let tags = app
        .object_tags(&format!("accounts/{acct}/files/{file_id}.jsonl"))
        .await;
    assert_eq!(tags, Some(format!("retention-days={days}")));

    let f = app.get(&format!("/v1/files/{file_id}"), &key).await;
    assert_eq!(f.body["status"], "uploaded");
    assert!(
        f.body.get("upload_url").is_none(),
        "the link is only in the creating response"
    );

    let r = app
        .post(
            "/v1/batches",
            &key,
            &json!({"request_id": "big", "model": "sora-2", "input_file_id": file_id}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["counts"]["total"], 1_200);
    assert_eq!(r.body["credits"]["held"], 1_200 * 49);
    let id = r.body["id"].as_str().unwrap_or_default();
    let page = app
        .get(&format!("/v1/batches/{id}/tasks?limit=1"), &key)
        .await;
    assert_eq!(page.body["data"][0]["client_ref"], "row-0");
    assert_eq!(
        page.body["data"][0]["prompt"],
        "Timelapse of a city, variant 0 — 東京"
    );
    assert_eq!(
        app.account(&acct).await.balance.value(),
        1_000_000 - 1_200 * 49
    );
    app.assert_invariants().await;
}

#[tokio::test]
async fn one_bad_line_rejects_the_file_with_its_number_and_charges_nothing() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(100_000).await;
    let mut lines: Vec<String> = (0..20)
        .map(|i| json!({"prompt": format!("shot {i}")}).to_string())
        .collect();
    lines[13] = json!({"prompt": "shot", "duration_seconds": 5}).to_string();
    let file_id = upload(&app, &key, "f-bad", lines.join("\n").into_bytes()).await;
    let r = app
        .post(
            "/v1/batches",
            &key,
            &json!({"request_id": "bad-file", "model": "sora-2", "input_file_id": file_id}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (422, "invalid_input_file"),
        "{:?}",
        r.body
    );
    assert_eq!(r.body["error"]["details"]["line"], 14);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .starts_with("line 14:"));

    let not_json = upload(
        &app,
        &key,
        "f-nj",
        b"{\"prompt\": \"a\"}\nnot json\n".to_vec(),
    )
    .await;
    let r = app
        .post(
            "/v1/batches",
            &key,
            &json!({"request_id": "nj", "model": "sora-2", "input_file_id": not_json}),
        )
        .await;
    assert_eq!(r.body["error"]["details"]["line"], 2);

    let pending = app
        .post("/v1/files", &key, &json!({"request_id": "f-empty"}))
        .await;
    let pending_id = pending.body["id"].as_str().unwrap_or_default();
    let r = app
        .post(
            "/v1/batches",
            &key,
            &json!({"request_id": "early", "model": "sora-2", "input_file_id": pending_id}),
        )
        .await;
    assert_eq!((r.status, r.code()), (422, "input_file_not_uploaded"));

    let a = app.account(&acct).await;
    assert_eq!((a.balance.value(), a.held.value()), (100_000, 0));
    assert!(app.batches_of(&acct).await.is_empty());
    app.assert_invariants().await;
}

#[tokio::test]
async fn creating_a_file_is_idempotent_too() {
    let app = TestApp::spawn().await;
    let (_, key) = app.account_with(0).await;
    let a = app
        .post("/v1/files", &key, &json!({"request_id": "same-file"}))
        .await;
    let b = app
        .post("/v1/files", &key, &json!({"request_id": "same-file"}))
        .await;
    assert_eq!((a.status, a.replayed()), (201, false));
    assert_eq!((b.status, b.replayed()), (201, true));
    assert_eq!(a.body["id"], b.body["id"]);
    // Two hours on, the first link has expired; a replay hands out a fresh one, and it works.
    app.clock.advance_ms(2 * 3_600_000);
    let late = app
        .post("/v1/files", &key, &json!({"request_id": "same-file"}))
        .await;
    assert_eq!((late.status, late.replayed()), (201, true));
    assert_eq!(late.body["id"], a.body["id"]);
    let (first_until, late_until) = (
        a.body["upload_expires_at"].as_str().expect("expiry"),
        late.body["upload_expires_at"].as_str().expect("expiry"),
    );
    assert!(late_until > first_until, "{late_until} after {first_until}");
    assert_eq!(
        app.upload(&late.body, b"{\"prompt\": \"a kite\"}\n".to_vec())
            .await,
        200
    );
    // Once uploaded, a replay says so and offers no link.
    let done = app
        .post("/v1/files", &key, &json!({"request_id": "same-file"}))
        .await;
    assert_eq!(done.body["status"], "uploaded");
    assert!(done.body["upload_url"].is_null());
    let c = app
        .post(
            "/v1/files",
            &key,
            &json!({"request_id": "same-file", "purpose": "batch_input"}),
        )
        .await;
    assert_eq!((c.status, c.code()), (409, "idempotency_conflict"));
}
