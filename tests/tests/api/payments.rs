//! Card payments through Stripe's webhooks: Credits arrive once per paid checkout session,
//! whatever Stripe retries or reorders, and nothing unsigned moves money.

use integration_tests::{TestApp, STRIPE_TEST_SECRET};
use serde_json::{json, Value};
use shared::domain::stripe::sign;
use shared::ports::Clock;

fn session_event(event_id: &str, kind: &str, session: Value) -> String {
    json!({
        "id": event_id,
        "object": "event",
        "type": kind,
        "data": {"object": session},
    })
    .to_string()
}

fn checkout(id: &str, account: &str, status: &str, metadata: Value, amount: i64) -> Value {
    json!({
        "id": id, "object": "checkout.session", "client_reference_id": account,
        "payment_status": status, "amount_total": amount, "currency": "usd", "metadata": metadata,
    })
}

async fn deliver(app: &TestApp, body: &str, signature: Option<String>) -> integration_tests::Resp {
    let mut req = app
        .http
        .post(format!("{}/webhooks/stripe", app.base))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(s) = signature {
        req = req.header("stripe-signature", s);
    }
    let r = req.send().await.expect("deliver");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.json().await.unwrap_or(Value::Null);
    integration_tests::Resp {
        status,
        headers,
        body,
    }
}

fn signed(app: &TestApp, body: &str) -> Option<String> {
    Some(sign(
        body.as_bytes(),
        STRIPE_TEST_SECRET,
        app.clock.now_ms() / 1_000,
    ))
}

#[tokio::test]
async fn a_paid_checkout_grants_its_pack_once_however_often_stripe_delivers_it() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(0).await;
    let paid = session_event(
        "evt_paid",
        "checkout.session.completed",
        checkout(
            "cs_test_pack",
            &acct,
            "paid",
            json!({"pack": "pack_2000"}),
            200_000,
        ),
    );
    let noise = session_event(
        "evt_other",
        "payment_intent.succeeded",
        json!({"id": "pi_1", "object": "payment_intent"}),
    );
    // Twenty copies at once, interleaved with an event we do not act on.
    let deliveries = (0..20).map(|i| {
        let (app, paid, noise) = (&app, paid.clone(), noise.clone());
        async move {
            let body = if i % 5 == 4 { noise } else { paid };
            deliver(app, &body, signed(app, &body)).await
        }
    });
    let answers = futures_util::future::join_all(deliveries).await;
    let mut outcomes: Vec<String> = answers
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{:?}", r.body);
            r.body["outcome"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    outcomes.sort();
    outcomes.dedup();
    assert!(outcomes.contains(&"granted".to_string()), "{outcomes:?}");
    let grants = app.ledger_entries(&acct, "grant").await;
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(grants[0]["amount"], 227_620);
    assert_eq!(app.account(&acct).await.balance.value(), 227_620);
    // The ledger says how it was paid.
    let entry = &app.get("/v1/credits/ledger?kind=grant", &key).await.body["data"][0];
    assert_eq!(entry["pack"], "pack_2000");
    assert_eq!(entry["actor"], "card", "{entry}");
    assert_eq!(entry["refers_to"], "card:cs_test_pack", "{entry}");
    // A later retry still answers 2xx, and changes nothing.
    let again = deliver(&app, &paid, signed(&app, &paid)).await;
    assert_eq!(again.body["outcome"], "already_granted");
    app.assert_invariants().await;
}

#[tokio::test]
async fn unsigned_stale_or_tampered_events_move_nothing() {
    let app = TestApp::spawn().await;
    let (acct, _) = app.account_with(0).await;
    let body = session_event(
        "evt_x",
        "checkout.session.completed",
        checkout("cs_test_x", &acct, "paid", json!({"kind": "top_up"}), 5_000),
    );
    let stale = Some(sign(
        body.as_bytes(),
        STRIPE_TEST_SECRET,
        app.clock.now_ms() / 1_000 - 301,
    ));
    let other_secret = Some(sign(
        body.as_bytes(),
        "whsec_not_ours",
        app.clock.now_ms() / 1_000,
    ));
    let tampered = body.replace("5000", "500000");
    for (label, b, sig) in [
        ("no signature", body.clone(), None),
        ("stale", body.clone(), stale),
        ("another secret", body.clone(), other_secret),
        ("tampered", tampered, signed(&app, &body)),
    ] {
        let r = deliver(&app, &b, sig).await;
        assert_eq!(
            (r.status, r.code()),
            (400, "invalid_signature"),
            "{label}: {:?}",
            r.body
        );
    }
    assert_eq!(app.account(&acct).await.balance.value(), 0);
    // Signed, but for nothing we sell at that price: refused, nothing moves.
    let wrong_price = session_event(
        "evt_w",
        "checkout.session.completed",
        checkout(
            "cs_test_w",
            &acct,
            "paid",
            json!({"pack": "pack_2000"}),
            100,
        ),
    );
    let r = deliver(&app, &wrong_price, signed(&app, &wrong_price)).await;
    assert_eq!((r.status, r.code()), (422, "invalid_stripe_event"));
    // A top-up that has not paid yet waits for its async success, which grants.
    let pending = checkout(
        "cs_test_async",
        &acct,
        "unpaid",
        json!({"kind": "top_up"}),
        5_000,
    );
    let first = session_event("evt_a1", "checkout.session.completed", pending.clone());
    let r = deliver(&app, &first, signed(&app, &first)).await;
    assert_eq!(r.body["outcome"], "awaiting_payment");
    assert_eq!(app.account(&acct).await.balance.value(), 0);
    let mut paid = pending;
    paid["payment_status"] = json!("paid");
    let later = session_event("evt_a2", "checkout.session.async_payment_succeeded", paid);
    let r = deliver(&app, &later, signed(&app, &later)).await;
    assert_eq!(r.body["outcome"], "granted", "{:?}", r.body);
    assert_eq!(app.account(&acct).await.balance.value(), 5_000);
    let grant = &app.ledger_entries(&acct, "grant").await[0];
    assert_eq!(grant["amount"], 5_000);
    app.assert_invariants().await;
}
