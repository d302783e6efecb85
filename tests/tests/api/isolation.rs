//! Tenant isolation: another account's ids answer exactly like ids that do not exist.

use integration_tests::{tasks, TestApp};
use serde_json::json;
use shared::ports::Clock;

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
    assert_eq!(app.account(&acct_b).await.balance.value(), 10_000 - 490);
    app.assert_invariants().await;
}

/// Every id-taking `/v1` route, with account B's key on account A's objects, answers exactly
/// as it does for an id that does not exist: same status, same body, byte for byte.
#[tokio::test]
async fn the_cross_tenant_matrix_covers_every_id_taking_route() {
    let app = TestApp::spawn().await;
    let (acct_a, key_a) = app.account_with(10_000).await;
    let (_, key_b) = app.account_with(10_000).await;
    let batch = app
        .post(
            "/v1/batches",
            &key_a,
            &json!({"request_id": "m", "model": "sora-2", "tasks": tasks(10)}),
        )
        .await;
    let batch_id = batch.body["id"].as_str().unwrap_or_default().to_string();
    let file = app
        .post("/v1/files", &key_a, &json!({"request_id": "m"}))
        .await;
    let ep = app
        .post(
            "/v1/webhook-endpoints",
            &key_a,
            &json!({"request_id": "m", "url": "http://127.0.0.1:9/h"}),
        )
        .await;
    let key = app
        .post("/v1/api-keys", &key_a, &json!({"request_id": "m"}))
        .await;
    let export = app
        .post(
            "/v1/exports",
            &key_a,
            &json!({"request_id": "m", "dataset": "ledger"}),
        )
        .await;
    app.run_until_idle().await;
    let events = app.get("/v1/events", &key_a).await;
    let ids =
        |field: &str, v: &serde_json::Value| v[field].as_str().unwrap_or_default().to_string();
    // Billing documents: a pro-forma, the invoice of its wire transfer, the month's summary.
    let profile = json!({"company": "A Co", "address": "1 Road", "billing_email": "ap@a.example",
                         "monthly_invoicing": true});
    let r = app
        .send(
            "PUT",
            "/v1/billing-profile",
            Some(&key_a),
            Some(profile.to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let pf = app
        .post(
            "/v1/proforma-invoices",
            &key_a,
            &json!({"request_id": "m", "pack": "pack_2000"}),
        )
        .await;
    let wire = app
        .admin_post(
            &format!("/admin/v1/accounts/{acct_a}/wire-receipts"),
            &json!({"reference": ids("id", &pf.body), "amount_usd_cents": 200_000}),
        )
        .await;
    assert_eq!(wire.status, 201, "{:?}", wire.body);
    let month = shared::domain::time::month_of(app.clock.now_ms());
    let (_, end) = shared::service::statements::month_range(&month).expect("month");
    app.clock.advance_ms(end - app.clock.now_ms() + 3_600_000);
    assert_eq!(app.close_month(&month).await.invoice_summaries, 1);
    let summaries = app.get("/v1/invoice-summaries", &key_a).await;
    let theirs = [
        (
            "{batch_id}",
            batch_id.clone(),
            "bat_01M87QK0NREPX2ZHGKMMS7YBB3",
        ),
        (
            "{task_id}",
            format!("task_{}_00000", &batch_id[4..]),
            "task_01M87QK0NREPX2ZHGKMMS7YBB3_00000",
        ),
        (
            "{file_id}",
            ids("id", &file.body),
            "file_01M87QK0NREPX2ZHGKMMS7YBB3",
        ),
        (
            "{endpoint_id}",
            ids("id", &ep.body),
            "we_01M87QK0NREPX2ZHGKMMS7YBB3",
        ),
        (
            "{event_id}",
            ids("id", &events.body["data"][0]),
            "evt_01M87QK0NREPX2ZHGKMMS7YBB3_x",
        ),
        (
            "{key_id}",
            ids("id", &key.body),
            "key_01M87QK0NREPX2ZHGKMMS7YBB3",
        ),
        (
            "{export_id}",
            ids("id", &export.body),
            "exp_01M87QK0NREPX2ZHGKMMS7YBB3",
        ),
        (
            "{invoice_id}",
            ids("invoice_id", &wire.body["entry"]),
            "INV-2026-999999",
        ),
        ("{proforma_id}", ids("id", &pf.body), "PF-2026-999999"),
        (
            "{summary_id}",
            ids("id", &summaries.body["data"][0]),
            "MS-2026-999999",
        ),
    ];
    let mut checked = 0;
    for (method, route) in api::ROUTES {
        // `{month}` names a period of the caller's own account, not an object.
        if !route.starts_with("/v1/") || !route.contains('{') || route.contains("{month}") {
            continue;
        }
        let (param, real, missing) = theirs
            .iter()
            .find(|(p, _, _)| route.contains(p))
            .unwrap_or_else(|| panic!("no object for {route}"));
        assert!(!real.is_empty(), "{route}");
        let body = match (*method, *route) {
            ("get" | "delete", _) => None,
            (_, r) if r.ends_with("/cancel") || r.ends_with("/rotate-secret") => {
                Some(json!({"request_id": "x"}))
            }
            (_, r) if r.ends_with("/recover") => Some(json!({"since": "2020-01-01T00:00:00Z"})),
            (_, r) if r.ends_with("/redeliver") => Some(json!({})),
            ("patch", _) => Some(json!({"name": "x"}))
                .filter(|_| route.contains("api-keys"))
                .or(Some(json!({"enabled": true}))),
            _ => Some(json!({})),
        };
        let (app, key_b) = (&app, &key_b);
        let send = |id: &str| {
            let path = route.replace(param, id);
            let body = body.as_ref().map(|b| b.to_string().into_bytes());
            async move {
                app.send(&method.to_uppercase(), &path, Some(key_b), body)
                    .await
            }
        };
        let (a, b) = (send(real).await, send(missing).await);
        assert_eq!(a.status, 404, "{method} {route}: {:?}", a.body);
        assert_eq!(
            a.body, b.body,
            "{method} {route} leaks nothing a missing id would not"
        );
        checked += 1;
    }
    assert!(checked >= 15, "{checked} routes");
    app.assert_invariants().await;
}
