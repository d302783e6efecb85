//! API keys and access security: key management, the per-key rate limit, IP allowlists, the
//! usage log, anomaly throttling, termination.

use integration_tests::{tasks, TestApp};
use serde_json::{json, Value};
use shared::domain::access::{current_window_cap, window_of, WINDOW_MS};
use shared::ports::Clock;

async fn new_key(app: &TestApp, admin: &str, body: Value) -> (String, String) {
    let r = app.post("/v1/api-keys", admin, &body).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    (
        r.body["id"].as_str().unwrap_or_default().to_string(),
        r.body["secret"].as_str().unwrap_or_default().to_string(),
    )
}

async fn patch(app: &TestApp, path: &str, key: &str, body: Value) -> integration_tests::Resp {
    app.send(
        "PATCH",
        path,
        Some(key),
        Some(body.to_string().into_bytes()),
    )
    .await
}

#[tokio::test]
async fn keys_are_managed_shown_once_and_stop_working_at_once() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.account_with(1_000).await;
    let r = app
        .post(
            "/v1/api-keys",
            &admin,
            &json!({"request_id": "k1", "name": "ci", "scopes": ["read"], "rate_limit_per_min": 100}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let secret = r.body["secret"].as_str().unwrap_or_default().to_string();
    let id = r.body["id"].as_str().unwrap_or_default().to_string();
    assert!(secret.starts_with("vgk_") && secret.len() >= 4 + 43);
    assert_eq!(r.body["scopes"], json!(["read"]));
    // The same request_id: the same key, never its secret again.
    let again = app
        .post(
            "/v1/api-keys",
            &admin,
            &json!({"request_id": "k1", "name": "ci", "scopes": ["read"], "rate_limit_per_min": 100}),
        )
        .await;
    assert!(again.replayed());
    assert_eq!(again.body["id"], id.as_str());
    assert!(again.body.get("secret").is_none());
    let listed = app.get("/v1/api-keys", &admin).await;
    let shown = listed.body["data"]
        .as_array()
        .and_then(|d| d.iter().find(|k| k["id"] == id.as_str()).cloned())
        .unwrap_or_default();
    assert!(shown.get("secret").is_none());
    assert!(secret.starts_with(shown["prefix"].as_str().unwrap_or("?")));
    assert!(secret.ends_with(shown["last4"].as_str().unwrap_or("?")));

    // Scopes: a read key reads but cannot spend or manage.
    assert_eq!(app.get("/v1/credits", &secret).await.status, 200);
    let w = app
        .post(
            "/v1/batches",
            &secret,
            &json!({"request_id": "nope", "model": "sora-2", "tasks": tasks(10)}),
        )
        .await;
    assert_eq!((w.status, w.code()), (403, "insufficient_scope"));
    assert_eq!(
        app.get("/v1/api-keys", &secret).await.code(),
        "insufficient_scope"
    );

    // Disabled while requests are in flight: the next request after the change is refused.
    let path = format!("/v1/api-keys/{id}");
    let in_flight = futures_util::future::join_all((0..8).map(|_| app.get("/v1/credits", &secret)));
    let (answers, disabled) = tokio::join!(
        in_flight,
        patch(&app, &path, &admin, json!({"enabled": false}))
    );
    assert_eq!(disabled.status, 200, "{:?}", disabled.body);
    assert!(answers
        .iter()
        .all(|a| a.status == 200 || a.code() == "key_disabled"));
    let after = app.get("/v1/credits", &secret).await;
    assert_eq!((after.status, after.code()), (401, "key_disabled"));
    let back = patch(&app, &path, &admin, json!({"enabled": true})).await;
    assert_eq!(back.body["status"], "active");
    assert_eq!(app.get("/v1/credits", &secret).await.status, 200);

    // Revoked: for good.
    let gone = app.send("DELETE", &path, Some(&admin), None).await;
    assert_eq!(gone.body["status"], "revoked");
    let after = app.get("/v1/credits", &secret).await;
    assert_eq!((after.status, after.code()), (401, "key_revoked"));
    let r = patch(&app, &path, &admin, json!({"enabled": true})).await;
    assert_eq!((r.status, r.code()), (422, "invalid_api_key_settings"));

    // Expired: at its time, not a minute later.
    let expires = shared::domain::time::rfc3339_ms(app.clock.now_ms() + 3_600_000);
    let (_, short) = new_key(
        &app,
        &admin,
        json!({"request_id": "k2", "expires_at": expires}),
    )
    .await;
    assert_eq!(app.get("/v1/credits", &short).await.status, 200);
    app.clock.advance_ms(3_600_000);
    let r = app.get("/v1/credits", &short).await;
    assert_eq!((r.status, r.code()), (401, "key_expired"));

    for (body, code) in [
        (json!({"scopes": ["root"]}), "invalid_api_key_settings"),
        (json!({"scopes": []}), "invalid_api_key_settings"),
        (json!({"rate_limit_per_min": 0}), "invalid_api_key_settings"),
        (
            json!({"ip_allowlist": ["10.0.0.0/33"]}),
            "invalid_api_key_settings",
        ),
        (
            json!({"expires_at": "2001-01-01T00:00:00Z"}),
            "invalid_api_key_settings",
        ),
        (json!({"name": ""}), "invalid_request"),
    ] {
        let r = app.post("/v1/api-keys", &admin, &body).await;
        assert_eq!(r.code(), code, "{body}");
    }
    app.assert_invariants().await;
}

/// Sends `n` requests one after another; returns (successes, the first refusal).
async fn burst(app: &TestApp, key: &str, n: usize) -> (usize, Option<integration_tests::Resp>) {
    let mut ok = 0;
    let mut refused = None;
    for _ in 0..n {
        let r = app.get("/v1/credits", key).await;
        match r.status {
            200 => ok += 1,
            429 => {
                refused.get_or_insert(r);
            }
            other => panic!("unexpected {other}: {:?}", r.body),
        }
    }
    (ok, refused)
}

#[tokio::test]
async fn three_keys_above_their_limits_each_get_exactly_their_own_rate() {
    let app = TestApp::spawn().await;
    let (acct, admin) = app.account_with(10_000).await;
    let limits = [5u32, 10, 20];
    let mut keys = Vec::new();
    for (i, l) in limits.iter().enumerate() {
        let (_, k) = new_key(
            &app,
            &admin,
            json!({"request_id": format!("rl-{i}"), "scopes": ["batches:write"], "rate_limit_per_min": l}),
        )
        .await;
        keys.push(k);
    }
    // One client per key, all at once, each asking for three times its limit.
    let (a, b, c) = tokio::join!(
        burst(&app, &keys[0], 15),
        burst(&app, &keys[1], 30),
        burst(&app, &keys[2], 60)
    );
    for ((ok, refused), limit) in [a, b, c].into_iter().zip(limits) {
        assert_eq!(ok as u32, limit, "exactly the limit within one window");
        let r = refused.expect("refused past the limit");
        assert_eq!(r.code(), "rate_limited");
        let h = |n: &str| {
            r.headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        assert_eq!(h("x-ratelimit-limit"), limit.to_string());
        assert_eq!(h("x-ratelimit-remaining"), "0");
        assert!(h("retry-after").parse::<u64>().unwrap_or(0) >= 1);
        assert!(!h("x-ratelimit-reset").is_empty());
    }

    // A refused request spends nothing and uses up no request_id.
    let batch = json!({"request_id": "limited", "model": "sora-2", "tasks": tasks(10)});
    let r = app.post("/v1/batches", &keys[0], &batch).await;
    assert_eq!(r.code(), "rate_limited");
    assert_eq!(app.account(&acct).await.balance.value(), 10_000);

    // A minute on, the previous minute still weighs in (sliding window).
    app.clock.advance_ms(WINDOW_MS);
    let (_, elapsed) = window_of(app.clock.now_ms());
    let expected = current_window_cap(limits[2], u64::from(limits[2]), elapsed);
    let (ok, _) = burst(&app, &keys[2], 40).await;
    assert_eq!(
        ok as u64, expected,
        "sliding estimate at {elapsed} ms into the window"
    );

    app.clock.advance_ms(2 * WINDOW_MS);
    let r = app.post("/v1/batches", &keys[0], &batch).await;
    assert_eq!((r.status, r.replayed()), (201, false), "{:?}", r.body);
    assert_eq!(app.account(&acct).await.balance.value(), 10_000 - 490);
    app.assert_invariants().await;
}

#[tokio::test]
async fn ip_allowlists_match_v4_and_v6_and_ignore_forwarded_headers() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.account_with(0).await;
    let (_, elsewhere) = new_key(
        &app,
        &admin,
        json!({"request_id": "a1", "ip_allowlist": ["10.0.0.0/8", "2001:db8::/32"]}),
    )
    .await;
    let (_, local4) = new_key(
        &app,
        &admin,
        json!({"request_id": "a2", "ip_allowlist": ["127.0.0.0/8"]}),
    )
    .await;
    let (_, local6) = new_key(
        &app,
        &admin,
        json!({"request_id": "a3", "ip_allowlist": ["::1/128"]}),
    )
    .await;

    let spoofed = app
        .http
        .get(format!("{}/v1/credits", app.base))
        .bearer_auth(&elsewhere)
        .header("x-forwarded-for", "10.1.2.3")
        .header("x-real-ip", "10.1.2.3")
        .send()
        .await
        .expect("request");
    assert_eq!(spoofed.status().as_u16(), 403);
    let body: Value = spoofed.json().await.unwrap_or_default();
    assert_eq!(body["error"]["code"], "ip_not_allowed");
    assert_eq!(app.get("/v1/credits", &local4).await.status, 200);
    assert_eq!(
        app.get("/v1/credits", &local6).await.code(),
        "ip_not_allowed"
    );

    // Over IPv6 loopback the v6 block matches and the v4 one does not.
    if let Some(v6) = &app.base_v6 {
        let get = |key: &str| {
            app.http
                .get(format!("{v6}/v1/credits"))
                .bearer_auth(key.to_string())
                .send()
        };
        assert_eq!(
            get(&local6).await.map(|r| r.status().as_u16()).ok(),
            Some(200)
        );
        assert_eq!(
            get(&local4).await.map(|r| r.status().as_u16()).ok(),
            Some(403)
        );
    }
}

#[tokio::test]
async fn every_call_is_in_the_usage_log_with_its_fields() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(1_000).await;
    assert_eq!(app.get("/v1/credits", &key).await.status, 200);
    assert_eq!(
        app.get("/v1/batches/bat_01M87QK0NREPX2ZHGKMMS7YBB3", &key)
            .await
            .status,
        404
    );
    let bad = app
        .post(
            "/v1/batches",
            &key,
            &json!({"request_id": "u", "model": "nope", "tasks": tasks(10)}),
        )
        .await;
    assert_eq!(bad.status, 422);
    assert_eq!(
        app.get("/v1/credits", "vgk_not_a_real_key").await.status,
        401
    );
    app.assert_usage_logged().await;

    let usage = app.get("/v1/usage?limit=200", &key).await;
    assert_eq!(usage.status, 200, "{:?}", usage.body);
    let rows = usage.body["data"].as_array().cloned().unwrap_or_default();
    let missing = rows
        .iter()
        .find(|u| u["route"] == "/v1/batches/{batch_id}")
        .cloned()
        .unwrap_or_default();
    assert_eq!(missing["status"], 404);
    assert_eq!(missing["code"], "not_found");
    assert_eq!(missing["method"], "GET");
    assert_eq!(missing["source_ip"], "127.0.0.1");
    assert!(missing["key_id"].as_str().unwrap_or("").starts_with("key_"));
    assert!(missing["request_id"]
        .as_str()
        .unwrap_or("")
        .starts_with("req_"));
    assert!(missing["user_agent"].is_string());
    let only_422 = app.get("/v1/usage?status=422", &key).await;
    assert_eq!(only_422.body["data"].as_array().map(Vec::len), Some(1));
    // The unauthenticated call is in the operator's view.
    let anon = app
        .send(
            "GET",
            "/admin/v1/accounts/_unauthenticated/usage",
            Some(&app.operator),
            None,
        )
        .await;
    assert_eq!(anon.body["data"][0]["status"], 401);
    assert!(app.account(&acct).await.balance.value() == 1_000);
}

