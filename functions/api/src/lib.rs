//! The HTTP API as one axum `Router`: served by Lambda (API Gateway HTTP API) in the cloud,
//! by `axum::serve` on 127.0.0.1 locally and in tests. Same code either way.

mod access;
pub mod error;
pub mod extract;
pub mod reply;
pub mod routes;
mod telemetry;

use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use error::ApiError;
use shared::service::{ErrorCode, Services};

/// Lambda's own request body limit; bigger batches go through input files.
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;

/// The OpenAPI document, served at `/openapi.json` and kept at `docs/openapi.json`.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// Every route the router serves, as the OpenAPI document names it. A test holds the two
/// equal, and another calls each documented route on the live router.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/openapi.json"),
    ("post", "/webhooks/stripe"),
    ("post", "/v1/console/sessions"),
    ("get", "/v1/console/session"),
    ("delete", "/v1/console/session"),
    ("get", "/v1/credits"),
    ("get", "/v1/credits/ledger"),
    ("get", "/v1/credits/reconcile"),
    ("get", "/v1/statements/{month}"),
    ("get", "/v1/sla/{month}"),
    ("post", "/v1/batches"),
    ("get", "/v1/batches"),
    ("get", "/v1/batches/{batch_id}"),
    ("get", "/v1/batches/{batch_id}/tasks"),
    ("post", "/v1/batches/{batch_id}/cancel"),
    ("get", "/v1/tasks/{task_id}"),
    ("get", "/v1/models"),
    ("post", "/v1/files"),
    ("get", "/v1/files/{file_id}"),
    ("get", "/v1/account"),
    ("post", "/v1/api-keys"),
    ("get", "/v1/api-keys"),
    ("get", "/v1/api-keys/{key_id}"),
    ("patch", "/v1/api-keys/{key_id}"),
    ("delete", "/v1/api-keys/{key_id}"),
    ("get", "/v1/usage"),
    ("post", "/v1/exports"),
    ("get", "/v1/exports"),
    ("get", "/v1/exports/{export_id}"),
    ("post", "/v1/checkout"),
    ("get", "/v1/invoices"),
    ("get", "/v1/invoices/{invoice_id}"),
    ("get", "/v1/billing-profile"),
    ("post", "/v1/proforma-invoices"),
    ("get", "/v1/proforma-invoices"),
    ("get", "/v1/proforma-invoices/{proforma_id}"),
    ("get", "/v1/invoice-summaries"),
    ("get", "/v1/invoice-summaries/{summary_id}"),
    ("put", "/v1/billing-profile"),
    ("patch", "/v1/account"),
    ("post", "/v1/webhook-endpoints"),
    ("get", "/v1/webhook-endpoints"),
    ("get", "/v1/webhook-endpoints/{endpoint_id}"),
    ("patch", "/v1/webhook-endpoints/{endpoint_id}"),
    ("delete", "/v1/webhook-endpoints/{endpoint_id}"),
    ("post", "/v1/webhook-endpoints/{endpoint_id}/rotate-secret"),
    ("get", "/v1/webhook-endpoints/{endpoint_id}/deliveries"),
    ("post", "/v1/webhook-endpoints/{endpoint_id}/recover"),
    ("get", "/v1/events"),
    ("get", "/v1/events/{event_id}"),
    ("post", "/v1/events/{event_id}/redeliver"),
    ("post", "/admin/v1/accounts"),
    ("get", "/admin/v1/accounts"),
    ("get", "/admin/v1/accounts/{account_id}"),
    ("post", "/admin/v1/accounts/{account_id}/api-keys"),
    ("get", "/admin/v1/accounts/{account_id}/api-keys"),
    ("patch", "/admin/v1/accounts/{account_id}/api-keys/{key_id}"),
    (
        "delete",
        "/admin/v1/accounts/{account_id}/api-keys/{key_id}",
    ),
    (
        "post",
        "/admin/v1/accounts/{account_id}/api-keys/{key_id}/lift-throttle",
    ),
    ("post", "/admin/v1/accounts/{account_id}/terminate"),
    ("post", "/admin/v1/accounts/{account_id}/lift-throttle"),
    ("post", "/admin/v1/accounts/{account_id}/reinstate"),
    ("get", "/admin/v1/accounts/{account_id}/usage"),
    ("delete", "/admin/v1/ip-blocks/{ip}"),
    ("get", "/admin/v1/ip-block-exemptions"),
    ("post", "/admin/v1/ip-block-exemptions"),
    ("delete", "/admin/v1/ip-block-exemptions/{cidr}"),
    ("post", "/admin/v1/accounts/{account_id}/grants"),
    ("post", "/admin/v1/accounts/{account_id}/proforma-invoices"),
    ("post", "/admin/v1/accounts/{account_id}/wire-receipts"),
    ("post", "/admin/v1/accounts/{account_id}/adjustments"),
    ("patch", "/admin/v1/accounts/{account_id}"),
    ("get", "/admin/v1/reconcile"),
    ("get", "/admin/v1/accounts/{account_id}/sla/{month}"),
    ("get", "/admin/v1/sla/{month}"),
    ("post", "/admin/v1/sla/{month}/close"),
    ("get", "/admin/v1/accounts/{account_id}/ledger"),
    ("put", "/admin/v1/models/{model}"),
    ("post", "/admin/v1/console/sessions"),
    ("post", "/admin/v1/accounts/{account_id}/console-passes"),
    ("get", "/admin/v1/console/session"),
    ("delete", "/admin/v1/console/session"),
    ("get", "/admin/v1/operators"),
    ("post", "/admin/v1/operators"),
    ("get", "/admin/v1/operators/{name}"),
    ("delete", "/admin/v1/operators/{name}"),
    ("post", "/admin/v1/operators/{name}/rotate"),
];

