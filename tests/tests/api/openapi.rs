//! The OpenAPI document is checked against the code: the same routes, the same error codes,
//! and real responses that validate against its schemas.

use integration_tests::{tasks, TestApp};
use serde_json::{json, Value};
use std::collections::BTreeSet;

fn doc() -> Value {
    serde_json::from_str(api::OPENAPI).expect("docs/openapi.json is JSON")
}

/// A small validator for the subset of JSON Schema the document uses: $ref, type (or a list of
/// types), required, properties, additionalProperties, items, enum.
fn check(doc: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return check(doc, &doc["components"]["schemas"][name], v, at, errors);
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let actual = match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let number_ok = actual == "integer" && types.contains(&"number");
    if !(types.is_empty() || types.contains(&actual) || number_ok) {
        errors.push(format!("{at}: {actual} is not {types:?}"));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(v) {
            errors.push(format!("{at}: {v} not in enum"));
        }
    }
    if let Value::Object(map) = v {
        for req in schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !map.contains_key(req) {
                errors.push(format!("{at}: missing required {req}"));
            }
        }
        for (k, val) in map {
            match schema["properties"].get(k) {
                Some(s) => check(doc, s, val, &format!("{at}.{k}"), errors),
                None => match &schema["additionalProperties"] {
                    Value::Bool(false) => errors.push(format!("{at}: undocumented property {k}")),
                    s @ Value::Object(_) => check(doc, s, val, &format!("{at}.{k}"), errors),
                    _ => {}
                },
            }
        }
    }
    if let Value::Array(items) = v {
        for (i, item) in items.iter().enumerate() {
            check(doc, &schema["items"], item, &format!("{at}[{i}]"), errors);
        }
    }
}

fn assert_valid(doc: &Value, schema_name: &str, v: &Value) {
    let mut errors = Vec::new();
    check(
        doc,
        &json!({"$ref": format!("#/components/schemas/{schema_name}")}),
        v,
        schema_name,
        &mut errors,
    );
    assert!(
        errors.is_empty(),
        "{schema_name} does not match the document: {errors:#?}\n{v}"
    );
}

#[test]
fn the_document_lists_exactly_the_routes_the_router_serves() {
    let d = doc();
    assert_eq!(d["openapi"], "3.1.0");
    let mut documented = BTreeSet::new();
    for (path, ops) in d["paths"].as_object().into_iter().flatten() {
        for method in ops.as_object().into_iter().flatten().map(|(m, _)| m) {
            documented.insert((method.clone(), path.clone()));
        }
    }
    let served: BTreeSet<(String, String)> = api::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, served);
}

#[test]
fn the_document_lists_exactly_the_error_codes() {
    let d = doc();
    let documented: BTreeSet<String> = d["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str().map(str::to_string))
        .collect();
    let code: BTreeSet<String> = shared::service::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str().to_string())
        .collect();
    assert_eq!(documented, code);
}

