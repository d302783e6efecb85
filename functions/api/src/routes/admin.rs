//! `/admin/v1`: the operator API, for named operators (their credential checked by the
//! access guard; `Operator` is who is calling).

use crate::error::ApiError;
use crate::extract::{Id, Ids, JsonBody, Operator, Params};
use crate::reply::reply;
use crate::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use shared::domain::access::KeyScope;
use shared::domain::account::{AccountTerms, Plan};
use shared::service::views::{AccountView, ApiKeyView, BlockExemptionView, LedgerEntryView};
use shared::service::{accounts, credits, keys, operators, ErrorCode, Page, ServiceError};

type Result<T> = std::result::Result<T, ApiError>;

impl crate::extract::Body for CreateAccount {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    pub request_id: String,
    pub name: String,
    pub plan: Plan,
    pub retention_days: u32,
    pub max_concurrency: u32,
    #[serde(default)]
    pub min_batch_size: Option<u32>,
}

pub async fn search_accounts(
    State(s): State<AppState>,
    _: Operator,
    Params(p): Params<accounts::SearchParams>,
) -> Result<Json<Page<AccountView>>> {
    Ok(Json(accounts::search(&s.svc, &p).await?))
}

pub async fn create_account(
    State(s): State<AppState>,
    _: Operator,
    body: JsonBody<CreateAccount>,
) -> Result<Response> {
    let b = body.value;
    let terms = AccountTerms::new(
        &b.name,
        b.plan,
        b.retention_days,
        b.max_concurrency,
        b.min_batch_size,
    )
    .map_err(|e| ServiceError::reject(ErrorCode::InvalidAccountTerms, e.to_string()))?;
    let r = accounts::create_account(&s.svc, &b.request_id, terms, &body.fingerprint).await?;
    Ok(reply(r))
}

pub async fn get_account(
    State(s): State<AppState>,
    _: Operator,
    Id(id): Id,
) -> Result<Json<AccountView>> {
    let a = accounts::get_account(&s.svc, &id).await?;
    Ok(Json(AccountView::at(&a, s.svc.now_ms())))
}

pub async fn lift_account_throttle(
    State(s): State<AppState>,
    _: Operator,
    Id(id): Id,
) -> Result<Json<AccountView>> {
    Ok(Json(
        shared::service::access::lift_account_throttle(&s.svc, &id).await?,
    ))
}

/// The operator's keys get every scope unless told otherwise: an account's first key must
/// be able to manage the others.
pub async fn issue_key(
    State(s): State<AppState>,
    _: Operator,
    Id(id): Id,
    body: JsonBody<keys::CreateKey>,
) -> Result<Response> {
    // keys::create reads the account (404 if there is none).
    let r = keys::create(&s.svc, &id, body.value, &body.fingerprint, &KeyScope::ALL).await?;
    Ok(reply(r))
}

pub async fn list_keys(
    State(s): State<AppState>,
    _: Operator,
    Id(id): Id,
) -> Result<Json<Page<ApiKeyView>>> {
    accounts::get_account(&s.svc, &id).await?;
    Ok(Json(keys::list(&s.svc, &id).await?))
}

pub async fn update_key(
    State(s): State<AppState>,
    _: Operator,
    Ids(id, key): Ids,
    body: JsonBody<keys::UpdateKey>,
) -> Result<Json<ApiKeyView>> {
    Ok(Json(
        keys::update(&s.svc, &id, &key, body.value, true).await?,
    ))
}

pub async fn revoke_key(
    State(s): State<AppState>,
    _: Operator,
    Ids(id, key): Ids,
) -> Result<Json<ApiKeyView>> {
    Ok(Json(keys::revoke(&s.svc, &id, &key).await?))
}

pub async fn lift_throttle(
    State(s): State<AppState>,
    _: Operator,
    Ids(id, key): Ids,
) -> Result<Json<ApiKeyView>> {
    Ok(Json(keys::lift_throttle(&s.svc, &id, &key).await?))
}

pub async fn unblock_ip(
    State(s): State<AppState>,
    _: Operator,
    Id(ip): Id,
) -> Result<Json<serde_json::Value>> {
    let addr: std::net::IpAddr = ip
        .parse()
        .map_err(|_| ApiError::new(ErrorCode::NotFound, "not an IP address"))?;
    let (ip, was) = shared::service::access::lift_block(&s.svc, addr).await?;
    Ok(Json(serde_json::json!({ "ip": ip, "was_blocked": was })))
}

pub async fn block_exemptions(
    State(s): State<AppState>,
    _: Operator,
) -> Result<Json<serde_json::Value>> {
    let list = shared::service::access::exemptions(&s.svc).await?;
    Ok(Json(
        serde_json::json!({ "data": list.iter().map(BlockExemptionView::from).collect::<Vec<_>>() }),
    ))
}

pub async fn exempt(
    State(s): State<AppState>,
    _: Operator,
    body: JsonBody<shared::service::access::ExemptionRequest>,
) -> Result<Response> {
    let list = shared::service::access::exempt(&s.svc, body.value).await?;
    let body = serde_json::json!({ "data": list.iter().map(BlockExemptionView::from).collect::<Vec<_>>() });
    Ok((axum::http::StatusCode::CREATED, Json(body)).into_response())
}

/// The range comes percent-encoded in the path (`203.0.113.0%2F24`), or as one address.
pub async fn unexempt(
    State(s): State<AppState>,
    _: Operator,
    Id(cidr): Id,
) -> Result<Json<serde_json::Value>> {
    let was = shared::service::access::unexempt(&s.svc, &cidr).await?;
    Ok(Json(serde_json::json!({ "cidr": cidr, "was_exempt": was })))
}

