//! Webhooks end to end: endpoints over the API, events from the real producers, the dispatch
//! handler fed by the SQS pump, real HTTP to a local receiver, a manual clock, and signatures
//! checked by an independent Standard Webhooks implementation.

use integration_tests::receiver::{verify_with_library, Behaviour, Receiver};
use integration_tests::{tasks, TestApp};
use serde_json::{json, Value};
use shared::adapters::providers::simulated::Simulated;

async fn endpoint(app: &TestApp, key: &str, url: &str, types: Option<&[&str]>) -> (String, String) {
    let mut body = json!({"request_id": format!("we-{}", rand::random::<u64>()), "url": url});
    if let Some(t) = types {
        body["event_types"] = json!(t);
    }
    let r = app.post("/v1/webhook-endpoints", key, &body).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let secret = r.body["secret"].as_str().unwrap_or_default().to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    (
        r.body["id"].as_str().unwrap_or_default().to_string(),
        secret,
    )
}

fn now_secs(app: &TestApp) -> i64 {
    use shared::ports::Clock;
    app.clock.now_ms() / 1_000
}

async fn deliveries(app: &TestApp, key: &str, ep: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/v1/webhook-endpoints/{ep}/deliveries"), key)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["data"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn deliveries_are_signed_so_the_standard_library_accepts_them_and_nothing_else() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(0).await;
    let all = Receiver::start(Behaviour::Ok).await;
    let only_batches = Receiver::start(Behaviour::Ok).await;
    let (_, secret) = endpoint(&app, &key, &all.url, None).await;
    endpoint(&app, &key, &only_batches.url, Some(&["batch.completed"])).await;

    app.grant(&acct, 5_000).await;
    app.run_until_idle().await;
    let got = all.received();
    assert_eq!(got.len(), 1);
    assert_eq!(only_batches.count(), 0, "not subscribed to credits.granted");
    let r = &got[0];
    let body = r.json();
    assert_eq!(body["type"], "credits.granted");
    assert_eq!(body["data"]["amount"], 5_000);
    assert_eq!(r.header("webhook-id"), body["id"].as_str().unwrap_or("?"));
    assert_eq!(r.header("content-type"), "application/json");
    assert!(r.header("webhook-signature").starts_with("v1,"));
    let ts: i64 = r.header("webhook-timestamp").parse().unwrap_or(0);
    assert_eq!(ts, now_secs(&app));

    let mut tampered = r.clone();
    tampered.body = tampered.body.replace("5000", "500000");
    let mut other_id = r.clone();
    other_id
        .headers
        .insert("webhook-id".into(), "evt_someone_else".into());
    let wrong = shared::domain::webhook::secret_from([9; 32]);
    let verdicts = verify_with_library(
        &[
            (&secret, r),
            (&secret, &tampered),
            (&wrong, r),
            (&secret, &other_id),
        ],
        now_secs(&app),
    );
    assert_eq!(verdicts[0], "ok");
    for v in &verdicts[1..] {
        assert!(v.contains("No matching signature"), "{v}");
    }
    // Replayed an hour later, the same delivery is stale.
    let stale = verify_with_library(&[(&secret, r)], now_secs(&app) + 3_600);
    assert!(stale[0].contains("too old"), "{stale:?}");

    // The event log has it, byte for byte what was sent.
    let listed = app.get("/v1/events?type=credits.granted", &key).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["data"][0], body);
    let one = app
        .get(
            &format!("/v1/events/{}", body["id"].as_str().unwrap_or("")),
            &key,
        )
        .await;
    assert_eq!(one.body, body);
}