#[tokio::test]
async fn anomalies_throttle_a_key_or_block_an_address_until_lifted() {
    let app = TestApp::spawn().await;
    let (acct, admin) = app.account_with(0).await;
    let (key_id, key) = new_key(
        &app,
        &admin,
        json!({"request_id": "an", "rate_limit_per_min": 100}),
    )
    .await;
    // Thirty requests for things that do not exist: half or more refused, so throttled.
    for _ in 0..30 {
        assert_eq!(
            app.get("/v1/batches/bat_01M87QK0NREPX2ZHGKMMS7YBB3", &key)
                .await
                .status,
            404
        );
    }
    let shown = app.get(&format!("/v1/api-keys/{key_id}"), &admin).await;
    assert_eq!(
        shown.body["throttle"]["reason"], "error_rate",
        "{:?}",
        shown.body
    );
    assert_eq!(shown.body["throttle"]["limit"], 10);
    let r = app.get("/v1/credits", &key).await;
    assert_eq!(r.code(), "rate_limited", "over the lowered limit");
    let anomalies = app.get("/v1/usage?kind=anomaly", &admin).await;
    assert_eq!(anomalies.body["data"][0]["code"], "error_rate");
    app.run_until_idle().await;
    let ev = app.get("/v1/events?type=api_key.throttled", &admin).await;
    assert_eq!(ev.body["data"][0]["data"]["id"], key_id.as_str());
    // The operator lifts it.
    let lifted = app
        .admin_post(
            &format!("/admin/v1/accounts/{acct}/api-keys/{key_id}/lift-throttle"),
            &json!({}),
        )
        .await;
    assert_eq!(lifted.status, 200, "{:?}", lifted.body);
    assert!(lifted.body["throttle"].is_null());
    assert_eq!(app.get("/v1/credits", &key).await.status, 200);

    // Twenty failed authentications from one address block it, valid keys included.
    for _ in 0..20 {
        assert_eq!(app.get("/v1/credits", "vgk_guessing").await.status, 401);
    }
    let blocked = app.get("/v1/credits", &admin).await;
    assert_eq!((blocked.status, blocked.code()), (403, "ip_blocked"));
    // A block lifts by itself after 15 minutes, or at once when an operator says so.
    let r = app
        .send(
            "DELETE",
            "/admin/v1/ip-blocks/127.0.0.1",
            Some(&app.operator),
            None,
        )
        .await;
    assert_eq!(r.body["was_blocked"], true);
    assert_eq!(app.get("/v1/credits", &admin).await.status, 200);
    for _ in 0..20 {
        app.get("/v1/credits", "vgk_guessing").await;
    }
    assert_eq!(app.get("/v1/credits", &admin).await.code(), "ip_blocked");
    app.clock.advance_ms(15 * 60_000);
    assert_eq!(app.get("/v1/credits", &admin).await.status, 200);
}

