//! The console's sessions over HTTP: a key (or an operator credential) opens a session, the
//! cookie and its CSRF token carry it, the key's own rules apply through it, signing out and
//! time end it. And the console's files: served from the binary under a strict policy.

use integration_tests::{Resp, TestApp};
use serde_json::{json, Value};

/// A request carrying `cookie` (and `csrf`) instead of a key.
async fn as_session(
    app: &TestApp,
    method: &str,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: Option<Value>,
) -> Resp {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = app
        .http
        .request(method, format!("{}{path}", app.base))
        .header("cookie", cookie);
    if let Some(t) = csrf {
        req = req.header("x-csrf-token", t);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.expect("request reaches the API");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("body");
    Resp {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// Signs in at `path` with `credential`: the cookie to send back and the CSRF token.
async fn sign_in(app: &TestApp, path: &str, credential: &str) -> (String, String, Resp) {
    let r = app.post(path, credential, &json!({})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let set = r.header("set-cookie").unwrap_or_default().to_string();
    let cookie = set.split(';').next().unwrap_or_default().to_string();
    let csrf = r.body["csrf_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (cookie, csrf, r)
}

#[tokio::test]
async fn a_key_opens_a_console_session_that_is_only_as_good_as_the_key() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(5_000).await;
    let (cookie, csrf, r) = sign_in(&app, "/v1/console/sessions", &key).await;
    let set = r.header("set-cookie").unwrap_or_default();
    assert!(cookie.starts_with("vg_session=vcs_"), "{set}");
    for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
        assert!(set.contains(part), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP on loopback: {set}");
    assert_eq!(r.body["kind"], "customer");
    assert_eq!(r.body["account_id"], acct.as_str());
    assert!(csrf.starts_with("csrf_"));

    // Reads need only the cookie; the page that reloads gets its token back.
    let c = as_session(&app, "GET", "/v1/credits", &cookie, None, None).await;
    assert_eq!((c.status, &c.body["balance"]), (200, &json!(5_000)));
    let s = as_session(&app, "GET", "/v1/console/session", &cookie, None, None).await;
    assert_eq!(
        (s.status, s.body["csrf_token"].as_str()),
        (200, Some(csrf.as_str()))
    );
    // With a key instead of a session, there is no session to show.
    assert_eq!(app.get("/v1/console/session", &key).await.status, 404);

    // A change needs the session's token: without it, or with another, nothing happens.
    let change = json!({"low_balance_threshold": 100});
    for token in [None, Some("csrf_forged")] {
        let r = as_session(
            &app,
            "PATCH",
            "/v1/account",
            &cookie,
            token,
            Some(change.clone()),
        )
        .await;
        assert_eq!((r.status, r.code()), (403, "csrf_failed"), "{token:?}");
    }
    assert_eq!(app.account(&acct).await.low_balance_threshold, None);
    let r = as_session(
        &app,
        "PATCH",
        "/v1/account",
        &cookie,
        Some(&csrf),
        Some(change),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // The usage log names the key for the session's calls, as for the key's own.
    let key_id = s.body["key_id"].as_str().unwrap_or_default().to_string();
    let usage = app.usage_of(&acct).await;
    assert!(usage.iter().any(|u| u.route == "/v1/account"
        && u.method == "PATCH"
        && u.key_id.as_deref() == Some(key_id.as_str())));

    // The key disabled: the session stops at once; enabled again, it works again.
    let path = format!("/admin/v1/accounts/{acct}/api-keys/{key_id}");
    let off = app
        .send(
            "PATCH",
            &path,
            Some(&app.operator),
            Some(br#"{"enabled": false}"#.to_vec()),
        )
        .await;
    assert_eq!(off.status, 200, "{:?}", off.body);
    let r = as_session(&app, "GET", "/v1/credits", &cookie, None, None).await;
    assert_eq!((r.status, r.code()), (401, "key_disabled"));
    let on = app
        .send(
            "PATCH",
            &path,
            Some(&app.operator),
            Some(br#"{"enabled": true}"#.to_vec()),
        )
        .await;
    assert_eq!(on.status, 200);
    assert_eq!(
        as_session(&app, "GET", "/v1/credits", &cookie, None, None)
            .await
            .status,
        200
    );

    // Signing out clears the cookie and ends the session for good.
    let out = as_session(
        &app,
        "DELETE",
        "/v1/console/session",
        &cookie,
        Some(&csrf),
        None,
    )
    .await;
    assert_eq!(out.status, 200, "{:?}", out.body);
    assert!(out
        .header("set-cookie")
        .unwrap_or_default()
        .contains("Max-Age=0"));
    let r = as_session(&app, "GET", "/v1/credits", &cookie, None, None).await;
    assert_eq!((r.status, r.code()), (401, "session_expired"));
    // A made-up session id is the same; no key and no cookie is the key's error.
    let r = as_session(
        &app,
        "GET",
        "/v1/credits",
        "vg_session=vcs_made_up",
        None,
        None,
    )
    .await;
    assert_eq!((r.status, r.code()), (401, "session_expired"));
    let r = as_session(&app, "GET", "/v1/credits", "other=1", None, None).await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
}

#[tokio::test]
async fn a_read_key_signs_in_and_every_change_is_refused_through_the_session() {
    let app = TestApp::spawn().await;
    let (_, admin_key) = app.account_with(5_000).await;
    let k = app
        .post(
            "/v1/api-keys",
            &admin_key,
            &json!({"request_id": "read-1", "name": "finance", "scopes": ["read"]}),
        )
        .await;
    assert_eq!(k.status, 201, "{:?}", k.body);
    let read_key = k.body["secret"].as_str().unwrap_or_default().to_string();
    let (cookie, csrf, r) = sign_in(&app, "/v1/console/sessions", &read_key).await;
    assert_eq!(r.body["scopes"], json!(["read"]));
    assert_eq!(
        as_session(&app, "GET", "/v1/batches", &cookie, None, None)
            .await
            .status,
        200
    );
    let batch = json!({"request_id": "b1", "model": "sora-2", "tasks": [{"prompt": "a cat"}]});
    for (method, path, body) in [
        ("POST", "/v1/batches", Some(batch)),
        (
            "POST",
            "/v1/api-keys",
            Some(json!({"request_id": "k2", "name": "x"})),
        ),
        ("GET", "/v1/api-keys", None),
    ] {
        let r = as_session(&app, method, path, &cookie, Some(&csrf), body).await;
        assert_eq!(
            (r.status, r.code()),
            (403, "insufficient_scope"),
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn operators_have_sessions_of_their_own_that_end_with_the_day() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(0).await;
    let (op_cookie, op_csrf, r) = sign_in(&app, "/admin/v1/console/sessions", &app.operator).await;
    assert!(op_cookie.starts_with("vg_operator_session=vcs_"));
    assert_eq!(r.body["kind"], "operator");
    assert_eq!(r.body["operator"], "harness");
    let grant = json!({"request_id": "console-g1", "amount": 700, "reason": "pilot"});
    let path = format!("/admin/v1/accounts/{acct}/grants");
    let r = as_session(&app, "POST", &path, &op_cookie, None, Some(grant.clone())).await;
    assert_eq!((r.status, r.code()), (403, "csrf_failed"));
    let r = as_session(&app, "POST", &path, &op_cookie, Some(&op_csrf), Some(grant)).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(
        r.body["entry"]["actor"], "harness",
        "the session's operator is the actor"
    );

    // Each cookie opens its own side only.
    let (cookie, _, _) = sign_in(&app, "/v1/console/sessions", &key).await;
    let r = as_session(
        &app,
        "GET",
        &format!("/admin/v1/accounts/{acct}"),
        &cookie,
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    let r = as_session(&app, "GET", "/v1/credits", &op_cookie, None, None).await;
    assert_eq!(r.status, 401);

    // Eight hours on, both ask again.
    app.clock.advance_ms(8 * 3_600_000 + 1_000);
    let r = as_session(
        &app,
        "GET",
        "/admin/v1/console/session",
        &op_cookie,
        None,
        None,
    )
    .await;
    assert_eq!((r.status, r.code()), (401, "session_expired"));
    let r = as_session(&app, "GET", "/v1/credits", &cookie, None, None).await;
    assert_eq!((r.status, r.code()), (401, "session_expired"));
}

#[tokio::test]
async fn the_console_is_served_from_the_binary_under_a_strict_policy() {
    let app = TestApp::spawn().await;
    for (path, ctype) in [
        ("/console", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/style.css", "text/css"),
    ] {
        let r = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .expect("served");
        assert_eq!(r.status(), 200, "{path}");
        let h = |n: &str| {
            r.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert!(h("content-type").starts_with(ctype), "{path}");
        let csp = h("content-security-policy");
        for rule in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(rule), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(h("x-frame-options"), "DENY");
        assert_eq!(h("x-content-type-options"), "nosniff");
    }
    let r = app
        .http
        .get(format!("{}/console/nope.js", app.base))
        .send()
        .await
        .expect("served");
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn a_read_only_pass_opens_one_read_only_session_on_a_terminated_account() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(3_000).await;
    let passes = format!("/admin/v1/accounts/{acct}/console-passes");
    let r = app.admin_post(&passes, &json!({})).await;
    assert_eq!((r.status, r.code()), (409, "account_not_terminated"));
    let t = app
        .admin_post(&format!("/admin/v1/accounts/{acct}/terminate"), &json!({}))
        .await;
    assert_eq!(t.status, 200, "{:?}", t.body);
    let r = app.admin_post(&passes, &json!({})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let pass = r.body["pass"].as_str().unwrap_or_default().to_string();
    assert!(pass.starts_with("vcp_"));

    // The pass does nothing but sign in.
    let r = app.get("/v1/credits", &pass).await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    let (cookie, csrf, r) = sign_in(&app, "/v1/console/sessions", &pass).await;
    assert_eq!(r.body["read_only"], true);
    assert_eq!(r.body["scopes"], json!(["read"]));
    assert_eq!(r.body["account_status"], "terminated");
    // Once.
    let again = app.post("/v1/console/sessions", &pass, &json!({})).await;
    assert_eq!(again.status, 401);

    // Finance reads; nothing changes; the account's own key still refuses.
    let c = as_session(&app, "GET", "/v1/credits", &cookie, None, None).await;
    assert_eq!((c.status, &c.body["balance"]), (200, &json!(3_000)));
    let l = as_session(&app, "GET", "/v1/credits/ledger", &cookie, None, None).await;
    assert_eq!(l.status, 200);
    let batch = json!({"request_id": "after-end", "model": "sora-2", "tasks": [{"prompt": "x"}]});
    let r = as_session(
        &app,
        "POST",
        "/v1/batches",
        &cookie,
        Some(&csrf),
        Some(batch),
    )
    .await;
    assert_eq!((r.status, r.code()), (403, "insufficient_scope"));
    let r = app.get("/v1/credits", &key).await;
    assert_eq!((r.status, r.code()), (403, "account_terminated"));
    // The usage log names the pass.
    let usage = app.usage_of(&acct).await;
    assert!(usage.iter().any(|u| u.route == "/v1/credits/ledger"
        && u.key_id.as_deref().is_some_and(|k| k.starts_with("pass_"))));
}
