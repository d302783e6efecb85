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

/// Text of a PDF as poppler's `pdftotext` reads it (an independent reader of what we wrote).
fn pdftotext(pdf: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("pdftotext")
        .args(["-layout", "-enc", "UTF-8", "-", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("pdftotext (poppler-utils; scripts/setup.sh installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(pdf)
        .expect("write pdf");
    let out = child.wait_with_output().expect("pdftotext output");
    assert!(out.status.success(), "pdftotext failed on our PDF");
    String::from_utf8(out.stdout).expect("utf-8")
}

async fn paid_pack(
    app: &TestApp,
    acct: &str,
    session: &str,
    metadata: Value,
    amount: i64,
) -> Value {
    let body = session_event(
        &format!("evt_{session}"),
        "checkout.session.completed",
        checkout(session, acct, "paid", metadata, amount),
    );
    deliver(app, &body, signed(app, &body)).await.body
}

#[tokio::test]
async fn a_paid_purchase_is_invoiced_to_the_billing_profile_and_reads_back_as_pdf_and_json() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(0).await;
    let put = |body: Value| {
        let (app, key) = (&app, key.clone());
        async move {
            app.send(
                "PUT",
                "/v1/billing-profile",
                Some(&key),
                Some(body.to_string().into_bytes()),
            )
            .await
        }
    };
    let r = app.get("/v1/billing-profile", &key).await;
    assert_eq!((r.status, &r.body["billing_profile"]), (200, &Value::Null));
    let r = put(json!({"company": "Co", "address": "x", "billing_email": "nope"})).await;
    assert_eq!(
        (r.status, r.code()),
        (422, "invalid_billing_profile"),
        "{:?}",
        r.body
    );
    let r = put(json!({
        "company": "北京视界科技有限公司", "tax_id": "91110105MA01XYZ12Q",
        "address": "北京市朝阳区建国路 88 号\n100022", "billing_email": "finance@example.cn",
    }))
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // pack_5000 at a 6 % tax rate: US$5,000.00 + US$300.00.
    let ack = paid_pack(
        &app,
        &acct,
        "cs_test_inv",
        json!({"pack": "pack_5000", "tax_rate_bp": "600"}),
        530_000,
    )
    .await;
    assert_eq!(ack["outcome"], "granted", "{ack}");
    let entry = &app.get("/v1/credits/ledger?kind=grant", &key).await.body["data"][0];
    assert_eq!(entry["paid_by"], "card", "{entry}");
    let number = entry["invoice_id"].as_str().unwrap_or_default().to_string();
    assert!(number.starts_with("INV-"), "{entry}");

    let list = app.get("/v1/invoices", &key).await.body;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1), "{list}");
    let inv = app.get(&format!("/v1/invoices/{number}"), &key).await;
    assert_eq!(inv.status, 200, "{:?}", inv.body);
    let b = &inv.body;
    assert_eq!(
        (
            &b["subtotal_usd"],
            &b["tax_rate_percent"],
            &b["tax_usd"],
            &b["total_usd"]
        ),
        (
            &json!("5000.00"),
            &json!("6.00"),
            &json!("300.00"),
            &json!("5300.00")
        ),
        "{b}"
    );
    assert_eq!(b["customer"]["company"], "北京视界科技有限公司");
    assert_eq!(b["lines"][0]["credits"], 628_950);
    assert_eq!(b["payment"]["reference"], "cs_test_inv");
    assert_eq!(b["ledger_entry_id"], entry["id"]);

    let pdf = app
        .download(b["pdf"]["url"].as_str().unwrap_or_default())
        .await;
    assert!(pdf.starts_with(b"%PDF-"), "not a PDF");
    // The subset holds the glyphs used, not the 19 MB face.
    assert!(pdf.len() < 200_000, "{} bytes", pdf.len());
    let text = pdftotext(&pdf);
    for needle in [
        number.as_str(),
        "北京视界科技有限公司",
        "北京市朝阳区建国路 88 号",
        "91110105MA01XYZ12Q",
        "628950",
        "5,300.00",
        "6.00 %",
        "cs_test_inv",
    ] {
        assert!(
            text.contains(needle),
            "{needle:?} not in the PDF's text:\n{text}"
        );
    }
    let json_doc: Value = serde_json::from_slice(
        &app.download(b["json"]["url"].as_str().unwrap_or_default())
            .await,
    )
    .expect("the JSON document");
    assert_eq!(json_doc["id"], number.as_str());
    assert_eq!(json_doc["total_usd"], "5300.00");

    // The statement lists the invoice; the event says it was issued.
    let month = &shared::domain::time::rfc3339_ms(app.clock.now_ms())[..7];
    let st = app.get(&format!("/v1/statements/{month}"), &key).await.body;
    assert_eq!(st["invoices"][0]["invoice_id"], number.as_str(), "{st}");
    assert_eq!(st["invoices"][0]["paid_by"], "card");
    app.run_until_idle().await;
    let issued: Vec<Value> = app
        .events_of(&acct)
        .await
        .into_iter()
        .filter(|e| e["type"] == "invoice.issued")
        .collect();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0]["data"]["id"], number.as_str());

    // A later edit of the profile never changes an issued invoice.
    put(json!({"company": "Renamed Ltd", "address": "y", "billing_email": "a@b.co"})).await;
    let again = app.get(&format!("/v1/invoices/{number}"), &key).await.body;
    assert_eq!(again["customer"]["company"], "北京视界科技有限公司");
    // Unknown or malformed ids are 404s, other accounts' invoices too.
    let (_, other) = app.account_with(0).await;
    for (k, id) in [
        (&key, "INV-2026-999999"),
        (&key, "nope"),
        (&other, number.as_str()),
    ] {
        let r = app.get(&format!("/v1/invoices/{id}"), k).await;
        assert_eq!((r.status, r.code()), (404, "not_found"), "{id}");
    }
    app.assert_invariants().await;
}