#[tokio::test]
async fn termination_disables_keys_and_endpoints_but_running_batches_settle_and_credits_stay() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(10_000).await;
    let ep = app
        .post(
            "/v1/webhook-endpoints",
            &key,
            &json!({"request_id": "t", "url": "http://127.0.0.1:9/hook"}),
        )
        .await;
    let ep_id = ep.body["id"].as_str().unwrap_or_default().to_string();
    let b = app
        .post(
            "/v1/batches",
            &key,
            &json!({"request_id": "t1", "model": "sora-2", "tasks": tasks(10)}),
        )
        .await;
    let batch = b.body["id"].as_str().unwrap_or_default().to_string();
    let t = app
        .admin_post(&format!("/admin/v1/accounts/{acct}/terminate"), &json!({}))
        .await;
    assert_eq!(
        (t.status, t.body["status"].clone()),
        (200, json!("terminated"))
    );
    let r = app.get("/v1/credits", &key).await;
    assert_eq!((r.status, r.code()), (403, "account_terminated"));
    app.drive_to_settlement(&acct, &batch, 5_000, 600_000).await;
    let a = app.account(&acct).await;
    assert_eq!(
        a.balance.value(),
        10_000 - 490,
        "charged for its videos, the rest stays"
    );
    let eps = app.svc.endpoints.list(&acct).await.expect("endpoints");
    assert!(eps
        .iter()
        .all(|e| !e.enabled && e.disabled_reason.as_deref() == Some("account_terminated")));

    let back = app
        .admin_post(&format!("/admin/v1/accounts/{acct}/reinstate"), &json!({}))
        .await;
    assert_eq!(back.body["status"], "active");
    assert_eq!(
        app.get("/v1/credits", &key).await.body["balance"],
        10_000 - 490
    );
    let e = app
        .get(&format!("/v1/webhook-endpoints/{ep_id}"), &key)
        .await;
    assert_eq!(e.body["enabled"], true);
    app.assert_invariants().await;
}

