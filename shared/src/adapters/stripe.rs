//! Stripe's REST API, for creating Checkout Sessions: form-encoded requests with bracketed
//! keys (`line_items[0][price_data][unit_amount]`), the secret key as a bearer token, and an
//! `Idempotency-Key` so that a retried request returns the session the first one created.
//! Errors come back as `{"error": {"type", "code"?, "message"}}`.

use crate::ports::billing::{Checkout, CheckoutSession, GatewayError, SessionRequest};
use async_trait::async_trait;
use serde::Deserialize;

/// Stripe's API, unless a deployment (or the local stack's fake) names another.
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";

pub struct StripeClient {
    http: reqwest::Client,
    base: String,
    /// `sk_live_...` / `sk_test_...`; None: card checkout is off.
    secret_key: Option<String>,
}

impl StripeClient {
    pub fn new(base: &str, secret_key: Option<String>) -> Self {
        StripeClient {
            http: super::providers::http_client(20),
            base: base.trim_end_matches('/').to_string(),
            secret_key,
        }
    }
}

/// The form Stripe's API takes for one session.
pub fn session_form(req: &SessionRequest) -> Vec<(String, String)> {
    let mut form = vec![
        ("mode".to_string(), "payment".to_string()),
        ("client_reference_id".to_string(), req.account_id.clone()),
        ("success_url".to_string(), req.success_url.clone()),
        ("cancel_url".to_string(), req.cancel_url.clone()),
    ];
    if let Some(e) = &req.customer_email {
        form.push(("customer_email".into(), e.clone()));
    }
    for (i, (name, cents)) in req.lines.iter().enumerate() {
        let p = format!("line_items[{i}]");
        form.push((format!("{p}[quantity]"), "1".into()));
        form.push((format!("{p}[price_data][currency]"), "usd".into()));
        form.push((format!("{p}[price_data][unit_amount]"), cents.to_string()));
        form.push((format!("{p}[price_data][product_data][name]"), name.clone()));
    }
    for (k, v) in &req.metadata {
        form.push((format!("metadata[{k}]"), v.clone()));
        // The payment (and so its refunds and disputes) carries them too.
        form.push((format!("payment_intent_data[metadata][{k}]"), v.clone()));
    }
    form.push((
        "payment_intent_data[metadata][account_id]".into(),
        req.account_id.clone(),
    ));
    form
}

#[derive(Deserialize)]
struct SessionObject {
    id: String,
    url: Option<String>,
    amount_total: Option<i64>,
    expires_at: Option<i64>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorObject,
}

#[derive(Deserialize)]
struct ErrorObject {
    #[serde(rename = "type")]
    kind: Option<String>,
    code: Option<String>,
    message: Option<String>,
}

#[async_trait]
impl Checkout for StripeClient {
    async fn create_session(&self, req: &SessionRequest) -> Result<CheckoutSession, GatewayError> {
        let key = self
            .secret_key
            .as_deref()
            .ok_or(GatewayError::NotConfigured)?;
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(session_form(req))
            .finish();
        let resp = self
            .http
            .post(format!("{}/v1/checkout/sessions", self.base))
            .bearer_auth(key)
            .header("Idempotency-Key", &req.idempotency_key)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        if status >= 500 || status == 429 {
            return Err(GatewayError::Unavailable(format!("HTTP {status}")));
        }
        if status >= 400 {
            let e = serde_json::from_str::<ErrorBody>(&text)
                .ok()
                .map(|b| b.error);
            return Err(GatewayError::Refused {
                status,
                kind: e
                    .as_ref()
                    .and_then(|e| e.code.clone().or(e.kind.clone()))
                    .unwrap_or_else(|| "unknown".into()),
                message: e
                    .and_then(|e| e.message)
                    .unwrap_or_else(|| text.chars().take(300).collect()),
            });
        }
        let s: SessionObject = serde_json::from_str(&text)
            .map_err(|e| GatewayError::Unavailable(format!("not a checkout session: {e}")))?;
        Ok(CheckoutSession {
            url: s
                .url
                .ok_or_else(|| GatewayError::Unavailable("the session has no url".into()))?,
            id: s.id,
            amount_total: s.amount_total.unwrap_or(0),
            expires_at: s.expires_at,
        })
    }
}