#[tokio::test]
async fn a_failing_receiver_gets_each_retry_when_the_schedule_says_with_one_webhook_id() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(0).await;
    let rx = Receiver::start(Behaviour::FailFirst { n: 3, status: 500 }).await;
    let (ep, _) = endpoint(&app, &key, &rx.url, None).await;
    app.grant(&acct, 100).await;
    app.run_until_idle().await;
    assert_eq!(rx.count(), 1);
    let failing = app.get(&format!("/v1/webhook-endpoints/{ep}"), &key).await;
    assert!(failing.body["failing_since"].is_string());

    // The schedule after attempt 1: 5 s, then 5 min, then 30 min. One second early, nothing.
    for (wait_ms, expected) in [(5_000, 2), (300_000, 3), (1_800_000, 4)] {
        app.clock.advance_ms(wait_ms - 1_000);
        app.run_until_idle().await;
        assert_eq!(rx.count(), expected - 1, "not before the schedule says");
        app.clock.advance_ms(1_000);
        app.run_until_idle().await;
        assert_eq!(rx.count(), expected, "attempt {expected} on time");
    }
    let got = rx.received();
    let id = got[0].header("webhook-id").to_string();
    assert!(got.iter().all(|r| r.header("webhook-id") == id));
    assert!(got.iter().all(|r| r.body == got[0].body), "byte-identical");

    let log = deliveries(&app, &key, &ep).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["status"], "succeeded");
    let attempts = log[0]["attempts"].as_array().cloned().unwrap_or_default();
    let codes: Vec<_> = attempts.iter().map(|a| a["status_code"].clone()).collect();
    assert_eq!(codes, vec![json!(200), json!(500), json!(500), json!(500)]);
    assert!(attempts[1]["response_body"]
        .as_str()
        .unwrap_or("")
        .contains("failing on purpose"));
    let healthy = app.get(&format!("/v1/webhook-endpoints/{ep}"), &key).await;
    assert!(healthy.body["failing_since"].is_null());
    assert!(healthy.body["last_success_at"].is_string());
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(0).await;
    let rx = Receiver::start(Behaviour::BusyOnce {
        status: 429,
        secs: 60,
    })
    .await;
    endpoint(&app, &key, &rx.url, None).await;
    app.grant(&acct, 100).await;
    app.run_until_idle().await;
    app.clock.advance_ms(59_000);
    app.run_until_idle().await;
    assert_eq!(
        rx.count(),
        1,
        "the schedule's 5 s gave way to Retry-After: 60"
    );
    app.clock.advance_ms(1_000);
    app.run_until_idle().await;
    assert_eq!(rx.count(), 2);
}