/// Every key carries its own rate limit, so an account cannot mint keys without bound: at
/// most 50 that are not revoked. Revoking one makes room.
#[tokio::test]
async fn an_account_holds_at_most_fifty_live_keys() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.account_with(0).await;
    // The account's first key is one of the fifty.
    let mut last = String::new();
    for i in 1..50 {
        let r = app
            .post(
                "/v1/api-keys",
                &admin,
                &json!({"request_id": format!("k{i}"), "name": format!("key {i}"), "scopes": ["read"]}),
            )
            .await;
        assert_eq!(r.status, 201, "key {i}: {:?}", r.body);
        last = r.body["id"].as_str().unwrap_or_default().to_string();
    }
    let one_more = json!({"request_id": "k50", "name": "one more", "scopes": ["read"]});
    let r = app.post("/v1/api-keys", &admin, &one_more).await;
    assert_eq!(
        (r.status, r.code()),
        (422, "key_limit_reached"),
        "{:?}",
        r.body
    );
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("50"));
    let gone = app
        .send(
            "DELETE",
            &format!("/v1/api-keys/{last}"),
            Some(&admin),
            None,
        )
        .await;
    assert!(gone.status < 300, "{:?}", gone.body);
    let r = app.post("/v1/api-keys", &admin, &one_more).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
}

