use integration_tests::{tasks, TestApp};
use serde_json::json;

#[tokio::test]
async fn a_batch_pre_deducts_count_times_unit_price_in_one_step() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(10_000).await;

    let r = app
        .post("/v1/batches", &key, &json!({"request_id": "b-1", "model": "veo-pro", "tasks": tasks(10), "metadata": {"campaign": "spring"}}))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert!(!r.replayed());
    assert_eq!(r.body["unit_price"], 599);
    assert_eq!(r.body["credits"]["held"], 5_990);
    assert_eq!(r.body["counts"]["total"], 10);
    let batch_id = r.body["id"].as_str().unwrap_or_default().to_string();

    let credits = app.get("/v1/credits", &key).await;
    assert_eq!(credits.body["balance"], 10_000 - 5_990);
    assert_eq!(credits.body["held"], 5_990);

    let ledger = app.get("/v1/credits/ledger", &key).await;
    let newest = &ledger.body["data"][0];
    assert_eq!(newest["kind"], "pre_deduct");
    assert_eq!(newest["amount"], -5_990);
    assert_eq!(newest["balance_after"], 10_000 - 5_990);
    assert_eq!(newest["batch_id"], batch_id.as_str());
    assert_eq!(newest["request_id"], "b-1");

    let got = app.get(&format!("/v1/batches/{batch_id}"), &key).await;
    assert_eq!(got.body["status"], "queued");
    let t = app
        .get(&format!("/v1/batches/{batch_id}/tasks?limit=4"), &key)
        .await;
    assert_eq!(t.body["data"].as_array().map(Vec::len), Some(4));
    assert_eq!(t.body["data"][0]["status"], "queued");
    assert_eq!(t.body["data"][0]["duration_seconds"], 8);
    assert_eq!(t.body["has_more"], true);
    let _ = acct;
    app.assert_invariants().await;
}

#[tokio::test]
async fn two_hundred_concurrent_submissions_never_overdraw() {
    let app = TestApp::spawn().await;
    // Exactly 37 batches of 10 sora-2 videos (490 credits each).
    let (acct, _) = app.account_with(37 * 490).await;
    // 163 answers of 402 within a minute would rightly trip the payment-flood rule and
    // throttle an ordinary key to a tenth of its limit; this key (at the account's whole
    // default budget) keeps 600 a minute, more than the 200 it sends.
    let k = app
        .admin_post(
            &format!("/admin/v1/accounts/{acct}/api-keys"),
            &json!({"name": "burst", "rate_limit_per_min": 6_000}),
        )
        .await;
    let key = k.body["secret"].as_str().expect("secret").to_string();
    let mut handles = Vec::new();
    for i in 0..200 {
        let http = app.http.clone();
        let url = format!("{}/v1/batches", app.base);
        let key = key.clone();
        handles.push(tokio::spawn(async move {
            let body =
                json!({"request_id": format!("c-{i}"), "model": "sora-2", "tasks": tasks(10)});
            let r = http.post(url).bearer_auth(key).json(&body).send().await;
            match r {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let v: serde_json::Value = r.json().await.unwrap_or_default();
                    (
                        status,
                        v["error"]["code"].as_str().unwrap_or("").to_string(),
                    )
                }
                Err(e) => (0, e.to_string()),
            }
        }));
    }
    let mut created = 0;
    let mut refused = 0;
    for h in handles {
        match h.await {
            Ok((201, _)) => created += 1,
            Ok((402, code)) if code == "insufficient_credits" => refused += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!((created, refused), (37, 163));
    let a = app.account(&acct).await;
    assert_eq!(a.balance.value(), 0);
    assert_eq!(a.held.value(), 37 * 490);
    assert_eq!(app.batches_of(&acct).await.len(), 37);
    assert_eq!(app.ledger_entries(&acct, "pre_deduct").await.len(), 37);
    app.assert_invariants().await;
}

#[tokio::test]
async fn fifty_duplicates_of_one_request_make_one_batch() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(100_000).await;
    let body = json!({"request_id": "same-1", "model": "sora-2", "tasks": tasks(12)});
    let mut handles = Vec::new();
    for _ in 0..50 {
        let http = app.http.clone();
        let url = format!("{}/v1/batches", app.base);
        let (key, body) = (key.clone(), body.clone());
        handles.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .ok()?;
            let replayed = r.headers().get("idempotent-replayed")?.to_str().ok()? == "true";
            Some((r.status().as_u16(), replayed, r.text().await.ok()?))
        }));
    }
    let mut bodies = std::collections::HashSet::new();
    let mut originals = 0;
    for h in handles {
        let (status, replayed, text) = h.await.ok().flatten().expect("a response");
        assert_eq!(status, 201, "{text}");
        originals += usize::from(!replayed);
        bodies.insert(text);
    }
    assert_eq!(originals, 1, "exactly one response is the original");
    assert_eq!(bodies.len(), 1, "every duplicate gets the same body");
    assert_eq!(app.batches_of(&acct).await.len(), 1);
    assert_eq!(app.ledger_entries(&acct, "pre_deduct").await.len(), 1);
    assert_eq!(app.account(&acct).await.balance.value(), 100_000 - 12 * 49);

    // Same request_id, same JSON in another key order and spacing: still a replay.
    let reordered = r#"{"tasks": REPLACE, "model":"sora-2",   "request_id":"same-1"}"#
        .replace("REPLACE", &tasks(12).to_string());
    let again = app
        .send(
            "POST",
            "/v1/batches",
            Some(&key),
            Some(reordered.into_bytes()),
        )
        .await;
    assert_eq!((again.status, again.replayed()), (201, true));

    // Same request_id, different body: a conflict, and nothing moves.
    let other = app
        .post(
            "/v1/batches",
            &key,
            &json!({"request_id": "same-1", "model": "sora-2", "tasks": tasks(11)}),
        )
        .await;
    assert_eq!((other.status, other.code()), (409, "idempotency_conflict"));
    assert_eq!(app.batches_of(&acct).await.len(), 1);
    app.assert_invariants().await;
}