#[tokio::test]
async fn an_endpoint_down_for_a_whole_batch_changes_nothing_about_refunds() {
    let app = TestApp::spawn_sim(Simulated {
        seed: 11,
        latency_ms: 4_000,
        // Twenty tasks at one in two: all succeeding would take a one-in-a-million draw.
        fail_rate: 0.5,
        reject_rate: 0.0,
        throttle_rate: 0.0,
        outage: false,
    })
    .await;
    let (acct, key) = app.account_with(10_000).await;
    let rx = Receiver::start(Behaviour::Always(503)).await;
    let (ep, _) = endpoint(&app, &key, &rx.url, None).await;
    let r = app
        .post(
            "/v1/batches",
            &key,
            &json!({"request_id": "down-1", "model": "sora-2", "tasks": tasks(20)}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let batch = r.body["id"].as_str().unwrap_or_default().to_string();
    app.drive_to_settlement(&acct, &batch, 5_000, 600_000).await;
    let b = app.get(&format!("/v1/batches/{batch}"), &key).await.body;
    let failed = b["counts"]["failed"].as_u64().unwrap_or(0);
    assert!(failed > 0, "the seed fails some tasks");
    // Every refund is in the ledger although not one delivery has succeeded.
    assert_eq!(
        app.ledger_entries(&acct, "refund").await.len() as u64,
        failed
    );
    assert!(rx.count() >= 21, "every task and the batch were attempted");
    app.assert_invariants().await;
    let log = deliveries(&app, &key, &ep).await;
    assert!(log.iter().all(|d| d["status"] == "pending"));
    let refunds: Vec<_> = app
        .events_of(&acct)
        .await
        .into_iter()
        .filter(|e| e["type"] == "credits.refunded")
        .collect();
    assert_eq!(refunds.len() as u64, failed);

    // The receiver comes back: the next attempts deliver everything.
    rx.set(Behaviour::Ok);
    app.clock.advance_ms(400_000);
    app.run_until_idle().await;
    let log = deliveries(&app, &key, &ep).await;
    assert!(!log.is_empty() && log.iter().all(|d| d["status"] == "succeeded"));
}

#[tokio::test]
async fn during_a_rotation_both_secrets_verify_and_after_it_only_the_new() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(0).await;
    let rx = Receiver::start(Behaviour::Ok).await;
    let (ep, old) = endpoint(&app, &key, &rx.url, None).await;
    let path = format!("/v1/webhook-endpoints/{ep}/rotate-secret");
    let r = app.post(&path, &key, &json!({"request_id": "rot-1"})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let new = r.body["secret"].as_str().unwrap_or_default().to_string();
    assert_ne!(new, old);
    assert!(r.body["previous_secret_retires_at"].is_string());
    // A replay is the same rotation, but a secret is shown once: not in the replay.
    let again = app.post(&path, &key, &json!({"request_id": "rot-1"})).await;
    assert!(again.replayed());
    assert_eq!((again.status, &again.body["id"]), (200, &r.body["id"]));
    assert!(again.body.get("secret").is_none(), "{:?}", again.body);

    app.grant(&acct, 100).await;
    app.run_until_idle().await;
    let during = rx.received().pop().expect("delivered");
    assert_eq!(during.header("webhook-signature").split(' ').count(), 2);
    let v = verify_with_library(&[(&old, &during), (&new, &during)], now_secs(&app));
    assert_eq!(v, vec!["ok", "ok"]);

    app.clock.advance_ms(24 * 3_600_000);
    app.grant(&acct, 100).await;
    app.run_until_idle().await;
    let after = rx.received().pop().expect("delivered");
    assert_eq!(after.header("webhook-signature").split(' ').count(), 1);
    let v = verify_with_library(&[(&old, &after), (&new, &after)], now_secs(&app));
    assert!(v[0].contains("No matching signature"), "{v:?}");
    assert_eq!(v[1], "ok");
    let shown = app.get(&format!("/v1/webhook-endpoints/{ep}"), &key).await;
    assert!(shown.body["previous_secret_retires_at"].is_null());
    assert!(shown.body.get("secret").is_none(), "never shown again");
    // Creating an endpoint: the secret once, the replay without it.
    let body = json!({"request_id": "second", "url": rx.url});
    let first = app.post("/v1/webhook-endpoints", &key, &body).await;
    assert!(first.body["secret"]
        .as_str()
        .is_some_and(|s| s.starts_with("whsec_")));
    let replay = app.post("/v1/webhook-endpoints", &key, &body).await;
    assert!(replay.replayed());
    assert_eq!(
        (replay.status, &replay.body["id"]),
        (201, &first.body["id"])
    );
    assert!(replay.body.get("secret").is_none(), "{:?}", replay.body);
}

#[tokio::test]
async fn secrets_are_stored_sealed_and_a_dispatch_instance_opens_each_once() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(0).await;
    let rx = Receiver::start(Behaviour::Ok).await;
    let (ep, secret) = endpoint(&app, &key, &rx.url, None).await;

    // What is stored is sealed to this account's endpoint: nothing of the secret shows.
    let stored = app
        .svc
        .endpoints
        .get(&acct, &ep)
        .await
        .expect("read")
        .expect("stored");
    let sealed = &stored.secrets[0].sealed;
    assert!(!sealed.contains(&secret) && !sealed.contains(&secret["whsec_".len()..]));
    let stored_text = format!("{stored:?}");
    assert!(
        !stored_text.contains(&secret["whsec_".len()..]),
        "{stored_text}"
    );

    for n in 1..=4 {
        app.grant(&acct, 100 * n).await;
    }
    app.run_until_idle().await;
    let got = rx.received();
    assert_eq!(got.len(), 4);
    let verdicts = verify_with_library(
        &got.iter().map(|r| (secret.as_str(), r)).collect::<Vec<_>>(),
        now_secs(&app),
    );
    assert!(verdicts.iter().all(|v| v == "ok"), "{verdicts:?}");

    if app.aws_side().is_some() {
        // The API sealed once; dispatch opened once for four deliveries; no other function
        // touched the key.
        let api = app.emulator_operations_of("API").await;
        let dispatch = app.emulator_operations_of("WEBHOOKS").await;
        assert_eq!(api.get("kms.Encrypt"), Some(&1), "{api:?}");
        assert_eq!(api.get("kms.Decrypt"), None, "{api:?}");
        assert_eq!(dispatch.get("kms.Decrypt"), Some(&1), "{dispatch:?}");
        for other in ["WORKER", "SETTLE", "SWEEPER", "EXPORT"] {
            let ops = app.emulator_operations_of(other).await;
            assert!(
                !ops.keys().any(|op| op.starts_with("kms.")),
                "{other}: {ops:?}"
            );
        }
    }
}

#[tokio::test]
async fn the_events_of_one_invocation_read_their_account_and_endpoints_once() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(0).await;
    let rx = Receiver::start(Behaviour::Ok).await;
    endpoint(&app, &key, &rx.url, None).await;
    app.run_until_idle().await;
    let Some(_) = app.aws_side() else {
        return; // the counts are the emulator launcher's
    };
    let before = app.emulator_operations_of("WEBHOOKS").await;
    // Four events of one account, on the queue together: one invocation.
    for n in 1..=4 {
        app.grant(&acct, 100 * n).await;
    }
    app.run_until_idle().await;
    assert_eq!(rx.received().len(), 4, "every event delivered");
    let after = app.emulator_operations_of("WEBHOOKS").await;
    let delta =
        |op: &str| after.get(op).copied().unwrap_or(0) - before.get(op).copied().unwrap_or(0);
    assert_eq!(delta("dynamodb.Query"), 1, "one endpoint list: {after:?}");
    assert_eq!(
        delta("dynamodb.PutItem"),
        8,
        "each event and its delivery stored: {after:?}"
    );
}