/// The operator routes face the address rules too: wrong operator credentials count toward
/// a block, and a blocked address cannot reach them, except to lift a block.
#[tokio::test]
async fn operator_routes_count_failures_and_respect_address_blocks() {
    let app = TestApp::spawn().await;
    let (acct, _) = app.account_with(0).await;
    let path = format!("/admin/v1/accounts/{acct}");
    assert_eq!(app.get(&path, &app.operator).await.status, 200);
    for _ in 0..20 {
        assert_eq!(app.get(&path, "not-the-operator-token").await.status, 401);
    }
    let r = app.get(&path, &app.operator).await;
    assert_eq!((r.status, r.code()), (403, "ip_blocked"), "{:?}", r.body);
    let grant = app
        .admin_post(
            &format!("/admin/v1/accounts/{acct}/grants"),
            &json!({"request_id": "g", "amount": 100, "reason": "test"}),
        )
        .await;
    assert_eq!(
        grant.code(),
        "ip_blocked",
        "no credits minted from a blocked address"
    );
    // Lifting the block still works, with the operator credential only.
    let r = app
        .send(
            "DELETE",
            "/admin/v1/ip-blocks/127.0.0.1",
            Some("wrong"),
            None,
        )
        .await;
    assert_eq!(r.status, 401);
    let r = app
        .send(
            "DELETE",
            "/admin/v1/ip-blocks/127.0.0.1",
            Some(&app.operator),
            None,
        )
        .await;
    assert_eq!(r.body["was_blocked"], true, "{:?}", r.body);
    assert_eq!(app.get(&path, &app.operator).await.status, 200);
}

