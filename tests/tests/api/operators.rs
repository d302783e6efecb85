//! Named operators: their own credentials, issued, rotated and revoked through the API with
//! no redeploy, and the ledger's `actor` is whoever authenticated, never a field of the body.

use integration_tests::TestApp;
use serde_json::json;

#[tokio::test]
async fn operators_are_named_and_the_ledger_says_who_granted() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(0).await;

    // The harness's operator (issued as the bootstrap command does) names a colleague.
    let created = app
        .admin_post(
            "/admin/v1/operators",
            &json!({"name": "li.wei@example.com"}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let li = created.body["credential"]
        .as_str()
        .expect("the credential, once")
        .to_string();
    assert!(li.starts_with("vgo_"), "{li}");
    assert_eq!(created.body["status"], "active");
    let again = app
        .admin_post(
            "/admin/v1/operators",
            &json!({"name": "li.wei@example.com"}),
        )
        .await;
    assert_eq!((again.status, again.code()), (409, "operator_exists"));
    let bad = app
        .admin_post("/admin/v1/operators", &json!({"name": "Li Wei"}))
        .await;
    assert_eq!((bad.status, bad.code()), (422, "invalid_operator"));
    let listed = app.get("/admin/v1/operators", &app.operator).await;
    let names: Vec<&str> = listed.body["data"]
        .as_array()
        .expect("operators")
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    assert_eq!(names, ["harness", "li.wei@example.com"]);
    assert!(
        !listed.body.to_string().contains(&li) && listed.body["data"][1]["credential"].is_null(),
        "a listing never shows a credential"
    );

    // Her grant carries her name; the body cannot name anyone.
    let path = format!("/admin/v1/accounts/{acct}/grants");
    let body = json!({"request_id": "g-li", "amount": 500, "reason": "goodwill"});
    let g = app
        .send(
            "POST",
            &path,
            Some(&li),
            Some(body.to_string().into_bytes()),
        )
        .await;
    assert_eq!(g.status, 201, "{:?}", g.body);
    assert_eq!(g.body["entry"]["actor"], "li.wei@example.com");
    let forged = json!({"request_id": "g-forged", "amount": 5, "reason": "r", "actor": "ceo"});
    let f = app
        .send(
            "POST",
            &path,
            Some(&li),
            Some(forged.to_string().into_bytes()),
        )
        .await;
    assert_eq!(
        (f.status, f.code()),
        (400, "invalid_request"),
        "{:?}",
        f.body
    );
    let ledger = app.get("/v1/credits/ledger", &key).await;
    assert_eq!(ledger.body["data"][0]["actor"], "li.wei@example.com");
    // The usage log names the credential that made each operator call.
    let li_id = created.body["credentials"][0]["id"]
        .as_str()
        .expect("credential id");
    assert!(
        app.usage_of("_operator")
            .await
            .iter()
            .any(|u| u.key_id.as_deref() == Some(li_id)
                && u.route == "/admin/v1/accounts/{account_id}/grants"),
        "the grant's usage record names li.wei's credential"
    );

    // Credentials of one kind never open the other kind of route.
    assert_eq!(app.get("/v1/credits", &li).await.status, 401);
    assert_eq!(app.get("/admin/v1/operators", &key).await.status, 401);

    // Rotation: the new credential works at once, the old one stops at once.
    let rotated = app
        .admin_post("/admin/v1/operators/li.wei@example.com/rotate", &json!({}))
        .await;
    assert_eq!(rotated.status, 200, "{:?}", rotated.body);
    let li2 = rotated.body["credential"]
        .as_str()
        .expect("the new credential")
        .to_string();
    assert_eq!(app.get("/admin/v1/operators", &li).await.status, 401);
    assert_eq!(app.get("/admin/v1/operators", &li2).await.status, 200);
    let creds = rotated.body["credentials"].as_array().expect("credentials");
    assert_eq!(creds.len(), 2);
    assert!(creds[0]["revoked_at"].is_null() && creds[1]["revoked_at"].is_string());

    // Revocation, by herself even; then the harness is the last and cannot go.
    let revoked = app
        .send(
            "DELETE",
            "/admin/v1/operators/li.wei@example.com",
            Some(&li2),
            None,
        )
        .await;
    assert_eq!(revoked.status, 200, "{:?}", revoked.body);
    assert_eq!(revoked.body["status"], "revoked");
    assert_eq!(app.get("/admin/v1/operators", &li2).await.status, 401);
    let last = app
        .send(
            "DELETE",
            "/admin/v1/operators/harness",
            Some(&app.operator),
            None,
        )
        .await;
    assert_eq!((last.status, last.code()), (409, "last_operator"));
    let gone = app
        .send(
            "DELETE",
            "/admin/v1/operators/nobody",
            Some(&app.operator),
            None,
        )
        .await;
    assert_eq!((gone.status, gone.code()), (404, "not_found"));
    app.assert_usage_logged().await;
}

#[tokio::test]
async fn operators_find_accounts_by_id_prefix_or_a_piece_of_the_name() {
    let app = TestApp::spawn().await;
    let mk = |name: &str, rid: &str| json!({"request_id": rid, "name": name, "plan": "enterprise", "retention_days": 30, "max_concurrency": 2, "min_batch_size": 1});
    let a = app
        .admin_post("/admin/v1/accounts", &mk("北京影视 Beijing Films", "s1"))
        .await;
    let b = app
        .admin_post("/admin/v1/accounts", &mk("Shanghai Films", "s2"))
        .await;
    let c = app
        .admin_post("/admin/v1/accounts", &mk("Acme Studio", "s3"))
        .await;
    let ids: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|r| r.body["id"].as_str().unwrap_or_default().to_string())
        .collect();
    let names = |r: &integration_tests::Resp| -> Vec<String> {
        r.body["data"]
            .as_array()
            .map(|d| {
                d.iter()
                    .map(|a| a["name"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let op = app.operator.clone();
    let r = app.get("/admin/v1/accounts?q=films", &op).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(names(&r), ["Shanghai Films", "北京影视 Beijing Films"]);
    let r = app.get("/admin/v1/accounts?q=北京", &op).await;
    assert_eq!(names(&r), ["北京影视 Beijing Films"]);
    let r = app
        .get(&format!("/admin/v1/accounts?q={}", ids[2]), &op)
        .await;
    assert_eq!(names(&r), ["Acme Studio"]);
    let r = app.get("/admin/v1/accounts?q=films&limit=1", &op).await;
    assert_eq!((names(&r).len(), &r.body["has_more"]), (1, &json!(true)));
    let r = app
        .get(&format!("/admin/v1/accounts?q={}", "x".repeat(101)), &op)
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_parameter"));
    // Customers cannot search.
    let (_, key) = app.account_with(0).await;
    assert_eq!(
        app.get("/admin/v1/accounts?q=films", &key).await.status,
        401
    );
}