#[tokio::test]
async fn in_cloud_mode_private_and_plain_http_urls_are_refused() {
    let app = TestApp::spawn_cloud_webhooks().await;
    let (_, key) = app.account_with(0).await;
    let create = |url: &'static str| {
        let app = &app;
        let key = key.clone();
        async move {
            app.post(
                "/v1/webhook-endpoints",
                &key,
                &json!({"request_id": format!("s-{}", rand::random::<u32>()), "url": url}),
            )
            .await
        }
    };
    let r = create("http://hooks.example.com/x").await;
    assert_eq!((r.status, r.code()), (422, "invalid_webhook_url"));
    for url in [
        "https://127.0.0.1/hook",
        "https://localhost:8443/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.5/hook",
        "https://192.168.1.20/hook",
        "https://[::1]/hook",
        "https://[fd12::1]/hook",
        "https://[::ffff:10.0.0.1]/hook",
        "https://0x7f.1/hook",
        "https://metadata.google.internal/",
        "https://nothing-here.invalid/hook",
    ] {
        let r = create(url).await;
        assert_eq!(
            (r.status, r.code()),
            (422, "webhook_url_forbidden"),
            "{url}: {:?}",
            r.body
        );
    }
    assert_eq!(
        app.get("/v1/webhook-endpoints", &key).await.body["data"],
        json!([])
    );
}

#[tokio::test]
async fn a_slow_receiver_does_not_hold_up_another_endpoint() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(0).await;
    let slow = Receiver::start(Behaviour::Hang).await;
    let fast = Receiver::start(Behaviour::Ok).await;
    // The slow one first: a dispatcher that went one endpoint at a time would reach the
    // fast one only after the slow one's timeout.
    let (slow_ep, _) = endpoint(&app, &key, &slow.url, None).await;
    endpoint(&app, &key, &fast.url, None).await;
    app.grant(&acct, 100).await;
    let check = async {
        slow.wait_for(1).await;
        fast.wait_for(1).await;
        assert_eq!(
            slow.in_flight(),
            1,
            "the fast delivery landed while the slow one hung"
        );
    };
    tokio::join!(app.run_until_idle(), check);
    // The slow one timed out: a failed attempt, retried later.
    let log = deliveries(&app, &key, &slow_ep).await;
    assert_eq!(log[0]["status"], "pending");
    assert_eq!(log[0]["attempts"][0]["error"], "timed out");
    slow.release();
    app.clock.advance_ms(5_000);
    app.run_until_idle().await;
    assert_eq!(
        deliveries(&app, &key, &slow_ep).await[0]["status"],
        "succeeded"
    );
}