#[tokio::test]
async fn every_documented_route_is_served_and_real_responses_match_the_schemas() {
    let d = doc();
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(50_000).await;

    // Each documented route answers from a handler, not the router's fallbacks.
    for (method, path) in api::ROUTES {
        let concrete = path
            .replace("{batch_id}", "bat_01M87QK0NREPX2ZHGKMMS7YBB3")
            .replace("{file_id}", "file_01M87QK0NREPX2ZHGKMMS7YBB3")
            .replace("{account_id}", &acct)
            .replace("{task_id}", "task_01M87QK0NREPX2ZHGKMMS7YBB3_00000")
            .replace("{model}", "sora-2");
        let auth = if path.starts_with("/admin") {
            app.operator.as_str()
        } else {
            key.as_str()
        };
        let body = (*method != "get").then(|| b"{}".to_vec());
        let r = app
            .send(&method.to_uppercase(), &concrete, Some(auth), body)
            .await;
        assert_ne!(r.status, 405, "{method} {path}");
        assert_ne!(
            r.body["error"]["message"], "no such route",
            "{method} {path}"
        );
    }

    // Two minutes on: the tour above used most of the key's 60 requests, and the limit
    // weighs the previous minute's count too.
    app.clock.advance_ms(120_000);
    let acc = app
        .send(
            "GET",
            &format!("/admin/v1/accounts/{acct}"),
            Some(&app.operator),
            None,
        )
        .await;
    assert_valid(&d, "Account", &acc.body);
    let k = app
        .admin_post(
            &format!("/admin/v1/accounts/{acct}/api-keys"),
            &json!({"name": "schema"}),
        )
        .await;
    assert_valid(&d, "ApiKey", &k.body);
    let g = app.grant(&acct, 5).await;
    assert_valid(&d, "GrantResult", &g.body);
    let b = app.post("/v1/batches", &key, &json!({"request_id": "s", "model": "veo-pro", "tasks": tasks(10), "metadata": {"po": "42"}})).await;
    assert_valid(&d, "Batch", &b.body);
    let id = b.body["id"].as_str().unwrap_or_default();
    assert_valid(
        &d,
        "Batch",
        &app.get(&format!("/v1/batches/{id}"), &key).await.body,
    );
    assert_valid(&d, "BatchPage", &app.get("/v1/batches", &key).await.body);
    assert_valid(
        &d,
        "TaskPage",
        &app.get(&format!("/v1/batches/{id}/tasks?limit=2"), &key)
            .await
            .body,
    );
    assert_valid(&d, "Credits", &app.get("/v1/credits", &key).await.body);
    assert_valid(
        &d,
        "LedgerPage",
        &app.get("/v1/credits/ledger", &key).await.body,
    );
    let f = app
        .post("/v1/files", &key, &json!({"request_id": "f"}))
        .await;
    assert_valid(&d, "File", &f.body);
    let fid = f.body["id"].as_str().unwrap_or_default();
    assert_valid(
        &d,
        "File",
        &app.get(&format!("/v1/files/{fid}"), &key).await.body,
    );
    let e = app
        .post(
            "/v1/batches",
            &key,
            &json!({"request_id": "e", "model": "veo-pro", "tasks": tasks(100)}),
        )
        .await;
    assert_eq!(e.status, 402);
    assert_valid(&d, "Error", &e.body);

    // Webhooks: an endpoint, a delivered event, its log.
    let rx = integration_tests::receiver::Receiver::start(
        integration_tests::receiver::Behaviour::FailFirst { n: 1, status: 500 },
    )
    .await;
    let ep = app
        .post(
            "/v1/webhook-endpoints",
            &key,
            &json!({"request_id": "w", "url": rx.url, "description": "finance"}),
        )
        .await;
    assert_valid(&d, "WebhookEndpoint", &ep.body);
    let ep_id = ep.body["id"].as_str().unwrap_or_default();
    app.run_until_idle().await;
    assert_valid(
        &d,
        "WebhookEndpointPage",
        &app.get("/v1/webhook-endpoints", &key).await.body,
    );
    let events = app.get("/v1/events", &key).await.body;
    assert_valid(&d, "EventPage", &events);
    let event_id = events["data"][0]["id"].as_str().unwrap_or_default();
    assert_valid(
        &d,
        "Event",
        &app.get(&format!("/v1/events/{event_id}"), &key).await.body,
    );
    let log = app
        .get(&format!("/v1/webhook-endpoints/{ep_id}/deliveries"), &key)
        .await
        .body;
    assert_valid(&d, "DeliveryPage", &log);
    assert!(!log["data"].as_array().map(Vec::is_empty).unwrap_or(true));
    assert_valid(&d, "Account", &app.get("/v1/account", &key).await.body);
    assert_valid(&d, "ApiKeyPage", &app.get("/v1/api-keys", &key).await.body);
    assert_valid(&d, "UsagePage", &app.get("/v1/usage", &key).await.body);
    let limited = app
        .post(
            "/v1/api-keys",
            &key,
            &json!({"request_id": "lim", "rate_limit_per_min": 1, "ip_allowlist": ["127.0.0.1/32", "::1"]}),
        )
        .await;
    assert_valid(&d, "ApiKey", &limited.body);
    let lk = limited.body["secret"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    app.get("/v1/credits", &lk).await;
    let refused = app.get("/v1/credits", &lk).await;
    assert_eq!(refused.status, 429);
    assert_valid(&d, "Error", &refused.body);

    assert_valid(
        &d,
        "Reconciliation",
        &app.get("/v1/credits/reconcile", &key).await.body,
    );
    let month = shared::domain::time::rfc3339_ms(shared::ports::Clock::now_ms(&app.clock));
    assert_valid(
        &d,
        "Statement",
        &app.get(&format!("/v1/statements/{}", &month[..7]), &key)
            .await
            .body,
    );
    let sla = app.get(&format!("/v1/sla/{}", &month[..7]), &key).await;
    assert_eq!(sla.status, 200, "{:?}", sla.body);
    assert_valid(&d, "SlaReport", &sla.body);
    let op = |path: String| {
        let app = &app;
        async move { app.send("GET", &path, Some(&app.operator), None).await }
    };
    assert_valid(
        &d,
        "SlaReport",
        &op(format!("/admin/v1/accounts/{acct}/sla/{}", &month[..7]))
            .await
            .body,
    );
    assert_valid(
        &d,
        "PlatformSlaReport",
        &op(format!("/admin/v1/sla/{}", &month[..7])).await.body,
    );
    let x = app
        .post(
            "/v1/exports",
            &key,
            &json!({"request_id": "x", "dataset": "batches"}),
        )
        .await;
    assert_valid(&d, "Export", &x.body);
    app.run_until_idle().await;
    assert_valid(&d, "ExportPage", &app.get("/v1/exports", &key).await.body);

    let served = app.send("GET", "/openapi.json", None, None).await;
    assert_eq!(served.body, d);
    app.assert_invariants().await;
}
