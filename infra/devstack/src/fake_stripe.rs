//! A fake Stripe on loopback that speaks the parts of Stripe's protocol we use: form-encoded
//! `POST /v1/checkout/sessions` with bracketed keys, the secret key as bearer token,
//! `Idempotency-Key` (the same key and parameters replay the first answer with
//! `Idempotent-Replayed: true`; other parameters are an `idempotency_error`), Stripe's error
//! objects, and a hosted payment page whose "Pay" sends the signed
//! `checkout.session.completed` event to the webhook endpoint, retrying until it gets a 2xx.
//!
//! The local stack runs it (`devstack fake-stripe`), the tests start one per app, and the
//! console's browser test pays through its page.

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Epoch seconds, from whatever clock the caller runs on (tests: their manual clock).
pub type Now = Arc<dyn Fn() -> i64 + Send + Sync>;

pub struct Config {
    /// The `sk_test_...` key clients must present.
    pub secret_key: String,
    /// Where events go (our `POST /webhooks/stripe`), and the endpoint's signing secret.
    pub webhook_url: Option<String>,
    pub webhook_secret: String,
    pub now: Now,
}

/// A request's parameters, sorted: what an idempotency key was first used with.
type Params = Vec<(String, String)>;

#[derive(Default)]
struct Sessions {
    by_id: BTreeMap<String, Value>,
    /// Idempotency-Key -> (the request's parameters, the answer's status and body).
    idempotency: HashMap<String, (Params, u16, Value)>,
    next: u64,
    /// Test control: the next create answers this status (a Stripe outage).
    fail_next: Option<u16>,
    /// Every create request's form, for tests that check what we sent.
    forms: Vec<Vec<(String, String)>>,
}

struct Inner {
    cfg: Config,
    /// Where events go; the tests set it once their API listens.
    webhook_url: Mutex<Option<String>>,
    base: String,
    sessions: Mutex<Sessions>,
    http: reqwest::Client,
}

#[derive(Clone)]
pub struct FakeStripe(Arc<Inner>);

fn stripe_error(status: StatusCode, kind: &str, code: Option<&str>, message: &str) -> Response {
    let mut e = json!({"type": kind, "message": message});
    if let Some(c) = code {
        e["code"] = json!(c);
    }
    (status, Json(json!({ "error": e }))).into_response()
}

impl FakeStripe {
    /// Serves on 127.0.0.1:`port` (0: any free port).
    pub async fn start(cfg: Config, port: u16) -> std::io::Result<FakeStripe> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let base = format!("http://{}", listener.local_addr()?);
        let fake = FakeStripe(Arc::new(Inner {
            webhook_url: Mutex::new(cfg.webhook_url.clone()),
            cfg,
            base,
            sessions: Mutex::default(),
            http: shared::adapters::providers::http_client(15),
        }));
        let app = Router::new()
            .route("/v1/checkout/sessions", post(create))
            .route("/v1/checkout/sessions/{id}", get(retrieve))
            .route("/pay/{id}", get(page).post(pay_page))
            .route("/_test/sessions/{id}/pay", post(pay_now))
            .route("/_test/fail-next/{status}", post(fail_next))
            .with_state(fake.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(fake)
    }

    pub fn base(&self) -> &str {
        &self.0.base
    }

    /// Sends events to `url` from now on.
    pub fn set_webhook(&self, url: &str) {
        *self
            .0
            .webhook_url
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(url.to_string());
    }

    /// The forms of every session create request so far.
    pub fn forms(&self) -> Vec<Vec<(String, String)>> {
        self.lock().forms.clone()
    }

    pub fn session(&self, id: &str) -> Option<Value> {
        self.lock().by_id.get(id).cloned()
    }

