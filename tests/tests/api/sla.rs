//! Contract 3: availability and processing times measured, reported per account and month,
//! and compensation issued by the month's close, once.

use integration_tests::{tasks, TestApp};
use serde_json::{json, Value};
use shared::domain::sla::{minute_of, MINUTE_MS};
use shared::domain::time::month_of;
use shared::ports::{Clock, Faults};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A fault hook that fails ledger reads (a 500, as a broken dependency would) while `on`,
/// and `once` a single time.
fn faults(on: Arc<AtomicBool>, once: Option<&'static str>) -> Faults {
    let fired = Arc::new(AtomicBool::new(false));
    Faults::new(move |p| {
        (p == "ledger.read" && on.load(Ordering::SeqCst))
            || (Some(p) == once && !fired.swap(true, Ordering::SeqCst))
    })
}

/// Moves the clock to one hour into the next month, and returns that month.
fn next_month(app: &TestApp) -> String {
    let now = app.clock.now_ms();
    let (_, end) = shared::service::statements::month_range(&month_of(now)).expect("month");
    app.clock.advance_ms(end - now + 3_600_000);
    month_of(app.clock.now_ms())
}

/// To the start of the next minute.
fn next_minute(app: &TestApp) {
    let now = app.clock.now_ms();
    app.clock.advance_ms(minute_of(now) + MINUTE_MS - now);
}

async fn times(app: &TestApp, n: usize, path: &str, key: &str, status: u16) {
    for _ in 0..n {
        let r = app.get(path, key).await;
        assert_eq!(r.status, status, "{path}: {:?}", r.body);
    }
}

/// The down minutes recomputed the slow way, from the usage log alone.
async fn down_minutes_from_usage(app: &TestApp, account: &str) -> BTreeSet<String> {
    let mut per_minute: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    for u in app.usage_of(account).await {
        if u.kind != "request" {
            continue;
        }
        let m = per_minute.entry(minute_of(u.at_ms)).or_default();
        let client = (400..500).contains(&u.status);
        let outage = u.code.as_deref() == Some("model_unavailable");
        if u.status >= 500 && !outage {
            m.1 += 1;
        }
        if !client && !outage {
            m.0 += 1;
        }
    }
    per_minute
        .into_iter()
        .filter(|(_, (valid, errors))| *errors > 0 && errors * 20 >= *valid)
        .map(|(t, _)| shared::domain::time::rfc3339_ms(t))
        .collect()
}

