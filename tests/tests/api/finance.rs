//! Finance: reconciliation, adjustments, monthly statements, retention.

use aws_sdk_dynamodb::types::AttributeValue;
use integration_tests::{tasks, TestApp};
use serde_json::{json, Value};
use shared::ports::Clock;

#[tokio::test]
async fn reconcile_is_clean_then_finds_an_injected_discrepancy_and_adjustments_are_entries() {
    // The discrepancy is written behind the code's back, straight into the table.
    let app = TestApp::spawn_aws().await;
    let (acct, key) = app.account_with(10_000).await;
    let b = app
        .post(
            "/v1/batches",
            &key,
            &json!({"request_id": "r", "model": "sora-2", "tasks": tasks(10)}),
        )
        .await;
    let batch = b.body["id"].as_str().unwrap_or_default().to_string();
    app.drive_to_settlement(&acct, &batch, 5_000, 600_000).await;
    let r = app.get("/v1/credits/reconcile", &key).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["ok"], true, "{:?}", r.body);
    assert_eq!(r.body["ledger_sum"], r.body["balance"]);

    // Someone edits the balance behind the ledger's back.
    aws_sdk_dynamodb::Client::new(&app.aws().sdk)
        .update_item()
        .table_name(&app.aws().env["ACCOUNTS_TABLE"])
        .key("account_id", AttributeValue::S(acct.clone()))
        .update_expression("SET balance = balance + :one")
        .expression_attribute_values(":one", AttributeValue::N("1".into()))
        .send()
        .await
        .expect("tamper");
    let r = app.get("/v1/credits/reconcile", &key).await;
    assert_eq!(r.body["ok"], false);
    let d = &r.body["discrepancies"][0];
    assert_eq!(
        (
            d["kind"].clone(),
            d["found"].as_i64().unwrap_or(0) - d["expected"].as_i64().unwrap_or(0)
        ),
        (json!("balance_mismatch"), 1)
    );
    let all = app
        .send("GET", "/admin/v1/reconcile", Some(&app.operator), None)
        .await;
    assert_eq!(all.body["accounts_with_discrepancies"], 1, "{:?}", all.body);
    assert_eq!(all.body["reports"][0]["account_id"], acct.as_str());
    // Put the balance back, then settle a dispute with an adjustment: a new entry.
    aws_sdk_dynamodb::Client::new(&app.aws().sdk)
        .update_item()
        .table_name(&app.aws().env["ACCOUNTS_TABLE"])
        .key("account_id", AttributeValue::S(acct.clone()))
        .update_expression("SET balance = balance - :one")
        .expression_attribute_values(":one", AttributeValue::N("1".into()))
        .send()
        .await
        .expect("untamper");
    let ledger = app.get("/v1/credits/ledger?kind=pre_deduct", &key).await;
    let disputed = ledger.body["data"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let adj = json!({"request_id": "adj-1", "amount": 98, "reason": "two videos were unusable", "refers_to": disputed});
    let r = app
        .admin_post(&format!("/admin/v1/accounts/{acct}/adjustments"), &adj)
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["entry"]["kind"], "adjustment");
    assert_eq!(r.body["entry"]["refers_to"], disputed.as_str());
    let again = app
        .admin_post(&format!("/admin/v1/accounts/{acct}/adjustments"), &adj)
        .await;
    assert!(again.replayed());
    for bad in [
        json!({"request_id": "a2", "amount": 0, "reason": "x"}),
        json!({"request_id": "a3", "amount": -1_000_000, "reason": "x"}),
        json!({"request_id": "a4", "amount": 5, "reason": "x", "refers_to": "le_000000009999"}),
    ] {
        let r = app
            .admin_post(&format!("/admin/v1/accounts/{acct}/adjustments"), &bad)
            .await;
        assert_eq!((r.status, r.code()), (422, "invalid_adjustment"), "{bad}");
    }
    assert_eq!(
        app.get("/v1/credits/reconcile", &key).await.body["ok"],
        true
    );
    assert_eq!(app.account(&acct).await.balance.value(), 10_000 - 490 + 98);
    app.assert_invariants().await;
}