pub async fn terminate(
    State(s): State<AppState>,
    _: Operator,
    Id(id): Id,
) -> Result<Json<AccountView>> {
    Ok(Json(accounts::terminate(&s.svc, &id).await?))
}

pub async fn reinstate(
    State(s): State<AppState>,
    _: Operator,
    Id(id): Id,
) -> Result<Json<AccountView>> {
    Ok(Json(accounts::reinstate(&s.svc, &id).await?))
}

pub async fn account_usage(
    State(s): State<AppState>,
    _: Operator,
    Id(id): Id,
    Params(p): Params<keys::UsageParams>,
) -> Result<Json<Page<shared::service::views::UsageView>>> {
    if id != shared::service::access::UNAUTHENTICATED {
        accounts::get_account(&s.svc, &id).await?;
    }
    Ok(Json(keys::usage(&s.svc, &id, &p).await?))
}

pub async fn grant(
    State(s): State<AppState>,
    Operator(op): Operator,
    Id(id): Id,
    body: JsonBody<credits::GrantRequest>,
) -> Result<Response> {
    let r = credits::grant(&s.svc, &id, body.value, &body.fingerprint, &op.name).await?;
    Ok(reply(r))
}

pub async fn account_ledger(
    State(s): State<AppState>,
    _: Operator,
    Id(id): Id,
    Params(p): Params<credits::LedgerParams>,
) -> Result<Json<Page<LedgerEntryView>>> {
    let a = accounts::get_account(&s.svc, &id).await?;
    Ok(Json(credits::ledger(&s.svc, &a.account_id, &p).await?))
}

pub async fn set_model_status(
    State(s): State<AppState>,
    _: Operator,
    Id(model): Id,
    body: JsonBody<shared::service::models::SetStatus>,
) -> Result<Json<shared::service::models::ModelView>> {
    Ok(Json(
        shared::service::models::set_status(&s.svc, &model, body.value).await?,
    ))
}

pub async fn adjust(
    State(s): State<AppState>,
    Operator(op): Operator,
    Id(id): Id,
    body: JsonBody<credits::AdjustRequest>,
) -> Result<Response> {
    let r = credits::adjust(&s.svc, &id, body.value, &body.fingerprint, &op.name).await?;
    Ok(reply(r))
}

pub async fn reconcile_all(
    State(s): State<AppState>,
    _: Operator,
) -> Result<Json<shared::service::reconcile::Summary>> {
    Ok(Json(shared::service::reconcile::all(&s.svc).await?))
}

pub async fn update_account(
    State(s): State<AppState>,
    _: Operator,
    Id(id): Id,
    body: JsonBody<accounts::AccountTermsChange>,
) -> Result<Json<AccountView>> {
    Ok(Json(accounts::change_terms(&s.svc, &id, body.value).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOperator {
    pub name: String,
}

pub async fn list_operators(
    State(s): State<AppState>,
    _: Operator,
) -> Result<Json<Page<operators::OperatorView>>> {
    Ok(Json(Page {
        data: operators::list(&s.svc).await?,
        has_more: false,
        next_cursor: None,
    }))
}

pub async fn get_operator(
    State(s): State<AppState>,
    _: Operator,
    Id(name): Id,
) -> Result<Json<operators::OperatorView>> {
    operators::list(&s.svc)
        .await?
        .into_iter()
        .find(|o| o.name == name)
        .map(Json)
        .ok_or_else(|| ServiceError::not_found("operator").into())
}

pub async fn create_operator(
    State(s): State<AppState>,
    Operator(by): Operator,
    body: JsonBody<CreateOperator>,
) -> Result<Response> {
    let created = operators::create(&s.svc, &body.value.name).await?;
    tracing::info!(operator = %created.name, by = %by.name, "operator created");
    Ok((axum::http::StatusCode::CREATED, Json(created)).into_response())
}

pub async fn rotate_operator(
    State(s): State<AppState>,
    Operator(by): Operator,
    Id(name): Id,
) -> Result<Json<operators::OperatorView>> {
    let rotated = operators::rotate(&s.svc, &name).await?;
    tracing::info!(operator = %name, by = %by.name, "operator credential rotated");
    Ok(Json(rotated))
}

pub async fn revoke_operator(
    State(s): State<AppState>,
    Operator(by): Operator,
    Id(name): Id,
) -> Result<Json<operators::OperatorView>> {
    let revoked = operators::revoke(&s.svc, &name).await?;
    tracing::info!(operator = %name, by = %by.name, "operator revoked");
    Ok(Json(revoked))
}

/// `GET /admin/v1/accounts/{account_id}/sla/{month}`: an account's report, as it sees it.
pub async fn account_sla(
    State(s): State<AppState>,
    _: Operator,
    Ids(id, month): Ids,
    Params(p): Params<shared::service::sla::Params>,
) -> Result<Response> {
    let a = accounts::get_account(&s.svc, &id).await?;
    let (content_type, body) = shared::service::sla::render(&s.svc, &a, &month, &p).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, content_type)], body).into_response())
}

/// `GET /admin/v1/sla/{month}`: every account's month and the probe's.
pub async fn platform_sla(
    State(s): State<AppState>,
    _: Operator,
    Id(month): Id,
) -> Result<Json<shared::service::sla::PlatformReport>> {
    Ok(Json(shared::service::sla::platform(&s.svc, &month).await?))
}

/// `POST /admin/v1/sla/{month}/close`: what the month-close function does on its schedule,
/// now (safe to repeat: each account's month closes once).
pub async fn close_sla_month(
    State(s): State<AppState>,
    _: Operator,
    Id(month): Id,
) -> Result<Json<shared::service::sla::CloseSummary>> {
    Ok(Json(
        shared::service::sla::close_month(&s.svc, &month).await?,
    ))
}
