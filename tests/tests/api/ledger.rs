//! The Credits Ledger and grants.

use integration_tests::{tasks, TestApp};
use serde_json::json;

#[tokio::test]
async fn packs_credit_at_once_and_grants_are_idempotent() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(0).await;
    let body = json!({"request_id": "inv-2026-001", "pack": "pack_5000", "reason": "invoice INV-2026-001"});
    let path = format!("/admin/v1/accounts/{acct}/grants");
    let first = app.admin_post(&path, &body).await;
    assert_eq!(
        (first.status, first.replayed()),
        (201, false),
        "{:?}",
        first.body
    );
    assert_eq!(first.body["entry"]["amount"], 628_950);
    assert_eq!(first.body["entry"]["pack"], "pack_5000");
    assert_eq!(first.body["entry"]["price_paid_usd"], "5000.00");
    assert_eq!(first.body["credits"]["balance"], 628_950);
    let again = app.admin_post(&path, &body).await;
    assert_eq!((again.status, again.replayed()), (201, true));
    assert_eq!(again.body, first.body);
    let other = app
        .admin_post(
            &path,
            &json!({"request_id": "inv-2026-001", "pack": "pack_2000", "reason": "x"}),
        )
        .await;
    assert_eq!((other.status, other.code()), (409, "idempotency_conflict"));
    let c = app.get("/v1/credits", &key).await;
    assert_eq!(c.body["balance"], 628_950);
    assert_eq!(c.body["lifetime_granted"], 628_950);
    assert_eq!(c.body["balance_usd"], "6289.50");
    app.assert_invariants().await;
}

#[tokio::test]
async fn ledger_pages_newest_first_with_kind_and_time_filters() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(100_000).await;
    let t0 = shared::ports::Clock::now_ms(&app.clock);
    for i in 0..6 {
        app.clock.advance_ms(1_000);
        let r = app
            .post(
                "/v1/batches",
                &key,
                &json!({"request_id": format!("l-{i}"), "model": "sora-2", "tasks": tasks(10)}),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    // Seven entries: one grant and six pre-deducts, balance_after running exactly.
    let mut seen = Vec::new();
    let mut path = "/v1/credits/ledger?limit=3".to_string();
    loop {
        let p = app.get(&path, &key).await;
        assert_eq!(p.status, 200, "{:?}", p.body);
        seen.extend(p.body["data"].as_array().cloned().unwrap_or_default());
        match p.body["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/credits/ledger?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    let seqs: Vec<i64> = seen
        .iter()
        .map(|e| e["seq"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(seqs, vec![7, 6, 5, 4, 3, 2, 1]);
    let mut balance = 0;
    for e in seen.iter().rev() {
        balance += e["amount"].as_i64().unwrap_or(0);
        assert_eq!(e["balance_after"].as_i64(), Some(balance));
    }
    assert_eq!(balance, app.account(&acct).await.balance.value());

    let grants = app.get("/v1/credits/ledger?kind=grant", &key).await;
    assert_eq!(grants.body["data"].as_array().map(Vec::len), Some(1));
    // Entries at t0+2s .. t0+4s (to is exclusive): the 2nd, 3rd and 4th pre-deducts.
    let from = shared::domain::time::rfc3339_ms(t0 + 2_000);
    let to = shared::domain::time::rfc3339_ms(t0 + 5_000);
    let window = app
        .get(
            &format!("/v1/credits/ledger?kind=pre_deduct&from={from}&to={to}"),
            &key,
        )
        .await;
    let ids: Vec<&str> = window.body["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["request_id"].as_str())
        .collect();
    assert_eq!(ids, vec!["l-3", "l-2", "l-1"]);
    // The operator sees the same ledger.
    let op = app
        .send(
            "GET",
            &format!("/admin/v1/accounts/{acct}/ledger?limit=1"),
            Some(&app.operator),
            None,
        )
        .await;
    assert_eq!(op.body["data"][0]["seq"], 7);
    app.assert_invariants().await;
}