#[tokio::test]
async fn one_accounts_slow_receivers_hold_only_its_share_and_the_rest_wait_unattempted() {
    use shared::domain::webhook::DISPATCH_SHARE;
    let share = DISPATCH_SHARE as usize;
    let app = TestApp::spawn().await;
    // Three dispatch instances at once, as Lambda runs them behind the queue.
    app.dispatch_instances
        .store(3, std::sync::atomic::Ordering::Relaxed);
    let (noisy, noisy_key) = app.account_with(0).await;
    let (quiet, quiet_key) = app.account_with(0).await;
    let slow = Receiver::start(Behaviour::Hang).await;
    let fast = Receiver::start(Behaviour::Ok).await;
    let (slow_ep, _) = endpoint(&app, &noisy_key, &slow.url, None).await;
    let (fast_ep, _) = endpoint(&app, &quiet_key, &fast.url, None).await;
    let burst = share * 2 + 5;
    for i in 0..burst {
        app.grant(&noisy, 100 + i as i64).await;
    }
    app.grant(&quiet, 100).await;
    let check = async {
        // The noisy account's share hangs at its receiver; the quiet account's delivery
        // lands meanwhile, and none of the noisy account's other attempts went out.
        slow.wait_for(share).await;
        fast.wait_for(1).await;
        assert_eq!((slow.count(), slow.in_flight()), (share, share));
        slow.release();
    };
    tokio::join!(app.run_until_idle(), check);
    assert_eq!(slow.count(), share, "the rest waited for the share");
    let path = |ep: &str| format!("/v1/webhook-endpoints/{ep}/deliveries?limit=100");
    let log = app.get(&path(&slow_ep), &noisy_key).await;
    let log = log.body["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(log.len(), burst);
    let attempts = |d: &Value| d["attempts"].as_array().map_or(0, Vec::len);
    let done = log.iter().filter(|d| d["status"] == "succeeded").count();
    assert_eq!(done, share);
    // Waiting for the share is not an attempt: the others are pending with none made.
    assert!(log
        .iter()
        .filter(|d| d["status"] == "pending")
        .all(|d| attempts(d) == 0));
    assert_eq!(
        deliveries(&app, &quiet_key, &fast_ep).await[0]["status"],
        "succeeded"
    );

    // They come back when their wait is over, and each goes out once.
    for _ in 0..4 {
        app.clock.advance_ms(10_000);
        app.run_until_idle().await;
    }
    let log = app.get(&path(&slow_ep), &noisy_key).await;
    let log = log.body["data"].as_array().cloned().unwrap_or_default();
    assert!(
        log.iter()
            .all(|d| d["status"] == "succeeded" && attempts(d) == 1),
        "{log:?}"
    );
    assert_eq!(slow.count(), burst);
}

#[tokio::test]
async fn duplicate_events_and_attempt_messages_deliver_once_with_one_id() {
    use shared::service::events::{self, Event};
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(0).await;
    let rx = Receiver::start(Behaviour::FailFirst { n: 1, status: 500 }).await;
    let (ep, _) = endpoint(&app, &key, &rx.url, None).await;
    let first = Event {
        id: "evt_dup_test".into(),
        event_type: "credits.granted".into(),
        created_at: "2026-11-24T10:00:00.000Z".into(),
        account_id: acct.clone(),
        data: json!({"n": 1}),
    };
    // A producer that crashed and ran again re-emits the same id, possibly with other bytes.
    let mut second = first.clone();
    second.data = json!({"n": 2});
    events::emit(&app.svc, std::slice::from_ref(&first))
        .await
        .expect("emit");
    app.run_until_idle().await;
    events::emit(&app.svc, &[second, first.clone()])
        .await
        .expect("emit");
    app.run_until_idle().await;
    assert_eq!(rx.count(), 1, "one delivery for one id");
    // The next attempt's message arrives twice.
    shared::service::webhooks::dispatch::schedule(&app.svc, &acct, &ep, "evt_dup_test", 2, {
        use shared::ports::Clock;
        app.clock.now_ms() + 5_000
    })
    .await
    .expect("schedule");
    app.clock.advance_ms(5_000);
    app.run_until_idle().await;
    let got = rx.received();
    assert_eq!(got.len(), 2, "attempt 2 once");
    assert!(got.iter().all(|r| r.header("webhook-id") == "evt_dup_test"));
    assert!(
        got.iter().all(|r| r.json()["data"]["n"] == 1),
        "the first body"
    );
}

#[tokio::test]
async fn gone_disables_at_once_and_days_of_failure_disable_too_and_the_account_is_told() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(0).await;
    let gone = Receiver::start(Behaviour::Always(410)).await;
    let broken = Receiver::start(Behaviour::Always(500)).await;
    let watcher = Receiver::start(Behaviour::Ok).await;
    let (gone_ep, _) = endpoint(&app, &key, &gone.url, None).await;
    let (broken_ep, _) = endpoint(&app, &key, &broken.url, Some(&["credits.granted"])).await;
    endpoint(
        &app,
        &key,
        &watcher.url,
        Some(&["webhook_endpoint.disabled"]),
    )
    .await;
    app.grant(&acct, 100).await;
    app.run_until_idle().await;
    let g = app
        .get(&format!("/v1/webhook-endpoints/{gone_ep}"), &key)
        .await;
    assert_eq!(
        (g.body["enabled"].clone(), g.body["disabled_reason"].clone()),
        (json!(false), json!("gone"))
    );
    assert_eq!(
        deliveries(&app, &key, &gone_ep).await[0]["status"],
        "failed"
    );

    // Five days of nothing but failures (the first delivery's retries and a later event).
    app.clock.advance_ms(5 * 24 * 3_600_000);
    app.run_until_idle().await;
    let b = app
        .get(&format!("/v1/webhook-endpoints/{broken_ep}"), &key)
        .await;
    assert_eq!(b.body["disabled_reason"], "failing", "{:?}", b.body);
    let told: Vec<Value> = watcher.received().iter().map(|r| r.json()).collect();
    assert_eq!(told.len(), 2, "{told:?}");
    assert!(told
        .iter()
        .all(|e| e["type"] == "webhook_endpoint.disabled"));
    let listed = app
        .get("/v1/events?type=webhook_endpoint.disabled", &key)
        .await;
    assert_eq!(listed.body["data"].as_array().map(Vec::len), Some(2));

    // Disabled endpoints get nothing; redelivery asks for them to be enabled first.
    let before = gone.count();
    app.grant(&acct, 100).await;
    app.run_until_idle().await;
    assert_eq!(gone.count(), before);
    let ev = app.events_of(&acct).await;
    let granted = ev
        .iter()
        .find(|e| e["type"] == "credits.granted")
        .and_then(|e| e["id"].as_str())
        .unwrap_or("")
        .to_string();
    let r = app
        .post(
            &format!("/v1/events/{granted}/redeliver"),
            &key,
            &json!({"endpoint_id": gone_ep}),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "endpoint_disabled"));
}

