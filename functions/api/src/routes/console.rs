//! The console's sign-in, and the console itself (its pages and scripts, compiled into this
//! binary: one artefact, no CDN). Sessions are `shared::service::console`; here is only how
//! they travel (a cookie out, the CSRF token in the body).

use crate::error::ApiError;
use crate::extract::{Customer, Id, Operator};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use shared::domain::time::rfc3339_ms;
use shared::ports::records::{SessionKind, SessionRecord};
use shared::service::access::scopes_of;
use shared::service::console;
use shared::service::ErrorCode;

type Result<T> = std::result::Result<T, ApiError>;

/// Plain HTTP on loopback is the one place a `Secure` cookie would be dropped by the browser.
fn secure(headers: &HeaderMap) -> bool {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let name = host
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(host, |(name, _)| name);
    !matches!(name, "127.0.0.1" | "localhost" | "[::1]")
}

fn with_cookie(status: StatusCode, body: serde_json::Value, cookie: &str) -> Response {
    let mut resp = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn customer_view(session: &SessionRecord, c: &shared::service::auth::Caller) -> serde_json::Value {
    serde_json::json!({
        "kind": "customer",
        "account_id": c.account.account_id,
        "account_name": c.account.name,
        "key_id": c.key_id,
        "scopes": scopes_of(&c.key).iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "read_only": session.kind == SessionKind::ReadOnly,
        "account_status": c.account.status,
        "csrf_token": session.csrf_token,
        "expires_at": rfc3339_ms(session.expires_ms),
    })
}

fn operator_view(session: &SessionRecord) -> serde_json::Value {
    serde_json::json!({
        "kind": "operator",
        "operator": session.subject,
        "csrf_token": session.csrf_token,
        "expires_at": rfc3339_ms(session.expires_ms),
    })
}

fn no_session() -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        "this request carries no console session (sign in with POST .../console/sessions)",
    )
}

/// Opens a session of `kind` for the credential the guard admitted, and sets its cookie.
async fn open(
    s: &AppState,
    kind: SessionKind,
    credential_hash: &str,
    subject: &str,
    headers: &HeaderMap,
    view: impl Fn(&SessionRecord) -> serde_json::Value,
) -> Result<Response> {
    let opened = console::open(&s.svc, kind, credential_hash, subject).await?;
    let cookie = console::set_cookie(kind, Some(&opened.id), secure(headers));
    Ok(with_cookie(
        StatusCode::CREATED,
        view(&opened.session),
        &cookie,
    ))
}

