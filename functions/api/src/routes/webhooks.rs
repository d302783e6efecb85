//! `/v1/webhook-endpoints` and `/v1/events`: thin handlers over `service::webhooks`.

use crate::error::ApiError;
use crate::extract::{Customer, Id, JsonBody, Params};
use crate::reply::reply;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use shared::service::views::{DeliveryView, EndpointView};
use shared::service::webhooks::{self, deliveries};
use shared::service::{events, Page};

type Result<T> = std::result::Result<T, ApiError>;

pub async fn create_endpoint(
    State(s): State<AppState>,
    Customer(c): Customer,
    body: JsonBody<webhooks::CreateEndpoint>,
) -> Result<Response> {
    let r = webhooks::create(&s.svc, &c, body.value, &body.fingerprint).await?;
    Ok(reply(r))
}

pub async fn list_endpoints(
    State(s): State<AppState>,
    Customer(c): Customer,
) -> Result<Json<Page<EndpointView>>> {
    Ok(Json(webhooks::list(&s.svc, &c.account.account_id).await?))
}

pub async fn get_endpoint(
    State(s): State<AppState>,
    Customer(c): Customer,
    Id(id): Id,
) -> Result<Json<EndpointView>> {
    Ok(Json(
        webhooks::get(&s.svc, &c.account.account_id, &id).await?,
    ))
}

pub async fn update_endpoint(
    State(s): State<AppState>,
    Customer(c): Customer,
    Id(id): Id,
    body: JsonBody<webhooks::UpdateEndpoint>,
) -> Result<Json<EndpointView>> {
    Ok(Json(
        webhooks::update(&s.svc, &c.account.account_id, &id, body.value).await?,
    ))
}

pub async fn delete_endpoint(
    State(s): State<AppState>,
    Customer(c): Customer,
    Id(id): Id,
) -> Result<Json<serde_json::Value>> {
    Ok(Json(
        webhooks::delete(&s.svc, &c.account.account_id, &id).await?,
    ))
}

pub async fn rotate_secret(
    State(s): State<AppState>,
    Customer(c): Customer,
    Id(id): Id,
    body: JsonBody<webhooks::RotateSecret>,
) -> Result<Response> {
    let r = webhooks::rotate_secret(
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

pub async fn list_deliveries(
    State(s): State<AppState>,
    Customer(c): Customer,
    Id(id): Id,
    Params(p): Params<deliveries::ListParams>,
) -> Result<Json<Page<DeliveryView>>> {
    Ok(Json(
        deliveries::list(&s.svc, &c.account.account_id, &id, &p).await?,
    ))
}

pub async fn recover(
    State(s): State<AppState>,
    Customer(c): Customer,
    Id(id): Id,
    body: JsonBody<deliveries::Recover>,
) -> Result<Response> {
    let r = deliveries::recover(&s.svc, &c.account.account_id, &id, body.value).await?;
    Ok((StatusCode::ACCEPTED, Json(r)).into_response())
}

pub async fn list_events(
    State(s): State<AppState>,
    Customer(c): Customer,
    Params(p): Params<events::ListParams>,
) -> Result<Json<Page<serde_json::Value>>> {
    Ok(Json(events::list(&s.svc, &c.account.account_id, &p).await?))
}

pub async fn get_event(
    State(s): State<AppState>,
    Customer(c): Customer,
    Id(id): Id,
) -> Result<Response> {
    let body = events::get(&s.svc, &c.account.account_id, &id).await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

pub async fn redeliver(
    State(s): State<AppState>,
    Customer(c): Customer,
    Id(id): Id,
    body: JsonBody<deliveries::Redeliver>,
) -> Result<Response> {
    let r = deliveries::redeliver(&s.svc, &c.account.account_id, &id, body.value).await?;
    Ok((StatusCode::ACCEPTED, Json(r)).into_response())
}
