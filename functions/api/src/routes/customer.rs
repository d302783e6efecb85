//! `/v1`: what a customer's API key can do. Every handler scopes by the caller's account.

use crate::error::ApiError;
use crate::extract::{Customer, Id, JsonBody, Params};
use crate::reply::reply;
use crate::AppState;
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use shared::service::access::scopes_of;
use shared::service::views::{
    AccountView, ApiKeyView, BatchView, CreditsView, FileView, LedgerEntryView, TaskView, UsageView,
};
use shared::service::{accounts, batches, credits, exports, files, keys, models, Page};

type Result<T> = std::result::Result<T, ApiError>;

pub async fn get_credits(Customer(c): Customer) -> Json<CreditsView> {
    Json(credits::summary(&c.account))
}

pub async fn list_ledger(
    State(s): State<AppState>,
    Customer(c): Customer,
    Params(p): Params<credits::LedgerParams>,
) -> Result<Json<Page<LedgerEntryView>>> {
    Ok(Json(
        credits::ledger(&s.svc, &c.account.account_id, &p).await?,
    ))
}

pub async fn create_batch(
    State(s): State<AppState>,
    Customer(c): Customer,
    body: JsonBody<batches::SubmitBatch>,
) -> Result<Response> {
    tracing::Span::current().record("request_key", body.value.request_id.as_str());
    let r = batches::submit(&s.svc, &c, body.value, &body.fingerprint).await?;
    Ok(reply(r))
}

pub async fn list_batches(
    State(s): State<AppState>,
    Customer(c): Customer,
    Params(p): Params<batches::ListParams>,
) -> Result<Json<Page<BatchView>>> {
    Ok(Json(
        batches::list(&s.svc, &c.account.account_id, &p).await?,
    ))
}

pub async fn get_batch(
    State(s): State<AppState>,
    Customer(c): Customer,
    Id(id): Id,
) -> Result<Json<BatchView>> {
    tracing::Span::current().record("batch_id", id.as_str());
    Ok(Json(
        batches::view(&s.svc, &c.account.account_id, &id).await?,
    ))
}

pub async fn cancel_batch(
    State(s): State<AppState>,
    Customer(c): Customer,
    Id(id): Id,
    body: JsonBody<batches::CancelBatch>,
) -> Result<Response> {
    tracing::Span::current().record("batch_id", id.as_str());
    let r = batches::cancel(
        &s.svc,
        &c.account.account_id,
        c.account.retention_days,
        &id,
        body.value,
        &body.fingerprint,
    )
    .await?;
    Ok(reply(r))
}

pub async fn get_task(
    State(s): State<AppState>,
    Customer(c): Customer,
    Id(id): Id,
) -> Result<Json<TaskView>> {
    Ok(Json(
        batches::task(&s.svc, &c.account.account_id, &id).await?,
    ))
}

pub async fn list_models(
    State(s): State<AppState>,
    _: Customer,
) -> Result<Json<serde_json::Value>> {
    let models = models::list(&s.svc).await?;
    Ok(Json(serde_json::json!({ "data": models })))
}

pub async fn list_tasks(
    State(s): State<AppState>,
    Customer(c): Customer,
    Id(id): Id,
    Params(p): Params<batches::TaskListParams>,
) -> Result<Json<Page<TaskView>>> {
    tracing::Span::current().record("batch_id", id.as_str());
    Ok(Json(
        batches::tasks(&s.svc, &c.account.account_id, &id, &p).await?,
    ))
}

pub async fn create_file(
    State(s): State<AppState>,
    Customer(c): Customer,
    body: JsonBody<files::CreateFile>,
) -> Result<Response> {
    let r = files::create(&s.svc, &c, body.value, &body.fingerprint).await?;
    Ok(reply(r))
}

pub async fn get_file(
    State(s): State<AppState>,
    Customer(c): Customer,
    Id(id): Id,
) -> Result<Json<FileView>> {
    Ok(Json(files::get(&s.svc, &c, &id).await?))
}

pub async fn get_account(State(s): State<AppState>, Customer(c): Customer) -> Json<AccountView> {
    Json(AccountView::at(&c.account, s.svc.now_ms()))
}