fn shown(
    session: Option<Extension<SessionRecord>>,
    view: impl Fn(&SessionRecord) -> serde_json::Value,
) -> Result<Response> {
    let Some(Extension(session)) = session else {
        return Err(no_session());
    };
    let mut resp = Json(view(&session)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Ends the request's session and clears its cookie.
async fn close(
    s: &AppState,
    kind: SessionKind,
    session: Option<Extension<SessionRecord>>,
    headers: &HeaderMap,
) -> Result<Response> {
    let Some(Extension(session)) = session else {
        return Err(no_session());
    };
    console::close(&s.svc, &session).await?;
    let cookie = console::set_cookie(kind, None, secure(headers));
    Ok(with_cookie(
        StatusCode::OK,
        serde_json::json!({ "signed_out": true }),
        &cookie,
    ))
}

/// `POST /v1/console/sessions`: the key the guard admitted opens a session.
pub async fn sign_in(
    State(s): State<AppState>,
    Customer(c): Customer,
    headers: HeaderMap,
) -> Result<Response> {
    let (hash, account) = (c.key.key_hash.clone(), c.account.account_id.clone());
    // A read-only pass opens a read-only session; a key, a session of that key.
    let kind = if console::is_pass(&c) {
        SessionKind::ReadOnly
    } else {
        SessionKind::Customer
    };
    open(&s, kind, &hash, &account, &headers, |r| {
        customer_view(r, &c)
    })
    .await
}

/// `GET /v1/console/session`: who the cookie signs in as, and its CSRF token (a page that
/// reloads gets it here; another site's page cannot read it).
pub async fn current(
    Customer(c): Customer,
    session: Option<Extension<SessionRecord>>,
) -> Result<Response> {
    shown(session, |r| customer_view(r, &c))
}

/// `DELETE /v1/console/session`: signs out; the cookie is cleared and stops working.
pub async fn sign_out(
    State(s): State<AppState>,
    _: Customer,
    session: Option<Extension<SessionRecord>>,
    headers: HeaderMap,
) -> Result<Response> {
    close(&s, SessionKind::Customer, session, &headers).await
}

/// `POST /admin/v1/console/sessions`: an operator's credential opens an operator session.
pub async fn operator_sign_in(
    State(s): State<AppState>,
    Operator(op): Operator,
    headers: HeaderMap,
) -> Result<Response> {
    let hash = op.credential.key_hash.clone();
    open(
        &s,
        SessionKind::Operator,
        &hash,
        &op.name,
        &headers,
        operator_view,
    )
    .await
}

pub async fn operator_current(
    _: Operator,
    session: Option<Extension<SessionRecord>>,
) -> Result<Response> {
    shown(session, operator_view)
}

pub async fn operator_sign_out(
    State(s): State<AppState>,
    _: Operator,
    session: Option<Extension<SessionRecord>>,
    headers: HeaderMap,
) -> Result<Response> {
    close(&s, SessionKind::Operator, session, &headers).await
}

/// `POST /admin/v1/accounts/{account_id}/console-passes`: a one-time read-only pass for a
/// terminated account, to hand to its finance people (it is shown once).
pub async fn issue_pass(
    State(s): State<AppState>,
    Operator(op): Operator,
    Id(account_id): Id,
) -> Result<Response> {
    let (pass, record) = console::issue_pass(&s.svc, &account_id).await?;
    tracing::info!(
        account_id,
        operator = op.name,
        "read-only console pass issued"
    );
    let mut resp = (
        StatusCode::CREATED,
        Json(serde_json::json!({
            "account_id": account_id,
            "pass": pass,
            "expires_at": rfc3339_ms(record.expires_ms),
            "sign_in": "/console (paste the pass where the form asks for a key; it works once)",
        })),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// The console's files, compiled in. (path, content type, bytes)
pub const ASSETS: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../console/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/api.js"),
    ),
    (
        "i18n.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/i18n.js"),
    ),
    (
        "pages.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/pages.js"),
    ),
    (
        "ui.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/ui.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../console/style.css"),
    ),
];

/// What every console response carries: scripts only from here (no inline script), no
/// framing, nothing fetched from elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; font-src 'self'; form-action 'self'; \
base-uri 'none'; frame-ancestors 'none'";

fn asset(name: &str) -> Response {
    let Some((_, ctype, body)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return ApiError::new(ErrorCode::NotFound, "no such console file").into_response();
    };
    let mut resp = (*body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Small, and changes with each deployment: revalidate rather than guess a lifetime.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// `GET /console`: the page (its routes are in the fragment: `#/ledger`, ...).
pub async fn index() -> Response {
    asset("index.html")
}

/// `GET /console/{file}`.
pub async fn file(Path(name): Path<String>) -> Response {
    asset(&name)
}

#[cfg(test)]
mod tests {
    use super::ASSETS;

    /// The console's whole weight, uncompressed: the budget the issue states.
    const BUDGET_BYTES: usize = 200 * 1024;

    #[test]
    fn the_console_fits_its_budget_and_names_nothing_elsewhere() {
        let total: usize = ASSETS.iter().map(|(_, _, body)| body.len()).sum();
        assert!(total <= BUDGET_BYTES, "{total} bytes");
        for (name, _, body) in ASSETS {
            // The only URL scheme written anywhere is the placeholder of the webhook form.
            for (i, _) in body.match_indices("://") {
                assert!(
                    body[i..].starts_with("://'"),
                    "{name} names an address: {}",
                    &body[i.saturating_sub(20)..(i + 30).min(body.len())]
                );
            }
            assert!(
                !body.contains("@import") && !body.contains("<script>"),
                "{name}"
            );
        }
    }

    #[test]
    fn every_file_the_console_asks_for_is_served() {
        let served = |f: &str| ASSETS.iter().any(|(n, _, _)| *n == f);
        for (name, _, body) in ASSETS {
            for part in body.split("from './").skip(1) {
                let file = part.split('\'').next().unwrap_or_default();
                assert!(served(file), "{name} imports {file}");
            }
            for part in body.split("\"/console/").skip(1) {
                let file = part.split('"').next().unwrap_or_default();
                assert!(served(file), "{name} links {file}");
            }
        }
    }
}