    /// The next create answers `status` with Stripe's error object.
    pub fn fail_next(&self, status: u16) {
        self.lock().fail_next = Some(status);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.0
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The customer pays: the session completes and its event goes to the webhook endpoint.
    /// Returns the endpoint's status (None: no endpoint, or it could not be reached).
    pub async fn pay(&self, id: &str) -> Result<Option<u16>, String> {
        let session = {
            let mut st = self.lock();
            let n = st.next;
            st.next += 1;
            let s = st.by_id.get_mut(id).ok_or("no such session")?;
            if s["status"] == "complete" {
                s.clone()
            } else {
                s["status"] = json!("complete");
                s["payment_status"] = json!("paid");
                s["payment_intent"] = json!(format!("pi_test_{n:06}"));
                s.clone()
            }
        };
        let event = json!({
            "id": format!("evt_test_{}", id.trim_start_matches("cs_test_")),
            "object": "event",
            "api_version": "2024-06-20",
            "created": (self.0.cfg.now)(),
            "livemode": false,
            "type": "checkout.session.completed",
            "data": {"object": session},
        });
        Ok(self.deliver(&event).await)
    }

    /// Stripe refunds `cents` more of a paid session's charge (`charge.refunded`, with the
    /// charge's cumulative `amount_refunded`). Returns the endpoint's status.
    pub async fn refund(&self, id: &str, cents: i64) -> Result<Option<u16>, String> {
        let (charge, n) = {
            let mut st = self.lock();
            let n = st.next;
            st.next += 1;
            let s = st.by_id.get_mut(id).ok_or("no such session")?;
            let pi = s["payment_intent"]
                .as_str()
                .ok_or("the session is not paid")?
                .to_string();
            let total = s["amount_total"].as_i64().unwrap_or(0);
            let refunded = (s["amount_refunded"].as_i64().unwrap_or(0) + cents).min(total);
            s["amount_refunded"] = json!(refunded);
            let charge = json!({
                "id": format!("ch_{}", pi.trim_start_matches("pi_")),
                "object": "charge",
                "amount": total,
                "amount_refunded": refunded,
                "currency": "usd",
                "payment_intent": pi,
                "refunded": refunded == total,
            });
            (charge, n)
        };
        let event = self.event(n, "charge.refunded", charge);
        Ok(self.deliver(&event).await)
    }

    /// The cardholder disputes a paid session's charge (`charge.dispute.created`).
    pub async fn dispute(&self, id: &str) -> Result<Option<u16>, String> {
        let (dispute, n) = {
            let mut st = self.lock();
            let n = st.next;
            st.next += 1;
            let s = st.by_id.get(id).ok_or("no such session")?;
            let pi = s["payment_intent"]
                .as_str()
                .ok_or("the session is not paid")?
                .to_string();
            let dispute = json!({
                "id": format!("dp_test_{n:06}"),
                "object": "dispute",
                "amount": s["amount_total"],
                "charge": format!("ch_{}", pi.trim_start_matches("pi_")),
                "currency": "usd",
                "payment_intent": pi,
                "reason": "fraudulent",
                "status": "needs_response",
            });
            (dispute, n)
        };
        let event = self.event(n, "charge.dispute.created", dispute);
        Ok(self.deliver(&event).await)
    }

    fn event(&self, n: u64, kind: &str, object: Value) -> Value {
        json!({
            "id": format!("evt_test_{n:06}"),
            "object": "event",
            "api_version": "2024-06-20",
            "created": (self.0.cfg.now)(),
            "livemode": false,
            "type": kind,
            "data": {"object": object},
        })
    }

    async fn deliver(&self, event: &Value) -> Option<u16> {
        let url = self
            .0
            .webhook_url
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()?;
        let body = event.to_string();
        let signature = shared::domain::stripe::sign(
            body.as_bytes(),
            &self.0.cfg.webhook_secret,
            (self.0.cfg.now)(),
        );
        let r = self
            .0
            .http
            .post(&url)
            .header("content-type", "application/json")
            .header("stripe-signature", signature)
            .body(body)
            .send()
            .await
            .ok()?;
        Some(r.status().as_u16())
    }
}

fn field<'a>(form: &'a [(String, String)], k: &str) -> Option<&'a str> {
    form.iter()
        .find(|(name, _)| name == k)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

async fn create(
    State(f): State<FakeStripe>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth != format!("Bearer {}", f.0.cfg.secret_key) {
        return stripe_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            None,
            "Invalid API Key provided.",
        );
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut sorted = form.clone();
    sorted.sort();
    let mut st = f.lock();
    st.forms.push(form.clone());
    if let Some(k) = &key {
        if let Some((params, status, body)) = st.idempotency.get(k) {
            if *params != sorted {
                return stripe_error(
                    StatusCode::BAD_REQUEST,
                    "idempotency_error",
                    None,
                    &format!(
                        "Keys for idempotent requests can only be used with the same parameters \
                         they were first used with. Try using a key other than '{k}' if you \
                         meant to execute a different request."
                    ),
                );
            }
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            return (
                status,
                [("idempotent-replayed", "true")],
                Json(body.clone()),
            )
                .into_response();
        }
    }
    if let Some(status) = st.fail_next.take() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return stripe_error(status, "api_error", None, "An unknown error occurred.");
    }
    let (status, body) = match session_from(&f, &form, st.next) {
        Ok(s) => (StatusCode::OK, s),
        Err((param, message)) => {
            let body = json!({"error": {
                "type": "invalid_request_error", "code": "parameter_missing",
                "param": param, "message": message,
            }});
            (StatusCode::BAD_REQUEST, body)
        }
    };
    st.next += 1;
    if status == StatusCode::OK {
        if let Some(id) = body["id"].as_str() {
            st.by_id.insert(id.to_string(), body.clone());
        }
    }
    if let Some(k) = key {
        st.idempotency
            .insert(k, (sorted, status.as_u16(), body.clone()));
    }
    (status, Json(body)).into_response()
}