/// Sequence numbers of every invoice the accounts hold, sorted.
async fn invoice_seqs(app: &TestApp, keys: &[String]) -> Vec<u64> {
    let mut seqs = Vec::new();
    for k in keys {
        let page = app.get("/v1/invoices?limit=200", k).await.body;
        for d in page["data"].as_array().cloned().unwrap_or_default() {
            let id = d["id"].as_str().unwrap_or_default();
            let n = shared::domain::invoice::Number::parse(id).expect("a number");
            seqs.push(n.seq);
        }
    }
    seqs.sort_unstable();
    seqs
}

fn consecutive(seqs: &[u64]) {
    let first = seqs.first().copied().unwrap_or(1);
    let want: Vec<u64> = (first..first + seqs.len() as u64).collect();
    assert_eq!(seqs, want.as_slice(), "numbers with a gap or a repeat");
}

#[tokio::test]
async fn fifty_concurrent_purchases_get_fifty_consecutive_numbers() {
    let app = TestApp::spawn().await;
    let mut accounts = Vec::new();
    for _ in 0..5 {
        accounts.push(app.account_with(0).await);
    }
    let buys = (0..50).map(|i| {
        let app = &app;
        let acct = accounts[i % 5].0.clone();
        async move {
            let top_up = json!({"kind": "top_up"});
            paid_pack(
                app,
                &acct,
                &format!("cs_test_c{i}"),
                top_up,
                1_000 + i as i64,
            )
            .await
        }
    });
    for ack in futures_util::future::join_all(buys).await {
        assert_eq!(ack["outcome"], "granted", "{ack}");
    }
    let keys: Vec<String> = accounts.iter().map(|(_, k)| k.clone()).collect();
    let seqs = invoice_seqs(&app, &keys).await;
    assert_eq!(seqs.len(), 50);
    consecutive(&seqs);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_crash_around_an_invoice_leaves_no_gap_no_repeat_and_its_files_come_back() {
    for point in ["purchase.after_number_read", "purchase.after_commit"] {
        let app = TestApp::spawn_with(integration_tests::fail_once_at(point)).await;
        let (acct, key) = app.account_with(0).await;
        let first = paid_pack(&app, &acct, "cs_test_k1", json!({"kind": "top_up"}), 700).await;
        assert_eq!(first["error"]["code"], "internal_error", "{point}: {first}");
        // Before Stripe's retry: either nothing, or the grant with its invoice.
        let grants = app.ledger_entries(&acct, "grant").await;
        let listed = app.get("/v1/invoices", &key).await.body["data"].clone();
        assert_eq!(
            grants.len(),
            listed.as_array().map_or(0, Vec::len),
            "{point}: a grant and its invoice land together"
        );
        // Stripe retries; another purchase follows.
        let retry = paid_pack(&app, &acct, "cs_test_k1", json!({"kind": "top_up"}), 700).await;
        assert!(
            matches!(
                retry["outcome"].as_str(),
                Some("granted" | "already_granted")
            ),
            "{point}: {retry}"
        );
        let next = paid_pack(&app, &acct, "cs_test_k2", json!({"kind": "top_up"}), 800).await;
        assert_eq!(next["outcome"], "granted", "{point}: {next}");
        let seqs = invoice_seqs(&app, std::slice::from_ref(&key)).await;
        assert_eq!(seqs.len(), 2, "{point}");
        consecutive(&seqs);
        // The files of the invoice whose publication crashed are there.
        let page = app.get("/v1/invoices", &key).await.body;
        for d in page["data"].as_array().cloned().unwrap_or_default() {
            let inv = app
                .get(
                    &format!("/v1/invoices/{}", d["id"].as_str().unwrap_or_default()),
                    &key,
                )
                .await
                .body;
            let pdf = app
                .download(inv["pdf"]["url"].as_str().unwrap_or_default())
                .await;
            assert!(pdf.starts_with(b"%PDF-"), "{point}");
        }
        app.run_until_idle().await;
        let issued = app
            .events_of(&acct)
            .await
            .into_iter()
            .filter(|e| e["type"] == "invoice.issued")
            .count();
        assert_eq!(issued, 2, "{point}: every invoice announced once");
        app.assert_invariants().await;
    }
}

#[tokio::test]
async fn a_checkout_opens_a_stripe_page_at_our_price_and_paying_it_grants_the_credits() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(0).await;
    for (body, status, code) in [
        (json!({"request_id": "c0"}), 422, "invalid_checkout"),
        (
            json!({"request_id": "c0", "pack": "pack_2000", "amount_usd": 100}),
            422,
            "invalid_checkout",
        ),
        (
            json!({"request_id": "c0", "amount_usd": 49}),
            422,
            "invalid_checkout",
        ),
        (
            json!({"request_id": "c0", "amount_usd": 100_001}),
            422,
            "invalid_checkout",
        ),
        (
            json!({"request_id": "c0", "pack": "pack_3"}),
            400,
            "invalid_request",
        ),
        (json!({"pack": "pack_2000"}), 400, "invalid_request"),
    ] {
        let r = app.post("/v1/checkout", &key, &body).await;
        assert_eq!((r.status, r.code()), (status, code), "{body}: {:?}", r.body);
    }
    assert!(app.stripe.forms().is_empty(), "refusals never reach Stripe");

    let body = json!({"request_id": "buy-1", "pack": "pack_2000"});
    let r = app.post("/v1/checkout", &key, &body).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap_or_default().to_string();
    assert!(r.body["url"]
        .as_str()
        .unwrap_or_default()
        .starts_with(app.stripe.base()));
    assert_eq!(r.body["total_usd"], "2000.00");
    assert_eq!(r.body["credits"], 227_620);
    // What Stripe was asked: our price, our account, what is bought.
    let form = &app.stripe.forms()[0];
    let field = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(field("line_items[0][price_data][unit_amount]"), "200000");
    assert_eq!(field("client_reference_id"), acct);
    assert_eq!(field("metadata[pack]"), "pack_2000");
    // The same request again (and five at once): the same page, never a second session.
    let again = app.post("/v1/checkout", &key, &body).await;
    assert_eq!((again.status, again.replayed()), (201, true));
    assert_eq!(again.body["id"], id.as_str());
    let body2 = json!({"request_id": "buy-2", "amount_usd": 250});
    let racing = (0..5).map(|_| app.post("/v1/checkout", &key, &body2));
    let ids: std::collections::BTreeSet<String> = futures_util::future::join_all(racing)
        .await
        .iter()
        .map(|r| {
            assert_eq!(r.status, 201, "{:?}", r.body);
            r.body["id"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let other = json!({"request_id": "buy-1", "pack": "pack_5000"});
    let r = app.post("/v1/checkout", &key, &other).await;
    assert_eq!((r.status, r.code()), (409, "idempotency_conflict"));

    // The customer pays on Stripe's page: the signed event grants at once.
    assert_eq!(app.stripe.pay(&id).await, Ok(Some(200)));
    assert_eq!(app.account(&acct).await.balance.value(), 227_620);
    let entry = &app.get("/v1/credits/ledger?kind=grant", &key).await.body["data"][0];
    assert_eq!(entry["refers_to"], format!("card:{id}"));
    assert!(entry["invoice_id"].is_string(), "{entry}");
    // The top-up's page pays 250.00 for 25,000 credits.
    let top_up = ids.iter().next().cloned().unwrap_or_default();
    assert_eq!(app.stripe.pay(&top_up).await, Ok(Some(200)));
    assert_eq!(app.account(&acct).await.balance.value(), 227_620 + 25_000);

    // Stripe down: a clear 502, nothing recorded; the retry opens the page.
    app.stripe.fail_next(500);
    let body3 = json!({"request_id": "buy-3", "pack": "pack_10000"});
    let r = app.post("/v1/checkout", &key, &body3).await;
    assert_eq!(
        (r.status, r.code()),
        (502, "payment_provider_error"),
        "{:?}",
        r.body
    );
    let r = app.post("/v1/checkout", &key, &body3).await;
    assert_eq!((r.status, r.replayed()), (201, false), "{:?}", r.body);
    // A read-only key may not buy.
    let ro = app
        .admin_post(
            &format!("/admin/v1/accounts/{acct}/api-keys"),
            &json!({"request_id": "ro-key", "name": "ro", "scopes": ["read"]}),
        )
        .await;
    let ro_key = ro.body["secret"].as_str().unwrap_or_default().to_string();
    let r = app
        .post(
            "/v1/checkout",
            &ro_key,
            &json!({"request_id": "x", "pack": "pack_2000"}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (403, "insufficient_scope"),
        "{:?}",
        ro.body
    );
    app.assert_invariants().await;
}

#[tokio::test]
async fn refunds_and_disputes_take_the_credits_back_once_and_flag_what_was_spent() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(0).await;
    let buy = |request_id: &'static str, amount_usd: i64| {
        let (app, key) = (&app, key.clone());
        async move {
            let r = app
                .post(
                    "/v1/checkout",
                    &key,
                    &json!({"request_id": request_id, "amount_usd": amount_usd}),
                )
                .await;
            assert_eq!(r.status, 201, "{:?}", r.body);
            let id = r.body["id"].as_str().unwrap_or_default().to_string();
            assert_eq!(app.stripe.pay(&id).await, Ok(Some(200)));
            id
        }
    };
    // US$1,000 = 100,000 credits; Stripe refunds US$250 of it, then reports it again.
    let first = buy("r1", 1_000).await;
    assert_eq!(app.account(&acct).await.balance.value(), 100_000);
    assert_eq!(app.stripe.refund(&first, 25_000).await, Ok(Some(200)));
    assert_eq!(app.account(&acct).await.balance.value(), 75_000);
    let reversal = &app
        .get("/v1/credits/ledger?kind=adjustment", &key)
        .await
        .body["data"][0];
    assert_eq!(reversal["amount"], -25_000, "{reversal}");
    assert_eq!(reversal["refers_to"], format!("card:{first}"));
    // The same refund reported again, twenty times at once: nothing more.
    let again = session_event(
        "evt_again",
        "charge.refunded",
        json!({"id": "ch_x", "object": "charge", "amount": 100_000, "amount_refunded": 25_000,
               "payment_intent": app.stripe.session(&first).map(|s| s["payment_intent"].clone())}),
    );
    let copies = (0..20).map(|_| deliver(&app, &again, signed(&app, &again)));
    for r in futures_util::future::join_all(copies).await {
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body["outcome"], "already_reversed", "{:?}", r.body);
    }
    assert_eq!(app.account(&acct).await.balance.value(), 75_000);

    // A second purchase, mostly spent; then its cardholder disputes it.
    let second = buy("r2", 100).await; // 10,000 credits
    let spend =
        json!({"request_id": "spend", "model": "veo-pro", "tasks": integration_tests::tasks(140)});
    let b = app.post("/v1/batches", &key, &spend).await;
    assert_eq!(b.status, 201, "{:?}", b.body); // holds 83,860 of 85,000
    assert_eq!(app.account(&acct).await.balance.value(), 1_140);
    assert_eq!(app.stripe.dispute(&second).await, Ok(Some(200)));
    let a = app.account(&acct).await;
    assert_eq!(a.balance.value(), 0, "never below zero");
    let issue = a.payment_issue.expect("the account is flagged");
    assert_eq!(
        (issue.kind.as_str(), issue.shortfall_credits),
        ("dispute", 10_000 - 1_140)
    );
    let view = app
        .admin_get(&format!("/admin/v1/accounts/{acct}"))
        .await
        .body;
    assert_eq!(view["payment_issue"]["shortfall_credits"], 8_860, "{view}");
    app.run_until_idle().await;
    let reversed: Vec<Value> = app
        .events_of(&acct)
        .await
        .into_iter()
        .filter(|e| e["type"] == "payment.reversed")
        .collect();
    assert_eq!(reversed.len(), 2, "{reversed:?}");
    let dispute = reversed.iter().find(|e| e["data"]["kind"] == "dispute");
    assert_eq!(
        dispute.map(|e| e["data"]["shortfall_credits"].clone()),
        Some(json!(8_860))
    );
    // A refund of a payment that never granted here moves nothing.
    let stranger = session_event(
        "evt_s",
        "charge.refunded",
        json!({"id": "ch_s", "object": "charge", "amount": 500, "amount_refunded": 500, "payment_intent": "pi_unknown"}),
    );
    let r = deliver(&app, &stranger, signed(&app, &stranger)).await;
    assert_eq!(r.body["outcome"], "ignored");
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_wire_transfer_against_a_pro_forma_grants_once_with_its_invoice() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(0).await;
    let body = json!({"request_id": "pf-1", "pack": "pack_5000"});
    let pf = app.post("/v1/proforma-invoices", &key, &body).await;
    assert_eq!(pf.status, 201, "{:?}", pf.body);
    let number = pf.body["id"].as_str().unwrap_or_default().to_string();
    assert!(number.starts_with("PF-"), "{number}");
    assert_eq!(pf.body["total_usd"], "5000.00");
    let again = app.post("/v1/proforma-invoices", &key, &body).await;
    assert_eq!(
        (again.replayed(), &again.body["id"]),
        (true, &pf.body["id"])
    );
    // The operator's twin, for a card-less customer: the next number of the series.
    let op = app
        .admin_post(
            &format!("/admin/v1/accounts/{acct}/proforma-invoices"),
            &json!({"request_id": "pf-op", "pack": "pack_2000"}),
        )
        .await;
    assert_eq!(op.status, 201, "{:?}", op.body);
    let n1 = shared::domain::invoice::Number::parse(&number).expect("number");
    let n2 = shared::domain::invoice::Number::parse(op.body["id"].as_str().unwrap_or_default())
        .expect("number");
    assert_eq!(n2.seq, n1.seq + 1);
    // Its PDF says where to pay and what to quote.
    let detail = app
        .get(&format!("/v1/proforma-invoices/{number}"), &key)
        .await
        .body;
    let pdf = app
        .download(detail["pdf"]["url"].as_str().unwrap_or_default())
        .await;
    let text = pdftotext(&pdf);
    for needle in ["Pro-forma", number.as_str(), "SWIFT", "5,000.00"] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    assert_eq!(app.get("/v1/invoices", &key).await.body["data"], json!([]));

    // The wrong amount, or a reference that is not this account's: refused, nothing moves.
    let receipts = format!("/admin/v1/accounts/{acct}/wire-receipts");
    for (w, why) in [
        (
            json!({"reference": number, "amount_usd_cents": 499_999}),
            "short",
        ),
        (
            json!({"reference": "PF-2026-999999", "amount_usd_cents": 500_000}),
            "unknown",
        ),
        (
            json!({"reference": "INV-2026-000001", "amount_usd_cents": 500_000}),
            "not a PF",
        ),
    ] {
        let r = app.admin_post(&receipts, &w).await;
        assert_eq!(
            (r.status, r.code()),
            (422, "invalid_wire_receipt"),
            "{why}: {:?}",
            r.body
        );
    }
    assert_eq!(app.account(&acct).await.balance.value(), 0);
    // Recorded twice at once: granted once, with an invoice naming the wire.
    let w = json!({"reference": number, "amount_usd_cents": 500_000});
    let (a, b) =
        futures_util::future::join(app.admin_post(&receipts, &w), app.admin_post(&receipts, &w))
            .await;
    assert_eq!(
        (a.status, b.status),
        (201, 201),
        "{:?} {:?}",
        a.body,
        b.body
    );
    assert_eq!(app.account(&acct).await.balance.value(), 628_950);
    let invoices = app.get("/v1/invoices", &key).await.body;
    assert_eq!(
        invoices["data"][0]["payment"],
        json!({"method": "wire", "reference": number})
    );
    let entry = &app.get("/v1/credits/ledger?kind=grant", &key).await.body["data"][0];
    assert_eq!(entry["paid_by"], "wire");
    app.assert_invariants().await;
}

#[tokio::test]
async fn month_close_issues_a_monthly_invoice_summary_once_for_accounts_that_ask() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(0).await;
    let (other, other_key) = app.account_with(0).await;
    let r = app
        .send(
            "PUT",
            "/v1/billing-profile",
            Some(&key),
            Some(
                json!({"company": "深圳月结科技有限公司", "address": "深圳市南山区",
                       "billing_email": "ap@example.cn", "monthly_invoicing": true})
                .to_string()
                .into_bytes(),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    for (a, s, cents) in [
        (&acct, "cs_m1", 10_000),
        (&acct, "cs_m2", 20_000),
        (&other, "cs_m3", 5_000),
    ] {
        let ack = paid_pack(&app, a, s, json!({"kind": "top_up"}), cents).await;
        assert_eq!(ack["outcome"], "granted", "{ack}");
    }
    let month = shared::domain::time::month_of(app.clock.now_ms());
    let now = app.clock.now_ms();
    let (_, end) = shared::service::statements::month_range(&month).expect("month");
    app.clock.advance_ms(end - now + 3_600_000);
    let first = app.close_month(&month).await;
    assert_eq!((first.invoice_summaries, first.errors), (1, 0), "{first:?}");
    let again = app.close_month(&month).await;
    assert_eq!(again.invoice_summaries, 0, "once per account and month");

    let list = app.get("/v1/invoice-summaries", &key).await.body;
    let s = &list["data"][0];
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(s["kind"], "monthly_summary");
    assert_eq!(s["subject"], month.as_str());
    assert_eq!(s["total_usd"], "300.00");
    assert_eq!(s["includes"].as_array().map(Vec::len), Some(2));
    let id = s["id"].as_str().unwrap_or_default();
    let detail = app
        .get(&format!("/v1/invoice-summaries/{id}"), &key)
        .await
        .body;
    let text = pdftotext(
        &app.download(detail["pdf"]["url"].as_str().unwrap_or_default())
            .await,
    );
    assert!(
        text.contains("月结发票汇总") && text.contains("深圳月结科技有限公司"),
        "{text}"
    );
    for inv in s["includes"].as_array().cloned().unwrap_or_default() {
        let n = inv.as_str().unwrap_or_default();
        assert!(text.contains(n), "{n} not in:\n{text}");
    }
    // The account that did not ask gets none.
    let none = app.get("/v1/invoice-summaries", &other_key).await.body;
    assert_eq!(none["data"], json!([]));
}
