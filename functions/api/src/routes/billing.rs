//! `/v1` billing: invoices, the billing profile they are issued to, checkout and pro-forma
//! invoices. The rules live in `shared::service::invoices` and `billing`.

use crate::error::ApiError;
use crate::extract::{Customer, Id, JsonBody, Operator, Params};
use crate::reply::reply;
use crate::AppState;
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use shared::domain::invoice::{BillingProfile, Series};
use shared::service::invoices::{self, InvoiceDetail, InvoiceView};
use shared::service::Page;

type Result<T> = std::result::Result<T, ApiError>;

pub async fn list_invoices(
    State(s): State<AppState>,
    Customer(c): Customer,
    Params(p): Params<invoices::ListParams>,
) -> Result<Json<Page<InvoiceView>>> {
    Ok(Json(
        invoices::list(&s.svc, &c.account.account_id, Series::Invoice, &p).await?,
    ))
}

pub async fn get_invoice(
    State(s): State<AppState>,
    Customer(c): Customer,
    Id(id): Id,
) -> Result<Json<InvoiceDetail>> {
    Ok(Json(
        invoices::get(&s.svc, &c.account.account_id, &id, Series::Invoice).await?,
    ))
}

/// `{"billing_profile": null}` until one is set.
#[derive(serde::Serialize)]
pub struct ProfileReply {
    billing_profile: Option<BillingProfile>,
}

pub async fn get_profile(
    State(s): State<AppState>,
    Customer(c): Customer,
) -> Result<Json<ProfileReply>> {
    Ok(Json(ProfileReply {
        billing_profile: invoices::profile(&s.svc, &c.account.account_id).await?,
    }))
}

pub async fn put_profile(
    State(s): State<AppState>,
    Customer(c): Customer,
    body: JsonBody<invoices::ProfileRequest>,
) -> Result<Json<ProfileReply>> {
    let p = invoices::set_profile(&s.svc, &c.account.account_id, body.value).await?;
    Ok(Json(ProfileReply {
        billing_profile: Some(p),
    }))
}

/// `POST /v1/checkout`: a Stripe Checkout page for a pack or a top-up.
pub async fn create_checkout(
    State(s): State<AppState>,
    Customer(c): Customer,
    body: JsonBody<shared::service::billing::CheckoutRequest>,
) -> Result<Response> {
    tracing::Span::current().record("request_key", body.value.request_id.as_str());
    let r = shared::service::billing::checkout(&s.svc, &c.account, body.value, &body.fingerprint)
        .await?;
    Ok(reply(r))
}

pub async fn create_pro_forma(
    State(s): State<AppState>,
    Customer(c): Customer,
    body: JsonBody<invoices::ProFormaRequest>,
) -> Result<Response> {
    tracing::Span::current().record("request_key", body.value.request_id.as_str());
    let r =
        invoices::request_pro_forma(&s.svc, &c.account.account_id, body.value, &body.fingerprint)
            .await?;
    Ok(reply(r))
}

pub async fn list_pro_formas(
    State(s): State<AppState>,
    Customer(c): Customer,
    Params(p): Params<invoices::ListParams>,
) -> Result<Json<Page<InvoiceView>>> {
    Ok(Json(
        invoices::list(&s.svc, &c.account.account_id, Series::ProForma, &p).await?,
    ))
}

pub async fn get_pro_forma(
    State(s): State<AppState>,
    Customer(c): Customer,
    Id(id): Id,
) -> Result<Json<InvoiceDetail>> {
    Ok(Json(
        invoices::get(&s.svc, &c.account.account_id, &id, Series::ProForma).await?,
    ))
}

/// Operators: a pro-forma for a card-less customer.
pub async fn admin_create_pro_forma(
    State(s): State<AppState>,
    _: Operator,
    Id(id): Id,
    body: JsonBody<invoices::ProFormaRequest>,
) -> Result<Response> {
    shared::service::accounts::get_account(&s.svc, &id).await?;
    let r = invoices::request_pro_forma(&s.svc, &id, body.value, &body.fingerprint).await?;
    Ok(reply(r))
}

/// Operators: a wire transfer arrived quoting a pro-forma.
pub async fn record_wire(
    State(s): State<AppState>,
    Operator(op): Operator,
    Id(id): Id,
    body: JsonBody<invoices::WireReceipt>,
) -> Result<Response> {
    tracing::info!(operator = %op.name, account = %id, reference = %body.value.reference, "wire receipt recorded");
    Ok(reply(invoices::record_wire(&s.svc, &id, body.value).await?))
}

pub async fn list_summaries(
    State(s): State<AppState>,
    Customer(c): Customer,
    Params(p): Params<invoices::ListParams>,
) -> Result<Json<Page<InvoiceView>>> {
    Ok(Json(
        invoices::list(&s.svc, &c.account.account_id, Series::Summary, &p).await?,
    ))
}

pub async fn get_summary(
    State(s): State<AppState>,
    Customer(c): Customer,
    Id(id): Id,
) -> Result<Json<InvoiceDetail>> {
    Ok(Json(
        invoices::get(&s.svc, &c.account.account_id, &id, Series::Summary).await?,
    ))
}