pub async fn update_account(
    State(s): State<AppState>,
    Customer(c): Customer,
    body: JsonBody<accounts::AccountSettings>,
) -> Result<Json<AccountView>> {
    Ok(Json(
        accounts::update_settings(&s.svc, &c.account.account_id, body.value).await?,
    ))
}

pub async fn create_key(
    State(s): State<AppState>,
    Customer(c): Customer,
    body: JsonBody<keys::CreateKey>,
) -> Result<Response> {
    use shared::domain::access::KeyScope;
    let r = keys::create(
        &s.svc,
        &c.account.account_id,
        body.value,
        &body.fingerprint,
        &[KeyScope::Read, KeyScope::BatchesWrite],
    )
    .await?;
    Ok(reply(r))
}

pub async fn list_keys(
    State(s): State<AppState>,
    Customer(c): Customer,
) -> Result<Json<Page<ApiKeyView>>> {
    Ok(Json(keys::list(&s.svc, &c.account.account_id).await?))
}

pub async fn get_key(
    State(s): State<AppState>,
    Customer(c): Customer,
    Id(id): Id,
) -> Result<Json<ApiKeyView>> {
    Ok(Json(keys::get(&s.svc, &c.account.account_id, &id).await?))
}

pub async fn update_key(
    State(s): State<AppState>,
    Customer(c): Customer,
    Id(id): Id,
    body: JsonBody<keys::UpdateKey>,
) -> Result<Json<ApiKeyView>> {
    Ok(Json(
        keys::update(&s.svc, &c.account.account_id, &id, body.value, false).await?,
    ))
}

pub async fn revoke_key(
    State(s): State<AppState>,
    Customer(c): Customer,
    Id(id): Id,
) -> Result<Json<ApiKeyView>> {
    Ok(Json(
        keys::revoke(&s.svc, &c.account.account_id, &id).await?,
    ))
}

pub async fn usage(
    State(s): State<AppState>,
    Customer(c): Customer,
    Params(p): Params<keys::UsageParams>,
) -> Result<Json<Page<UsageView>>> {
    Ok(Json(keys::usage(&s.svc, &c.account.account_id, &p).await?))
}

pub async fn create_export(
    State(s): State<AppState>,
    Customer(c): Customer,
    body: JsonBody<exports::CreateExport>,
) -> Result<Response> {
    let scopes = scopes_of(&c.key);
    let r = exports::create(
        &s.svc,
        &c.account.account_id,
        c.account.retention_days,
        &scopes,
        body.value,
        &body.fingerprint,
    )
    .await?;
    Ok(reply(r))
}

pub async fn list_exports(
    State(s): State<AppState>,
    Customer(c): Customer,
    Params(p): Params<exports::ListParams>,
) -> Result<Json<Page<exports::ExportView>>> {
    Ok(Json(
        exports::list(&s.svc, &c.account.account_id, &scopes_of(&c.key), &p).await?,
    ))
}

pub async fn get_export(
    State(s): State<AppState>,
    Customer(c): Customer,
    Id(id): Id,
) -> Result<Json<exports::ExportView>> {
    Ok(Json(
        exports::get(&s.svc, &c.account.account_id, &scopes_of(&c.key), &id).await?,
    ))
}

pub async fn reconcile(
    State(s): State<AppState>,
    Customer(c): Customer,
) -> Result<Json<shared::service::reconcile::Report>> {
    Ok(Json(
        shared::service::reconcile::account(&s.svc, &c.account).await?,
    ))
}

pub async fn statement(
    State(s): State<AppState>,
    Customer(c): Customer,
    Id(month): Id,
    Params(p): Params<shared::service::statements::Params>,
) -> Result<Response> {
    use axum::response::IntoResponse;
    let (content_type, body) =
        shared::service::statements::render(&s.svc, &c.account, &month, &p).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, content_type)], body).into_response())
}

/// `GET /v1/sla/{month}`: the account's SLA report (JSON, or printable HTML).
pub async fn sla_report(
    State(s): State<AppState>,
    Customer(c): Customer,
    Id(month): Id,
    Params(p): Params<shared::service::sla::Params>,
) -> Result<Response> {
    use axum::response::IntoResponse;
    let (content_type, body) = shared::service::sla::render(&s.svc, &c.account, &month, &p).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, content_type)], body).into_response())
}