/// Calls without a valid key cost no DynamoDB write: made-up tokens, unknown routes and a
/// blocked address are refused from memory and counted per source and minute, one record
/// each. The one write is the block itself, which every instance reads.
#[tokio::test]
async fn refusing_calls_without_a_valid_key_writes_nothing() {
    use futures_util::StreamExt;
    let app = TestApp::spawn_aws().await;
    let (_, key) = app.account_with(0).await;
    let writes = app.dynamodb_writes().await;
    // Under the address rule's threshold (20 a minute), and routes that do not exist.
    for i in 0..19 {
        let r = app.get("/v1/credits", &format!("vgk_made_up_{i}")).await;
        assert_eq!(r.status, 401);
    }
    for _ in 0..50 {
        assert_eq!(app.get("/v1/no-such-route", &key).await.status, 404);
    }
    assert_eq!(
        app.dynamodb_writes().await,
        writes,
        "no write for nobody's calls"
    );
    // The twentieth failure blocks the address: one conditional write.
    assert_eq!(app.get("/v1/credits", "vgk_made_up_19").await.status, 401);
    assert_eq!(app.dynamodb_writes().await, writes + 1, "the block, once");

    // A flood from the blocked address: refused from memory, no write and no read at all.
    let ops = app.emulator_operations().await;
    let flood: u64 = 10_000;
    let refused = futures_util::stream::iter(0..flood)
        .map(|i| {
            let app = &app;
            async move { app.get("/v1/credits", &format!("vgk_junk_{i}")).await }
        })
        .buffer_unordered(32)
        .filter(|r| std::future::ready(r.status == 403 && r.code() == "ip_blocked"))
        .count()
        .await;
    assert_eq!(refused as u64, flood);
    assert_eq!(
        app.emulator_operations().await,
        ops,
        "{flood} refusals made no AWS request"
    );

    // Once the minute is over, the next call writes the minute's tally: one record.
    app.clock.advance_ms(WINDOW_MS);
    assert_eq!(
        app.get("/v1/credits", "vgk_next_minute").await.code(),
        "ip_blocked"
    );
    assert_eq!(
        app.dynamodb_writes().await,
        writes + 2,
        "the block and one tally"
    );
    let tally: Vec<_> = app
        .usage_of("_unauthenticated")
        .await
        .into_iter()
        .filter(|u| u.kind == "unauthenticated")
        .collect();
    assert_eq!(tally.len(), 1, "{tally:?}");
    assert_eq!(tally[0].count, Some(19 + 50 + 1 + flood));
    assert_eq!(tally[0].source_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        tally[0].status, 401,
        "the first call of the minute is the sample"
    );
    app.assert_usage_logged().await;
}