fn ms_to_next_month(now_ms: i64) -> i64 {
    let t = time::OffsetDateTime::from_unix_timestamp(now_ms / 1_000).expect("time");
    let (y, m) = (t.year(), u8::from(t.month()));
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let next = time::Date::from_calendar_date(ny, time::Month::try_from(nm).expect("month"), 1)
        .expect("date")
        .midnight()
        .assume_utc();
    (next.unix_timestamp_nanos() / 1_000_000) as i64 - now_ms
}

fn month_of(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms / 1_000).expect("time");
    format!("{:04}-{:02}", t.year(), u8::from(t.month()))
}

#[tokio::test]
async fn statements_close_each_month_where_the_next_opens_and_match_the_ledger() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(0).await;
    let pack = app
        .admin_post(
            &format!("/admin/v1/accounts/{acct}/grants"),
            &json!({"request_id": "p1", "pack": "pack_2000", "reason": "PO 17"}),
        )
        .await;
    assert_eq!(pack.status, 201);
    let m1 = month_of(app.clock.now_ms());
    let b = app
        .post(
            "/v1/batches",
            &key,
            &json!({"request_id": "m1", "model": "sora-2", "tasks": tasks(10)}),
        )
        .await;
    let batch1 = b.body["id"].as_str().unwrap_or_default().to_string();
    app.drive_to_settlement(&acct, &batch1, 5_000, 600_000)
        .await;
    // Into the next month.
    app.clock
        .advance_ms(ms_to_next_month(app.clock.now_ms()) + 3_600_000);
    let m2 = month_of(app.clock.now_ms());
    app.grant(&acct, 1_000).await;
    let b = app
        .post(
            "/v1/batches",
            &key,
            &json!({"request_id": "m2", "model": "veo-pro", "tasks": tasks(10)}),
        )
        .await;
    assert_eq!(b.status, 201, "{:?}", b.body);

    let s1 = app.get(&format!("/v1/statements/{m1}"), &key).await.body;
    let s2 = app.get(&format!("/v1/statements/{m2}"), &key).await.body;
    assert_eq!(s1["opening_balance"], 0);
    assert_eq!(s1["closing_balance"], 227_620 - 490);
    assert_eq!(
        s2["opening_balance"], s1["closing_balance"],
        "M closes where M+1 opens"
    );
    assert_eq!(
        s2["closing_balance"],
        app.account(&acct).await.balance.value(),
        "the ledger's running balance"
    );
    assert_eq!(s1["movements"]["grants"], 227_620);
    assert_eq!(s1["movements"]["pre_deducts"], -490);
    assert_eq!(s2["movements"]["pre_deducts"], -5_990);
    // An operator's grant is credits without an invoice: statements list real invoices only.
    assert_eq!(s1["invoices"], json!([]));
    assert_eq!(s1["free_grants"][0]["pack"], "pack_2000");
    assert_eq!(s1["free_grants"][0]["credits"], 227_620);
    assert_eq!(s1["usage_by_model"][0]["model"], "sora-2");
    assert_eq!(s1["usage_by_model"][0]["videos_succeeded"], 10);
    assert_eq!(s1["usage_by_model"][0]["succeeded_value"], 490);
    assert_eq!(s1["batches"][0]["batch_id"], batch1.as_str());
    assert_eq!(s2["batches"][0]["status"], "queued");

    let csv = app
        .http
        .get(format!("{}/v1/statements/{m1}?format=csv", app.base))
        .bearer_auth(&key)
        .send()
        .await
        .expect("csv");
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("text/csv"));
    let text = csv.text().await.unwrap_or_default();
    assert!(text.contains("balance,closing,227130,2271.30"), "{text}");
    let html = app
        .http
        .get(format!("{}/v1/statements/{m1}?format=html", app.base))
        .bearer_auth(&key)
        .send()
        .await
        .expect("html")
        .text()
        .await
        .unwrap_or_default();
    assert!(html.contains("<table>") && html.contains("2271.30"));
    let r = app.get("/v1/statements/2026-13", &key).await;
    assert_eq!(r.status, 404);
    let r = app
        .get(&format!("/v1/statements/{m1}?format=pdf"), &key)
        .await;
    assert_eq!(r.code(), "invalid_parameter");
}