#[tokio::test]
async fn insufficient_balance_is_402_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(5_989).await;
    let r = app
        .post(
            "/v1/batches",
            &key,
            &json!({"request_id": "poor", "model": "veo-pro", "tasks": tasks(10)}),
        )
        .await;
    assert_eq!((r.status, r.code()), (402, "insufficient_credits"));
    assert_eq!(r.body["error"]["details"]["needed"], 5_990);
    assert_eq!(r.body["error"]["details"]["balance"], 5_989);
    let a = app.account(&acct).await;
    assert_eq!(
        (a.balance.value(), a.held.value(), a.ledger_seq),
        (5_989, 0, 1)
    );
    assert!(app.batches_of(&acct).await.is_empty());
    // The refused request_id is not burnt: after a top-up the same request succeeds.
    app.grant(&acct, 1).await;
    let r = app
        .post(
            "/v1/batches",
            &key,
            &json!({"request_id": "poor", "model": "veo-pro", "tasks": tasks(10)}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(app.account(&acct).await.balance.value(), 0);
    app.assert_invariants().await;
}

#[tokio::test]
async fn enterprise_minimum_is_per_account_payg_minimum_is_ten() {
    let app = TestApp::spawn().await;
    let (_, payg) = app.account_with(10_000).await;
    let r = app
        .post(
            "/v1/batches",
            &payg,
            &json!({"request_id": "small", "model": "sora-2", "tasks": tasks(9)}),
        )
        .await;
    assert_eq!((r.status, r.code()), (422, "batch_too_small"));

    let e = app
        .admin_post(
            "/admin/v1/accounts",
            &json!({"request_id": "ent", "name": "Big Studio", "plan": "enterprise", "retention_days": 180, "max_concurrency": 64, "min_batch_size": 1}),
        )
        .await;
    assert_eq!(e.status, 201, "{:?}", e.body);
    let id = e.body["id"].as_str().unwrap_or_default().to_string();
    app.grant(&id, 1_000).await;
    let k = app
        .admin_post(&format!("/admin/v1/accounts/{id}/api-keys"), &json!({}))
        .await;
    let ent = k.body["secret"].as_str().unwrap_or_default().to_string();
    let r = app
        .post(
            "/v1/batches",
            &ent,
            &json!({"request_id": "one", "model": "sora-2", "tasks": tasks(1)}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    app.assert_invariants().await;
}

#[tokio::test]
async fn batch_list_pages_newest_first_and_filters_by_status() {
    let app = TestApp::spawn().await;
    let (_, key) = app.account_with(100_000).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = app
            .post(
                "/v1/batches",
                &key,
                &json!({"request_id": format!("p-{i}"), "model": "sora-2", "tasks": tasks(10)}),
            )
            .await;
        assert_eq!(r.status, 201);
        ids.push(r.body["id"].as_str().unwrap_or_default().to_string());
        app.clock.advance_ms(5);
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut path = "/v1/batches?limit=2".to_string();
    loop {
        let page = app.get(&path, &key).await;
        assert_eq!(page.status, 200, "{:?}", page.body);
        for b in page.body["data"].as_array().into_iter().flatten() {
            seen.push(b["id"].as_str().unwrap_or_default().to_string());
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/batches?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let queued = app.get("/v1/batches?status=queued", &key).await;
    assert_eq!(queued.body["data"].as_array().map(Vec::len), Some(5));
    let completed = app.get("/v1/batches?status=completed", &key).await;
    assert_eq!(completed.body["data"].as_array().map(Vec::len), Some(0));
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_request_id_outlives_its_stored_response() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(100_000).await;
    let body = json!({"request_id": "kept-1", "model": "sora-2", "tasks": tasks(10)});
    let first = app.post("/v1/batches", &key, &body).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    let batch_id = first.body["id"].as_str().expect("batch id").to_string();
    let replay = app.post("/v1/batches", &key, &body).await;
    assert_eq!((replay.status, replay.replayed()), (201, true));
    assert_eq!(replay.body, first.body);

    // The account keeps 90 days: 91 days on, the stored response is gone (it holds the
    // customer's batch as it was), the request_id is not.
    app.clock.advance_ms(91 * 86_400_000);
    let late = app.post("/v1/batches", &key, &body).await;
    assert_eq!(
        (late.status, late.code()),
        (409, "idempotency_expired"),
        "{:?}",
        late.body
    );
    assert_eq!(
        late.body["error"]["details"]["resource_id"],
        batch_id.as_str()
    );
    let reused = app
        .post(
            "/v1/batches",
            &key,
            &json!({"request_id": "kept-1", "model": "sora-2", "tasks": tasks(11)}),
        )
        .await;
    assert_eq!(
        (reused.status, reused.code()),
        (409, "idempotency_conflict")
    );
    assert_eq!(app.batches_of(&acct).await.len(), 1, "nothing new was made");
    assert_eq!(app.ledger_entries(&acct, "pre_deduct").await.len(), 1);

    if let Some(aws) = app.aws_side() {
        // As stored: the tombstone has no response; the response's own item expires (TTL)
        // when the account's retention ends.
        let ddb = aws_sdk_dynamodb::Client::new(&aws.sdk);
        let items = ddb
            .query()
            .table_name(&aws.env["REQUESTS_TABLE"])
            .key_condition_expression("account_id = :a")
            .expression_attribute_values(
                ":a",
                aws_sdk_dynamodb::types::AttributeValue::S(acct.clone()),
            )
            .send()
            .await
            .expect("query requests")
            .items
            .unwrap_or_default();
        let key_of = |i: &std::collections::HashMap<
            String,
            aws_sdk_dynamodb::types::AttributeValue,
        >| { i["request_key"].as_s().cloned().unwrap_or_default() };
        let tombstone = items
            .iter()
            .find(|i| key_of(i) == "batch#kept-1")
            .expect("tombstone");
        assert!(!tombstone.contains_key("response") && !tombstone.contains_key("expires_at"));
        let stored = items
            .iter()
            .find(|i| key_of(i) == "batch#kept-1#reply")
            .expect("stored response");
        let created_ms: i64 = tombstone["created_ms"]
            .as_n()
            .expect("n")
            .parse()
            .expect("ms");
        let expires_at: i64 = stored["expires_at"].as_n().expect("n").parse().expect("s");
        assert_eq!(expires_at, (created_ms + 90 * 86_400_000) / 1000);
    }
}
