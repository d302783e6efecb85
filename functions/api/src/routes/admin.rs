//! `/admin/v1`: the operator API, guarded by the operator token.

use crate::error::ApiError;
use crate::extract::{Id, JsonBody, Operator, Params};
use crate::reply::reply;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use shared::domain::account::{AccountTerms, Plan};
use shared::service::views::{AccountView, ApiKeyView, LedgerEntryView};
use shared::service::{accounts, credits, ErrorCode, Page, ServiceError};

type Result<T> = std::result::Result<T, ApiError>;

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
    Ok(Json(AccountView::from(&a)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueKey {
    #[serde(default)]
    pub name: Option<String>,
}

pub async fn issue_key(
    State(s): State<AppState>,
    _: Operator,
    Id(id): Id,
    body: JsonBody<IssueKey>,
) -> Result<(StatusCode, Json<ApiKeyView>)> {
    let k = accounts::issue_key(&s.svc, &id, body.value.name).await?;
    Ok((StatusCode::CREATED, Json(k)))
}

pub async fn grant(
    State(s): State<AppState>,
    _: Operator,
    Id(id): Id,
    body: JsonBody<credits::GrantRequest>,
) -> Result<Response> {
    let r = credits::grant(&s.svc, &id, body.value, &body.fingerprint).await?;
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