#[tokio::test]
async fn retention_sets_ttls_on_operational_data_and_never_on_the_ledger() {
    // TTL attributes and S3 tags as DynamoDB and S3 store them.
    let app = TestApp::spawn_aws().await;
    let r = app
        .admin_post(
            "/admin/v1/accounts",
            &json!({"request_id": "ret", "name": "Short Memory Ltd", "plan": "payg", "retention_days": 30, "max_concurrency": 4}),
        )
        .await;
    let acct = r.body["id"].as_str().unwrap_or_default().to_string();
    app.grant(&acct, 10_000).await;
    let k = app
        .admin_post(
            &format!("/admin/v1/accounts/{acct}/api-keys"),
            &json!({"name": "k"}),
        )
        .await;
    let key = k.body["secret"].as_str().unwrap_or_default().to_string();
    let b = app
        .post(
            "/v1/batches",
            &key,
            &json!({"request_id": "r", "model": "sora-2", "tasks": tasks(10)}),
        )
        .await;
    let batch = b.body["id"].as_str().unwrap_or_default().to_string();
    app.drive_to_settlement(&acct, &batch, 5_000, 600_000).await;
    let ddb = aws_sdk_dynamodb::Client::new(&app.aws().sdk);
    let scan = |table: &str| {
        let ddb = ddb.clone();
        let table = app.aws().env[table].clone();
        async move {
            ddb.scan()
                .table_name(table)
                .send()
                .await
                .expect("scan")
                .items
                .unwrap_or_default()
        }
    };
    let n = |i: &std::collections::HashMap<String, AttributeValue>, k: &str| match i.get(k) {
        Some(AttributeValue::N(v)) => v.parse::<i64>().ok(),
        _ => None,
    };
    let created = app.account(&acct).await.created_ms;
    let batch_rec = app
        .svc
        .batches
        .get(&acct, &batch)
        .await
        .expect("read")
        .expect("batch");
    for t in scan("TASKS_TABLE").await {
        assert_eq!(
            n(&t, "expires_at"),
            Some(batch_rec.created_ms / 1_000 + (30 + 7) * 86_400)
        );
    }
    for u in scan("API_USAGE_TABLE")
        .await
        .iter()
        .filter(|u| matches!(u.get("account_id"), Some(AttributeValue::S(a)) if a == &acct))
    {
        let at = n(u, "at_ms").unwrap_or(0);
        assert_eq!(n(u, "expires_at"), Some(at / 1_000 + 30 * 86_400));
    }
    let ledger = scan("LEDGER_TABLE").await;
    assert!(!ledger.is_empty());
    assert!(
        ledger.iter().all(|e| !e.contains_key("expires_at")),
        "the ledger is a financial record: no TTL"
    );
    assert!(scan("ACCOUNTS_TABLE")
        .await
        .iter()
        .all(|a| !a.contains_key("expires_at")));
    // Videos carry the tag the bucket's lifecycle rules expire them by.
    let task = app
        .get(&format!("/v1/batches/{batch}/tasks"), &key)
        .await
        .body["data"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let tags = app
        .object_tags(&format!("accounts/{acct}/videos/{batch}/{task}.mp4"))
        .await;
    assert_eq!(tags.as_deref(), Some("retention-days=30"));
    // The template expires each tag after its days.
    let template = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml"),
    )
    .unwrap_or_default();
    for d in ["30", "90", "180"] {
        assert!(template.contains(&format!("TagFilters: [{{ Key: retention-days, Value: \"{d}\" }}]\n            ExpirationInDays: {d}")), "lifecycle rule for {d}");
    }
    // Retention is changeable; new data follows the new setting.
    let r = app
        .send(
            "PATCH",
            &format!("/admin/v1/accounts/{acct}"),
            Some(&app.operator),
            Some(json!({"retention_days": 180}).to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.body["retention_days"], 180, "{:?}", r.body);
    let _ = (created, Value::Null);
    app.assert_invariants().await;
}