#[tokio::test]
async fn redeliver_and_recover_resend_failed_deliveries_with_the_same_id() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(0).await;
    let rx = Receiver::start(Behaviour::Always(500)).await;
    let (ep, _) = endpoint(&app, &key, &rx.url, None).await;
    app.grant(&acct, 100).await;
    app.grant(&acct, 200).await;
    app.run_until_idle().await;
    // Through the whole schedule (about 27.6 hours): eight attempts each, then failed.
    for step in shared::domain::webhook::SCHEDULE_SECS.iter().skip(1) {
        app.clock.advance_ms(*step as i64 * 1_000);
        app.run_until_idle().await;
    }
    assert_eq!(rx.count(), 16);
    let log = deliveries(&app, &key, &ep).await;
    assert!(log
        .iter()
        .all(|d| d["status"] == "failed" && d["attempts_made"] == 8));

    rx.set(Behaviour::Ok);
    let event_id = log[0]["event_id"].as_str().unwrap_or("").to_string();
    let r = app
        .post(
            &format!("/v1/events/{event_id}/redeliver"),
            &key,
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body["scheduled"], json!([ep]));
    app.run_until_idle().await;
    assert_eq!(rx.count(), 17);
    let last = rx.received().pop().expect("redelivered");
    assert_eq!(last.header("webhook-id"), event_id);
    let log = deliveries(&app, &key, &ep).await;
    let redelivered = log
        .iter()
        .find(|d| d["event_id"] == event_id.as_str())
        .cloned()
        .unwrap_or_default();
    assert_eq!(redelivered["status"], "succeeded");
    assert_eq!(redelivered["attempts"][0]["trigger"], "redeliver");

    // The other one, by time range.
    let r = app
        .post(
            &format!("/v1/webhook-endpoints/{ep}/recover"),
            &key,
            &json!({"since": "2020-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body["redelivering"], 1);
    app.run_until_idle().await;
    assert_eq!(rx.count(), 18);
    assert!(deliveries(&app, &key, &ep)
        .await
        .iter()
        .all(|d| d["status"] == "succeeded"));
}

#[tokio::test]
async fn endpoints_are_managed_and_validated_and_scoped_to_their_account() {
    let app = TestApp::spawn().await;
    let (_, key) = app.account_with(0).await;
    let (_, other) = app.account_with(0).await;
    let (ep, _) = endpoint(
        &app,
        &key,
        "http://127.0.0.1:9/hook",
        Some(&["task.failed"]),
    )
    .await;

    let path = format!("/v1/webhook-endpoints/{ep}");
    let r = app
        .send(
            "PATCH",
            &path,
            Some(&key),
            Some(
                json!({"enabled": false, "event_types": null, "description": "ops"})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["enabled"], false);
    assert_eq!(r.body["disabled_reason"], "manual");
    assert!(r.body["event_types"].is_null());
    assert_eq!(r.body["description"], "ops");
    let r = app
        .send(
            "PATCH",
            &path,
            Some(&key),
            Some(json!({"enabled": true}).to_string().into_bytes()),
        )
        .await;
    assert!(r.body["disabled_reason"].is_null());

    for (body, code) in [
        (
            json!({"request_id": "b1", "url": "ftp://x.example/"}),
            "invalid_webhook_url",
        ),
        (
            json!({"request_id": "b2", "url": "http://127.0.0.1/", "event_types": ["task.exploded"]}),
            "invalid_event_types",
        ),
        (
            json!({"request_id": "b3", "url": "http://127.0.0.1/", "event_types": []}),
            "invalid_event_types",
        ),
    ] {
        let r = app.post("/v1/webhook-endpoints", &key, &body).await;
        assert_eq!((r.status, r.code()), (422, code), "{body}");
    }
    let r = app
        .post(
            "/v1/webhook-endpoints",
            &key,
            &json!({"url": "http://127.0.0.1/"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));

    // Another account sees nothing of it, exactly as if it did not exist.
    let missing = "we_0000000000000000000000000Z";
    for (method, p) in [
        ("GET", path.clone()),
        ("PATCH", path.clone()),
        ("DELETE", path.clone()),
        ("GET", format!("{path}/deliveries")),
        ("POST", format!("{path}/rotate-secret")),
        ("POST", format!("{path}/recover")),
    ] {
        let body = match method {
            "GET" | "DELETE" => None,
            _ if p.ends_with("recover") => Some(
                json!({"since": "2026-01-01T00:00:00Z"})
                    .to_string()
                    .into_bytes(),
            ),
            _ if p.ends_with("rotate-secret") => {
                Some(json!({"request_id": "x"}).to_string().into_bytes())
            }
            _ => Some(json!({"enabled": false}).to_string().into_bytes()),
        };
        let theirs = app.send(method, &p, Some(&other), body.clone()).await;
        let none = app
            .send(method, &p.replace(&ep, missing), Some(&key), body)
            .await;
        assert_eq!(theirs.status, 404, "{method} {p}");
        assert_eq!(
            theirs.body, none.body,
            "{method} {p}: same answer as a missing id"
        );
    }
    assert_eq!(
        app.get("/v1/webhook-endpoints", &other).await.body["data"],
        json!([])
    );

    let r = app.send("DELETE", &path, Some(&key), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(app.get(&path, &key).await.status, 404);
}

#[tokio::test]
async fn low_balance_is_announced_once_when_a_hold_crosses_the_threshold() {
    let app = TestApp::spawn().await;
    let (_, key) = app.account_with(1_000).await;
    let r = app
        .send(
            "PATCH",
            "/v1/account",
            Some(&key),
            Some(
                json!({"low_balance_threshold": 600})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["low_balance_threshold"], 600);
    let rx = Receiver::start(Behaviour::Ok).await;
    endpoint(&app, &key, &rx.url, Some(&["credits.low_balance"])).await;
    for i in 0..2 {
        let r = app
            .post(
                "/v1/batches",
                &key,
                &json!({"request_id": format!("lb-{i}"), "model": "sora-2", "tasks": tasks(10)}),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        app.run_until_idle().await;
    }
    // 1,000 -> 510 crosses 600; 510 -> 20 is already below.
    let got = rx.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["data"]["balance"], 510);
    assert_eq!(got[0].json()["data"]["low_balance_threshold"], 600);
}

#[tokio::test]
async fn a_crash_between_any_two_dispatch_writes_loses_no_delivery() {
    for point in [
        "dispatch.after_event",
        "dispatch.after_claim",
        "dispatch.before_record",
    ] {
        let app = TestApp::spawn_with(integration_tests::fail_once_at(point)).await;
        let (acct, key) = app.account_with(0).await;
        let rx = Receiver::start(Behaviour::Ok).await;
        let (ep, _) = endpoint(&app, &key, &rx.url, None).await;
        app.grant(&acct, 100).await;
        app.run_until_idle().await;
        // A claim whose holder died runs out (timeout + a minute); then it is retaken.
        app.clock.advance_ms(120_000);
        app.run_until_idle().await;
        let got = rx.received();
        // Dying after the POST and before recording it is the one place a receiver can
        // see the same webhook-id twice.
        let most = if point == "dispatch.before_record" {
            2
        } else {
            1
        };
        assert!(
            (1..=most).contains(&got.len()),
            "{point}: {} requests",
            got.len()
        );
        assert!(got
            .iter()
            .all(|r| r.header("webhook-id") == got[0].header("webhook-id")));
        let log = deliveries(&app, &key, &ep).await;
        assert_eq!(log.len(), 1, "{point}");
        assert_eq!(log[0]["status"], "succeeded", "{point}");
        assert_eq!(
            log[0]["attempts"].as_array().map(Vec::len),
            Some(1),
            "{point}"
        );
    }
}

#[tokio::test]
async fn a_worker_dying_after_it_emitted_a_task_event_still_delivers_each_event_once() {
    let app = TestApp::spawn_with(integration_tests::fail_once_at("end.after_events")).await;
    let (acct, key) = app.account_with(10_000).await;
    let rx = Receiver::start(Behaviour::Ok).await;
    endpoint(&app, &key, &rx.url, None).await;
    let r = app
        .post(
            "/v1/batches",
            &key,
            &json!({"request_id": "crash-ev", "model": "sora-2", "tasks": tasks(10)}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let batch = r.body["id"].as_str().unwrap_or_default().to_string();
    app.drive_to_settlement(&acct, &batch, 5_000, 600_000).await;
    app.run_until_idle().await;
    let ids: Vec<String> = rx
        .received()
        .iter()
        .map(|r| r.header("webhook-id").to_string())
        .collect();
    let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(
        ids.len(),
        distinct.len(),
        "no event delivered twice: {ids:?}"
    );
    // Ten tasks, the batch, and the grant that opened the account.
    assert_eq!(ids.len(), 12, "{ids:?}");
    app.assert_invariants().await;
}
