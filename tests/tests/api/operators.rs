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