#[derive(Clone)]
pub struct AppState {
    pub svc: Services,
}

pub fn app(svc: Services) -> Router {
    use routes::{admin, billing, console, customer, webhooks};
    let state = AppState { svc };
    Router::new()
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route("/openapi.json", get(openapi))
        .route("/webhooks/stripe", post(routes::payments::stripe_webhook))
        .route("/console", get(console::index))
        .route("/console/", get(console::index))
        .route("/console/{file}", get(console::file))
        .route("/v1/console/sessions", post(console::sign_in))
        .route(
            "/v1/console/session",
            get(console::current).delete(console::sign_out),
        )
        .route(
            "/admin/v1/console/sessions",
            post(console::operator_sign_in),
        )
        .route(
            "/admin/v1/accounts/{account_id}/console-passes",
            post(console::issue_pass),
        )
        .route(
            "/admin/v1/console/session",
            get(console::operator_current).delete(console::operator_sign_out),
        )
        .route("/v1/credits", get(customer::get_credits))
        .route("/v1/credits/ledger", get(customer::list_ledger))
        .route("/v1/credits/reconcile", get(customer::reconcile))
        .route("/v1/statements/{month}", get(customer::statement))
        .route("/v1/sla/{month}", get(customer::sla_report))
        .route(
            "/v1/batches",
            post(customer::create_batch).get(customer::list_batches),
        )
        .route("/v1/batches/{batch_id}", get(customer::get_batch))
        .route("/v1/batches/{batch_id}/tasks", get(customer::list_tasks))
        .route(
            "/v1/batches/{batch_id}/cancel",
            post(customer::cancel_batch),
        )
        .route("/v1/tasks/{task_id}", get(customer::get_task))
        .route("/v1/models", get(customer::list_models))
        .route("/v1/files", post(customer::create_file))
        .route("/v1/files/{file_id}", get(customer::get_file))
        .route(
            "/v1/account",
            get(customer::get_account).patch(customer::update_account),
        )
        .route(
            "/v1/api-keys",
            post(customer::create_key).get(customer::list_keys),
        )
        .route(
            "/v1/api-keys/{key_id}",
            get(customer::get_key)
                .patch(customer::update_key)
                .delete(customer::revoke_key),
        )
        .route("/v1/usage", get(customer::usage))
        .route(
            "/v1/exports",
            post(customer::create_export).get(customer::list_exports),
        )
        .route("/v1/exports/{export_id}", get(customer::get_export))
        .route("/v1/checkout", post(billing::create_checkout))
        .route("/v1/invoices", get(billing::list_invoices))
        .route("/v1/invoices/{invoice_id}", get(billing::get_invoice))
        .route(
            "/v1/billing-profile",
            get(billing::get_profile).put(billing::put_profile),
        )
        .route(
            "/v1/proforma-invoices",
            post(billing::create_pro_forma).get(billing::list_pro_formas),
        )
        .route(
            "/v1/proforma-invoices/{proforma_id}",
            get(billing::get_pro_forma),
        )
        .route("/v1/invoice-summaries", get(billing::list_summaries))
        .route(
            "/v1/invoice-summaries/{summary_id}",
            get(billing::get_summary),
        )
        .route(
            "/admin/v1/accounts/{account_id}/proforma-invoices",
            post(billing::admin_create_pro_forma),
        )
        .route(
            "/admin/v1/accounts/{account_id}/wire-receipts",
            post(billing::record_wire),
        )
        .route(
            "/v1/webhook-endpoints",
            post(webhooks::create_endpoint).get(webhooks::list_endpoints),
        )
        .route(
            "/v1/webhook-endpoints/{endpoint_id}",
            get(webhooks::get_endpoint)
                .patch(webhooks::update_endpoint)
                .delete(webhooks::delete_endpoint),
        )
        .route(
            "/v1/webhook-endpoints/{endpoint_id}/rotate-secret",
            post(webhooks::rotate_secret),
        )
        .route(
            "/v1/webhook-endpoints/{endpoint_id}/deliveries",
            get(webhooks::list_deliveries),
        )
        .route(
            "/v1/webhook-endpoints/{endpoint_id}/recover",
            post(webhooks::recover),
        )
        .route("/v1/events", get(webhooks::list_events))
        .route("/v1/events/{event_id}", get(webhooks::get_event))
        .route("/v1/events/{event_id}/redeliver", post(webhooks::redeliver))
        .route(
            "/admin/v1/accounts",
            post(admin::create_account).get(admin::search_accounts),
        )
        .route(
            "/admin/v1/accounts/{account_id}",
            get(admin::get_account).patch(admin::update_account),
        )
        .route(
            "/admin/v1/accounts/{account_id}/api-keys",
            post(admin::issue_key).get(admin::list_keys),
        )
        .route(
            "/admin/v1/accounts/{account_id}/api-keys/{key_id}",
            axum::routing::patch(admin::update_key).delete(admin::revoke_key),
        )
        .route(
            "/admin/v1/accounts/{account_id}/api-keys/{key_id}/lift-throttle",
            post(admin::lift_throttle),
        )
        .route(
            "/admin/v1/accounts/{account_id}/terminate",
            post(admin::terminate),
        )
        .route(
            "/admin/v1/accounts/{account_id}/lift-throttle",
            post(admin::lift_account_throttle),
        )
        .route(
            "/admin/v1/accounts/{account_id}/reinstate",
            post(admin::reinstate),
        )
        .route(
            "/admin/v1/accounts/{account_id}/sla/{month}",
            get(admin::account_sla),
        )
        .route("/admin/v1/sla/{month}", get(admin::platform_sla))
        .route("/admin/v1/sla/{month}/close", post(admin::close_sla_month))
        .route(
            "/admin/v1/accounts/{account_id}/usage",
            get(admin::account_usage),
        )
        .route(
            "/admin/v1/ip-blocks/{ip}",
            axum::routing::delete(admin::unblock_ip),
        )
        .route(
            "/admin/v1/ip-block-exemptions",
            get(admin::block_exemptions).post(admin::exempt),
        )
        .route(
            "/admin/v1/ip-block-exemptions/{cidr}",
            axum::routing::delete(admin::unexempt),
        )
        .route("/admin/v1/accounts/{account_id}/grants", post(admin::grant))
        .route(
            "/admin/v1/accounts/{account_id}/adjustments",
            post(admin::adjust),
        )
        .route("/admin/v1/reconcile", get(admin::reconcile_all))
        .route(
            "/admin/v1/accounts/{account_id}/ledger",
            get(admin::account_ledger),
        )
        .route(
            "/admin/v1/models/{model}",
            axum::routing::put(admin::set_model_status),
        )
        .route(
            "/admin/v1/operators",
            get(admin::list_operators).post(admin::create_operator),
        )
        .route(
            "/admin/v1/operators/{name}",
            get(admin::get_operator).delete(admin::revoke_operator),
        )
        .route(
            "/admin/v1/operators/{name}/rotate",
            post(admin::rotate_operator),
        )
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "this route does not accept that method",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            telemetry::request_span,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}