#[tokio::test]
async fn injected_5xx_minutes_are_the_downtime_and_customer_causes_are_not() {
    let on = Arc::new(AtomicBool::new(false));
    let app = TestApp::spawn_with(faults(on.clone(), None)).await;
    let month = next_month(&app);
    let (acct, key) = app.account_with(10_000).await;
    let ledger = "/v1/credits/ledger";

    // Three minutes in which 4 of 14 requests fail: down.
    for _ in 0..3 {
        next_minute(&app);
        on.store(true, Ordering::SeqCst);
        times(&app, 4, ledger, &key, 500).await;
        on.store(false, Ordering::SeqCst);
        times(&app, 10, "/v1/credits", &key, 200).await;
    }
    // One in which 1 of 31 fails (3.2 %): up.
    next_minute(&app);
    on.store(true, Ordering::SeqCst);
    times(&app, 1, ledger, &key, 500).await;
    on.store(false, Ordering::SeqCst);
    times(&app, 30, "/v1/credits", &key, 200).await;
    // The customer's own errors, then a provider's outage (503 model_unavailable): up.
    next_minute(&app);
    times(&app, 20, "/v1/batches?limit=0", &key, 400).await;
    times(&app, 1, "/v1/credits", &key, 200).await;
    next_minute(&app);
    let r = app
        .send(
            "PUT",
            "/admin/v1/models/sora-2",
            Some(&app.operator),
            Some(
                json!({"status": "unavailable", "reason": "upstream outage"})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    for i in 0..5 {
        let refused = app
            .post(
                "/v1/batches",
                &key,
                &json!({"request_id": format!("o{i}"), "model": "sora-2", "tasks": tasks(10)}),
            )
            .await;
        assert_eq!((refused.status, refused.code()), (503, "model_unavailable"));
    }
    next_minute(&app);

    let r = app.get(&format!("/v1/sla/{month}"), &key).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let a = &r.body["availability"];
    assert_eq!(a["down_minutes"], 3, "{a}");
    let causes: Vec<&Value> = a["downtime"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| &d["causes"][0])
        .collect();
    assert_eq!(
        causes,
        vec![&json!({"cause": "server_errors", "server_errors": 4, "valid": 14}); 3]
    );
    let minutes = a["minutes"].as_u64().unwrap_or_default();
    assert_eq!(
        minutes, 7,
        "seven minutes have passed since the account was opened"
    );
    // 4 of 7 minutes up.
    assert_eq!(a["availability_percent"], "57.1428");
    assert_eq!(a["target_met"], false);
    assert_eq!(r.body["status"], "open");

    // The same minutes, the slow way.
    let listed: BTreeSet<String> = a["downtime"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["minute"].as_str().map(str::to_string))
        .collect();
    assert_eq!(listed, down_minutes_from_usage(&app, &acct).await);

    // Printable, and the operators' views agree.
    let text = app
        .get_text(&format!("/v1/sla/{month}?format=html"), &key)
        .await;
    assert!(
        text.contains("57.1428 %") && text.contains("4 of 14 requests answered 5xx"),
        "{text}"
    );
    let op = app
        .admin_get(&format!("/admin/v1/accounts/{acct}/sla/{month}"))
        .await;
    assert_eq!(op.body["availability"], r.body["availability"]);
    let platform = app.admin_get(&format!("/admin/v1/sla/{month}")).await;
    let line = platform.body["accounts"]
        .as_array()
        .and_then(|l| l.iter().find(|x| x["account_id"] == json!(acct)))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (line["down_minutes"].clone(), line["target_met"].clone()),
        (json!(3), json!(false))
    );

    // A month not over cannot be closed; once over, it closes (nothing charged: nothing due).
    let early = app
        .admin_post(&format!("/admin/v1/sla/{month}/close"), &json!({}))
        .await;
    assert_eq!((early.status, early.code()), (409, "month_not_over"));
    next_month(&app);
    let closed = app
        .admin_post(&format!("/admin/v1/sla/{month}/close"), &json!({}))
        .await;
    assert_eq!(closed.status, 200, "{:?}", closed.body);
    assert_eq!(closed.body["compensated"], 0);
    let r = app.get(&format!("/v1/sla/{month}"), &key).await;
    assert_eq!(r.body["status"], "closed");
    assert_eq!(r.body["compensation"]["issued"]["credits"], 0);
    assert_eq!(r.body["availability"]["down_minutes"], 3);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_month_with_downtime_closes_with_its_compensation_once() {
    let on = Arc::new(AtomicBool::new(false));
    // The first close dies between its transaction and its event.
    let app = TestApp::spawn_with(faults(on.clone(), Some("sla.after_close"))).await;
    let month = next_month(&app);
    let (acct, key) = app.account_with(10_000).await;
    let b = app
        .post(
            "/v1/batches",
            &key,
            &json!({"request_id": "b1", "model": "sora-2", "tasks": tasks(10)}),
        )
        .await;
    assert_eq!(b.status, 201, "{:?}", b.body);
    let unit = b.body["unit_price"].as_i64().unwrap_or_default();
    let batch_id = b.body["id"].as_str().unwrap_or_default().to_string();
    app.drive_to_settlement(&acct, &batch_id, 1_000, 600_000)
        .await;
    let charged = unit * 10;

    // 50 minutes of 5xx: 99.888 % of the 44,580 minutes the account had in its month (opened
    // an hour in), below 99.9 %: 10 %.
    for _ in 0..50 {
        next_minute(&app);
        on.store(true, Ordering::SeqCst);
        times(&app, 1, "/v1/credits/ledger", &key, 500).await;
        on.store(false, Ordering::SeqCst);
    }
    let open = app.get(&format!("/v1/sla/{month}"), &key).await.body;
    let sora = open["processing"]
        .as_array()
        .and_then(|m| m.iter().find(|x| x["model"] == "sora-2"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(sora["tasks"], 10, "{sora}");
    assert_eq!(sora["target_met"], true, "{sora}");
    assert!(
        sora["p95"]["ms"].as_u64().is_some_and(|ms| ms > 0),
        "{sora}"
    );
    assert_eq!(open["compensation"]["charged"], charged);
    // The figures, the slow way: every task's time from its record, the exact quantile
    // (nearest rank) within the bounds the report gives.
    let listed = app
        .get(&format!("/v1/batches/{batch_id}/tasks?limit=100"), &key)
        .await
        .body;
    let ms = |v: &Value| {
        v.as_str()
            .and_then(shared::domain::time::parse_rfc3339_ms)
            .unwrap_or_default()
    };
    let mut times: Vec<i64> = listed["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| ms(&t["ended_at"]) - ms(&t["started_at"]))
        .collect();
    times.sort_unstable();
    assert_eq!(times.len(), 10);
    for (q, name) in [(0.5, "p50"), (0.95, "p95"), (0.99, "p99")] {
        let rank = ((q * times.len() as f64).ceil() as usize).clamp(1, times.len());
        let exact = times[rank - 1].max(1) as u64;
        let f = &sora[name];
        let (low, high) = (
            f["low_ms"].as_u64().unwrap_or_default(),
            f["high_ms"].as_u64().unwrap_or_default(),
        );
        assert!(
            low <= exact && exact <= high,
            "{name}: exact {exact} ms, reported {f}"
        );
    }

    let issued_in = next_month(&app);
    let first = app.close_month(&month).await;
    assert_eq!(first.errors, 1, "the crash: {first:?}");
    // Run again, and twice at once: nothing more is issued.
    let again = app.close_month(&month).await;
    let (x, y) = tokio::join!(app.close_month(&month), app.close_month(&month));
    assert_eq!((again.errors, x.errors, y.errors), (0, 0, 0));
    assert_eq!(
        again.closed + x.closed + y.closed,
        0,
        "closed by the first run"
    );

    let due = charged / 10;
    let entries = app.ledger_entries(&acct, "compensation").await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["amount"], due);
    let report = app.get(&format!("/v1/sla/{month}"), &key).await.body;
    assert_eq!(report["status"], "closed");
    assert_eq!(report["compensation"]["percent"], 10);
    assert_eq!(report["compensation"]["issued"]["credits"], due);
    assert_eq!(
        report["compensation"]["issued"]["ledger_entry"],
        json!(shared::domain::ledger::entry_id(
            entries[0]["seq"].as_u64().unwrap_or_default()
        ))
    );
    assert_eq!(report["availability"]["down_minutes"], 50);
    let (start, end) = shared::service::statements::month_range(&month).expect("month");
    assert_eq!(
        report["availability"]["minutes"],
        (end - start) / MINUTE_MS - 60,
        "the month from the account's opening"
    );
    // The month's statement links its report; the credits arrive in the month of the close.
    let statement = app.get(&format!("/v1/statements/{month}"), &key).await.body;
    assert_eq!(statement["sla_report"], json!(format!("/v1/sla/{month}")));
    let statement = app
        .get(&format!("/v1/statements/{issued_in}"), &key)
        .await
        .body;
    assert_eq!(statement["movements"]["compensation"], due);

    app.run_until_idle().await;
    let issued: Vec<Value> = app
        .events_of(&acct)
        .await
        .into_iter()
        .filter(|e| e["type"] == "sla.compensation_issued")
        .collect();
    assert_eq!(issued.len(), 1, "{issued:?}");
    assert_eq!(issued[0]["data"]["credits"], due);
    assert_eq!(issued[0]["data"]["month"], json!(month));
    app.assert_invariants().await;
}

#[tokio::test]
async fn operators_set_the_sla_terms_and_bad_terms_are_refused() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(0).await;
    let patch = |body: Value| {
        let app = &app;
        let acct = acct.clone();
        async move {
            app.send(
                "PATCH",
                &format!("/admin/v1/accounts/{acct}"),
                Some(&app.operator),
                Some(body.to_string().into_bytes()),
            )
            .await
        }
    };
    let bad = patch(json!({"sla_terms": {"tiers": [{"below_ppm": 990000, "percent": 25}, {"below_ppm": 999000, "percent": 10}]}})).await;
    assert_eq!((bad.status, bad.code()), (422, "invalid_account_terms"));
    let ok = patch(json!({"sla_terms": {"tiers": [{"below_ppm": 999500, "percent": 5}], "latency": {"min_share_ppm": 950000, "percent": 5}}})).await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(ok.body["sla_terms"]["tiers"][0]["below_ppm"], 999_500);
    let month = month_of(app.clock.now_ms());
    let r = app.get(&format!("/v1/sla/{month}"), &key).await;
    assert_eq!(r.body["compensation"]["terms"], ok.body["sla_terms"]);
    let future = app.get("/v1/sla/2999-01", &key).await;
    assert_eq!((future.status, future.code()), (404, "not_found"));
    let junk = app.get("/v1/sla/2026-13", &key).await;
    assert_eq!((junk.status, junk.code()), (404, "not_found"));
}

#[tokio::test]
async fn the_probe_sees_a_stopped_api_as_downtime_for_every_account() {
    let app = TestApp::spawn().await;
    let month = next_month(&app);
    let (_, probe_key) = app.account_with(0).await;
    let (_, key) = app.account_with(0).await;
    // A stopped API: nothing listens where it was.
    let stopped = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    };
    next_minute(&app);
    assert_eq!(app.probe(&app.base, Some(probe_key.clone())).await, None);
    assert_eq!(app.probe(&app.base, Some(probe_key.clone())).await, None);
    next_minute(&app);
    assert_eq!(
        app.probe(&stopped, Some(probe_key.clone()))
            .await
            .as_deref(),
        Some("GET /health: could not connect")
    );
    next_minute(&app);
    // An answer that is not the right one fails the minute too.
    assert_eq!(
        app.probe(
            &app.base,
            Some("vgk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into())
        )
        .await
        .as_deref(),
        Some("GET /v1/credits: status 401")
    );
    next_minute(&app);
    assert_eq!(app.probe(&app.base, Some(probe_key)).await, None);
    next_minute(&app);

    let r = app.get(&format!("/v1/sla/{month}"), &key).await.body;
    let a = &r["availability"];
    assert_eq!(
        (
            a["probe_ok_minutes"].clone(),
            a["probe_failed_minutes"].clone()
        ),
        (json!(2), json!(2)),
        "{a}"
    );
    assert_eq!(a["down_minutes"], 2);
    assert_eq!(
        a["downtime"][0]["causes"][0],
        json!({"cause": "probe_failed", "detail": "GET /health: could not connect"})
    );
    let platform = app.admin_get(&format!("/admin/v1/sla/{month}")).await.body;
    assert_eq!(platform["probe_failed_minutes"], 2);
    assert_eq!(
        platform["probe_failures"][1]["causes"][0]["detail"],
        "GET /v1/credits: status 401"
    );
}

#[tokio::test]
async fn sustained_platform_failures_open_an_incident_that_closes_and_shows_in_the_reports() {
    let on = Arc::new(AtomicBool::new(false));
    let flag = on.clone();
    // The worker dies after taking its slot and before reaching the provider: ours.
    let app = TestApp::spawn_with(Faults::new(move |p| {
        p == "worker.after_claim" && flag.load(Ordering::SeqCst)
    }))
    .await;
    let month = next_month(&app);
    let (_, key) = app.account_with_concurrency(100_000, 25).await;
    let (_, other_key) = app.account_with(0).await;
    on.store(true, Ordering::SeqCst);
    let b = app
        .post(
            "/v1/batches",
            &key,
            &json!({"request_id": "inc", "model": "sora-2", "tasks": tasks(25)}),
        )
        .await;
    assert_eq!(b.status, 201, "{:?}", b.body);
    app.run_until_idle().await;
    // Past sora-2's run deadline the sweeper times them out: platform failures, refunded.
    app.clock.advance_ms(11 * MINUTE_MS);
    let swept = app.sweep().await;
    assert!(swept.timed_out >= 20, "{swept:?}");
    let platform = app.admin_get(&format!("/admin/v1/sla/{month}")).await.body;
    let inc = platform["incidents"][0].clone();
    assert_eq!(inc["ended_at"], Value::Null, "open: {platform}");
    assert_eq!(inc["platform_failures"], swept.timed_out);
    assert_eq!(inc["accounts_affected"], 1);

    // It stays open while failures go on, and closes after a quiet window.
    on.store(false, Ordering::SeqCst);
    app.clock.advance_ms(MINUTE_MS);
    app.sweep().await;
    assert_eq!(
        app.admin_get(&format!("/admin/v1/sla/{month}")).await.body["incidents"][0]["ended_at"],
        Value::Null
    );
    app.clock.advance_ms(15 * MINUTE_MS);
    app.sweep().await;
    let r = app.get(&format!("/v1/sla/{month}"), &key).await.body;
    let mine = &r["incidents"][0];
    assert!(mine["ended_at"].is_string(), "{r}");
    assert_eq!(mine["id"], inc["id"]);
    assert_eq!(mine["account_failures"], swept.timed_out);
    let sora = r["processing"]
        .as_array()
        .and_then(|m| m.iter().find(|x| x["model"] == "sora-2"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(sora["platform_failures"], swept.timed_out, "{sora}");
    assert_eq!(sora["target_met"], false, "{sora}");
    // Another account's report does not carry it.
    let theirs = app.get(&format!("/v1/sla/{month}"), &other_key).await.body;
    assert_eq!(theirs["incidents"], json!([]));
    app.assert_invariants().await;
}