/// The session a valid form creates, or (param, message) of the first thing wrong.
fn session_from(
    f: &FakeStripe,
    form: &[(String, String)],
    n: u64,
) -> Result<Value, (String, String)> {
    let missing = |p: &str| (p.to_string(), format!("Missing required param: {p}."));
    if field(form, "mode") != Some("payment") {
        return Err(missing("mode"));
    }
    let success = field(form, "success_url").ok_or_else(|| missing("success_url"))?;
    let mut total = 0i64;
    let mut i = 0;
    while form
        .iter()
        .any(|(k, _)| k.starts_with(&format!("line_items[{i}]")))
    {
        let p = |s: &str| format!("line_items[{i}]{s}");
        if field(form, &p("[price_data][currency]")) != Some("usd") {
            return Err(missing(&p("[price_data][currency]")));
        }
        let amount: i64 = field(form, &p("[price_data][unit_amount]"))
            .and_then(|v| v.parse().ok())
            .filter(|a| *a > 0)
            .ok_or_else(|| missing(&p("[price_data][unit_amount]")))?;
        field(form, &p("[price_data][product_data][name]"))
            .ok_or_else(|| missing(&p("[price_data][product_data][name]")))?;
        let qty: i64 = field(form, &p("[quantity]"))
            .and_then(|v| v.parse().ok())
            .filter(|q| *q > 0)
            .ok_or_else(|| missing(&p("[quantity]")))?;
        total += amount * qty;
        i += 1;
    }
    if i == 0 {
        return Err(missing("line_items"));
    }
    let metadata: BTreeMap<&str, &str> = form
        .iter()
        .filter_map(|(k, v)| {
            let inner = k.strip_prefix("metadata[")?.strip_suffix(']')?;
            Some((inner, v.as_str()))
        })
        .collect();
    let now = (f.0.cfg.now)();
    let id = format!("cs_test_{n:06}{:08x}", now.rem_euclid(1 << 32));
    Ok(json!({
        "id": id,
        "object": "checkout.session",
        "amount_subtotal": total,
        "amount_total": total,
        "cancel_url": field(form, "cancel_url"),
        "client_reference_id": field(form, "client_reference_id"),
        "created": now,
        "currency": "usd",
        "customer_email": field(form, "customer_email"),
        "expires_at": now + 86_400,
        "livemode": false,
        "metadata": metadata,
        "mode": "payment",
        "payment_intent": null,
        "payment_status": "unpaid",
        "status": "open",
        "success_url": success,
        "url": format!("{}/pay/{id}", f.0.base),
    }))
}

async fn retrieve(State(f): State<FakeStripe>, Path(id): Path<String>) -> Response {
    match f.session(&id) {
        Some(s) => Json(s).into_response(),
        None => stripe_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("resource_missing"),
            &format!("No such checkout.session: '{id}'"),
        ),
    }
}

/// The hosted payment page: what is bought, and a button that pays.
async fn page(State(f): State<FakeStripe>, Path(id): Path<String>) -> Response {
    let Some(s) = f.session(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Html("<h1>No such checkout session</h1>"),
        )
            .into_response();
    };
    let cents = s["amount_total"].as_i64().unwrap_or(0);
    Html(format!(
        "<!doctype html><meta charset=utf-8><title>Fake Stripe Checkout</title>\
         <h1>Fake Stripe Checkout</h1><p>Test mode: no card is charged.</p>\
         <p id=amount>Pay US${}.{:02}</p>\
         <form method=post action=\"/pay/{id}\"><button id=pay type=submit>Pay</button></form>",
        cents / 100,
        cents % 100
    ))
    .into_response()
}

/// "Pay" on the page: completes the session, sends the event (retried in the background
/// until the endpoint answers 2xx, as Stripe does), and returns to the success URL.
async fn pay_page(State(f): State<FakeStripe>, Path(id): Path<String>) -> Response {
    let delivered = match f.pay(&id).await {
        Ok(d) => d,
        Err(e) => return (StatusCode::NOT_FOUND, e).into_response(),
    };
    if !delivered.is_some_and(|s| (200..300).contains(&s)) {
        let f2 = f.clone();
        let id2 = id.clone();
        tokio::spawn(async move {
            for attempt in 0..8u32 {
                tokio::time::sleep(std::time::Duration::from_millis(500 << attempt.min(5))).await;
                if f2
                    .pay(&id2)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|s| (200..300).contains(&s))
                {
                    return;
                }
            }
        });
    }
    let success = f
        .session(&id)
        .and_then(|s| s["success_url"].as_str().map(str::to_string))
        .unwrap_or_default()
        .replace("{CHECKOUT_SESSION_ID}", &id);
    Redirect::to(&success).into_response()
}

/// Test control: pays a session and answers what the webhook endpoint said.
async fn pay_now(State(f): State<FakeStripe>, Path(id): Path<String>) -> Response {
    match f.pay(&id).await {
        Ok(status) => Json(json!({"webhook_status": status})).into_response(),
        Err(e) => (StatusCode::NOT_FOUND, e).into_response(),
    }
}

async fn fail_next(State(f): State<FakeStripe>, Path(status): Path<u16>) -> StatusCode {
    f.fail_next(status);
    StatusCode::NO_CONTENT
}
