//! The access guard: every `/v1` request is admitted (address, key, allowlist, scope, rate
//! limit) before its handler runs, and every `/v1` and `/admin/v1` call is written to
//! `enterprise_api_usage` before its response leaves. The rules are in
//! `shared::service::access`; this is the HTTP side of them.

use crate::error::{ApiError, ErrorCodeExt};
use crate::telemetry::RequestId;
use crate::AppState;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lambda_http::request::RequestContext;
use lambda_http::RequestExt;
use shared::domain::access::RateState;
use shared::ports::records::SessionKind;
use shared::service::access::{
    admit_operator_address, authorize, operator_auth_failed, record, AccessRequest, Answered,
    Refused, UNAUTHENTICATED,
};
use shared::service::{console, operators};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// Where the request came from: API Gateway's `sourceIp` in Lambda, the TCP peer locally.
/// Never `X-Forwarded-For` or any other header the client controls.
fn source_ip(req: &Request) -> Option<IpAddr> {
    if let Some(RequestContext::ApiGatewayV2(ctx)) = req.request_context_ref() {
        return ctx.http.source_ip.as_deref().and_then(|s| s.parse().ok());
    }
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

fn set_rate_headers(h: &mut HeaderMap, rate: &RateState) {
    for (name, value) in [
        ("x-ratelimit-limit", u64::from(rate.limit)),
        ("x-ratelimit-remaining", rate.remaining),
        ("x-ratelimit-reset", rate.reset_secs),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            h.insert(name, v);
        }
    }
}

fn header_str(req: &Request, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The console session cookie of `kind`, if the request carries one.
fn session_cookie(req: &Request, kind: SessionKind) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| console::cookie_value(h, console::cookie_name(kind)))
        .map(str::to_string)
}

const LIFT_BLOCK_ROUTE: &str = "/admin/v1/ip-blocks/{ip}";

/// A refusal as the client sees it: the error, and the rate and retry headers it names.
fn refused_response(refused: Refused) -> Response {
    let mut resp = ApiError(refused.error).into_response();
    if let Some(rate) = &refused.rate {
        set_rate_headers(resp.headers_mut(), rate);
    }
    if let Some(secs) = refused.retry_after_secs {
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    resp
}

pub async fn guard(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let matched = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let path = req.uri().path();
    let api_path = path.starts_with("/v1/") || path.starts_with("/admin/");
    let route = match matched {
        Some(r) => r,
        // No such route: answered 404 without looking at the key, but still logged.
        None if api_path => "unmatched".to_string(),
        None => return next.run(req).await,
    };
    let customer = route.starts_with("/v1/");
    let operator = route.starts_with("/admin/");
    if !customer && !operator && route != "unmatched" {
        return next.run(req).await;
    }
    let started = Instant::now();
    let started_ms = s.svc.now_ms();
    let method = req.method().as_str().to_string();
    let ip = source_ip(&req);
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);

    let (resp, account_id, retention, key, admitted) = if operator {
        // Operators face the same address rules: a blocked address is refused first, and a
        // wrong credential counts toward a block. Lifting a block is the exception, so an
        // operator behind a blocked address (a shared office or NAT address) can still lift
        // it; it needs the operator credential all the same.
        let admitted = if route == LIFT_BLOCK_ROUTE {
            Ok(())
        } else {
            admit_operator_address(&s.svc, ip).await
        };
        let (resp, credential) = match admitted {
            Err(refused) => (refused_response(*refused), None),
            Ok(()) => {
                let authorization = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let cookie = session_cookie(&req, SessionKind::Operator);
                let authenticated = match (authorization, cookie) {
                    (None, Some(cookie)) => {
                        let csrf = header_str(&req, console::CSRF_HEADER);
                        match console::resolve(
                            &s.svc,
                            SessionKind::Operator,
                            &cookie,
                            &method,
                            csrf.as_deref(),
                        )
                        .await
                        {
                            Ok(session) => {
                                let op =
                                    operators::authenticate_hash(&s.svc, &session.credential_hash)
                                        .await;
                                req.extensions_mut().insert(session);
                                op
                            }
                            Err(e) => Err(e),
                        }
                    }
                    (authorization, _) => {
                        operators::authenticate(&s.svc, authorization.as_deref()).await
                    }
                };
                match authenticated {
                    Ok(op) => {
                        tracing::Span::current()
                            .record("account_id", format!("operator:{}", op.name).as_str());
                        let credential = op.credential.clone();
                        req.extensions_mut().insert(op);
                        (next.run(req).await, Some(credential))
                    }
                    Err(e) => {
                        if e.code() == shared::service::ErrorCode::Unauthorized {
                            operator_auth_failed(&s.svc, ip).await;
                        }
                        (ApiError(e).into_response(), None)
                    }
                }
            }
        };
        // A call without the operator credential is nobody's: tallied, not written one by one.
        // With one, the usage record names the credential (and so the operator).
        let owner = if credential.is_some() {
            "_operator"
        } else {
            UNAUTHENTICATED
        };
        (resp, owner.to_string(), 365, credential, false)
    } else if !customer {
        let resp = next.run(req).await;
        (resp, UNAUTHENTICATED.to_string(), 90, None, false)
    } else {
        let authorization = header_str(&req, header::AUTHORIZATION.as_str());
        let cookie = session_cookie(&req, SessionKind::Customer);
        let csrf = header_str(&req, console::CSRF_HEADER);
        let decision = authorize(
            &s.svc,
            AccessRequest {
                authorization: authorization.as_deref(),
                session_cookie: cookie.as_deref(),
                csrf: csrf.as_deref(),
                method: &method,
                route: &route,
                source_ip: ip,
            },
        )
        .await;
        match decision {
            Ok(granted) => {
                let caller = granted.caller;
                tracing::Span::current().record("account_id", caller.account.account_id.as_str());
                req.extensions_mut().insert(caller.clone());
                if let Some(session) = granted.session {
                    req.extensions_mut().insert(session);
                }
                let mut resp = next.run(req).await;
                set_rate_headers(resp.headers_mut(), &granted.rate);
                (
                    resp,
                    caller.account.account_id.clone(),
                    caller.account.retention_days,
                    Some(caller.key),
                    true,
                )
            }
            Err(refused) => {
                let account = refused
                    .key
                    .as_ref()
                    .map(|k| k.account_id.clone())
                    .unwrap_or_else(|| UNAUTHENTICATED.to_string());
                let key = refused.key.clone();
                (refused_response(*refused), account, 90, key, false)
            }
        }
    };
    let code = resp.extensions().get::<ErrorCodeExt>().map(|c| c.0);
    record(
        &s.svc,
        Answered {
            account_id: &account_id,
            retention_days: retention,
            key: key.as_ref().map(|k| (k, admitted)),
            method: &method,
            route: &route,
            status: resp.status().as_u16(),
            code,
            latency_ms: started.elapsed().as_millis() as u64,
            source_ip: ip,
            request_id: &request_id,
            user_agent: user_agent.as_deref(),
            started_ms,
        },
    )
    .await;
    resp
}