/// An account's request budget holds over all its keys: minting keys does not multiply it,
/// and one account flooding at 50 times its budget leaves another account untouched.
#[tokio::test]
async fn one_account_flooding_its_budget_leaves_another_untouched() {
    use futures_util::StreamExt;
    let app = TestApp::spawn().await;
    let (noisy, admin) = app.account_with(0).await;
    let (_, quiet) = app.account_with(0).await;
    let budget = 20;
    let r = app
        .send(
            "PATCH",
            &format!("/admin/v1/accounts/{noisy}"),
            Some(&app.operator),
            Some(
                json!({ "request_budget_per_min": budget })
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    assert_eq!(r.body["request_budget_per_min"], budget, "{:?}", r.body);
    // No key may promise more than the account has.
    let r = app
        .post(
            "/v1/api-keys",
            &admin,
            &json!({"request_id": "over", "rate_limit_per_min": budget + 1}),
        )
        .await;
    assert_eq!((r.status, r.code()), (422, "invalid_api_key_settings"));
    let mut keys = vec![admin.clone()];
    for i in 0..3 {
        let body = json!({"request_id": format!("k{i}"), "scopes": ["read"], "rate_limit_per_min": budget});
        keys.push(new_key(&app, &admin, body).await.1);
    }
    // Four keys of 20 each, 1,000 requests: the account gets its budget, not 80 (the four
    // key requests above were already part of it).
    let earlier = 4;
    let flood = 50 * budget as usize;
    let noisy_calls = futures_util::stream::iter(0..flood)
        .map(|i| {
            let (app, key) = (&app, &keys[i % keys.len()]);
            async move { app.get("/v1/credits", key).await }
        })
        .buffer_unordered(16);
    let quiet_calls = futures_util::stream::iter(0..200)
        .map(|_| {
            let (app, key) = (&app, &quiet);
            async move { app.get("/v1/credits", key).await }
        })
        .buffer_unordered(4);
    let (noisy_results, quiet_results) = tokio::join!(
        noisy_calls.collect::<Vec<_>>(),
        quiet_calls.collect::<Vec<_>>()
    );
    let ok = noisy_results.iter().filter(|r| r.status == 200).count();
    assert_eq!(
        ok + earlier,
        budget as usize,
        "the noisy account got exactly its budget"
    );
    let by_account = noisy_results
        .iter()
        .filter(|r| r.status == 429 && r.body["error"]["details"]["applies_to"] == "account")
        .count();
    assert_eq!(
        ok + by_account,
        flood,
        "every other call refused by the budget"
    );
    let refusal = noisy_results
        .iter()
        .find(|r| r.status == 429)
        .expect("a 429");
    assert!(refusal.headers.contains_key("retry-after"));
    assert!(quiet_results.iter().all(|r| r.status == 200));
    assert_eq!(quiet_results.len(), 200);
    app.assert_usage_logged().await;
}

/// An operator exempts a known source (a fuzzer in CI) from address blocks: its failures are
/// still refused, but no block follows; removing the exemption restores the rule.
#[tokio::test]
async fn an_exempt_address_is_refused_but_never_blocked() {
    let app = TestApp::spawn().await;
    let (_, key) = app.account_with(0).await;
    let path = "/admin/v1/ip-block-exemptions";
    let bad = app
        .admin_post(path, &json!({"cidr": "not-an-address", "reason": "x"}))
        .await;
    assert_eq!((bad.status, bad.code()), (400, "invalid_request"));
    let r = app
        .admin_post(
            path,
            &json!({"cidr": "127.0.0.0/8", "reason": "the CI fuzzer"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["data"][0]["cidr"], "127.0.0.0/8");
    for _ in 0..30 {
        assert_eq!(app.get("/v1/credits", "vgk_fuzzed").await.status, 401);
    }
    assert_eq!(
        app.get("/v1/credits", &key).await.status,
        200,
        "not blocked"
    );
    let listed = app.get(path, &app.operator).await;
    assert_eq!(listed.body["data"][0]["reason"], "the CI fuzzer");
    let gone = app
        .send(
            "DELETE",
            &format!("{path}/127.0.0.0%2F8"),
            Some(&app.operator),
            None,
        )
        .await;
    assert_eq!(gone.body["was_exempt"], true, "{:?}", gone.body);
    // The count of this minute already passed the threshold: the next failure blocks.
    assert_eq!(app.get("/v1/credits", "vgk_fuzzed").await.status, 401);
    assert_eq!(app.get("/v1/credits", &key).await.code(), "ip_blocked");
}

/// The anomaly rules look at the account as well as each key: errors spread over many keys,
/// none of them over the line, still throttle the whole account, new keys included.
#[tokio::test]
async fn spreading_errors_over_many_keys_throttles_the_account() {
    let app = TestApp::spawn().await;
    let (acct, admin) = app.account_with(0).await;
    let r = app
        .send(
            "PATCH",
            &format!("/admin/v1/accounts/{acct}"),
            Some(&app.operator),
            Some(
                json!({ "request_budget_per_min": 1_000 })
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let mut keys = Vec::new();
    for i in 0..4 {
        let body = json!({"request_id": format!("k{i}"), "scopes": ["read"]});
        keys.push(new_key(&app, &admin, body).await);
    }
    // Ten requests for things that do not exist per key: no key reaches the rule's 30.
    for (_, key) in &keys {
        for _ in 0..10 {
            let r = app
                .get("/v1/batches/bat_01M87QK0NREPX2ZHGKMMS7YBB3", key)
                .await;
            assert_eq!(r.status, 404);
        }
    }
    for (id, _) in &keys {
        let k = app.get(&format!("/v1/api-keys/{id}"), &admin).await;
        assert!(k.body["throttle"].is_null(), "{:?}", k.body);
    }
    let account = app.get("/v1/account", &admin).await;
    assert_eq!(
        account.body["throttle"]["reason"], "error_rate",
        "{:?}",
        account.body
    );
    assert_eq!(account.body["throttle"]["limit"], 100);
    // A key minted now shares the lowered budget.
    let (_, fresh) = new_key(&app, &admin, json!({"request_id": "fresh"})).await;
    let r = app.get("/v1/credits", &fresh).await;
    assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
    let anomalies = app.get("/v1/usage?kind=anomaly", &admin).await;
    assert_eq!(anomalies.body["data"][0]["route"], "account");
    // The operator lifts it.
    let lifted = app
        .admin_post(
            &format!("/admin/v1/accounts/{acct}/lift-throttle"),
            &json!({}),
        )
        .await;
    assert_eq!(lifted.status, 200, "{:?}", lifted.body);
    assert!(lifted.body["throttle"].is_null());
    let r = app.get("/v1/credits", &fresh).await;
    assert_eq!(r.header("x-ratelimit-limit"), Some("600"));
}
