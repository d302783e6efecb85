//! The synthetic probe (contract 3.1; docs/SLA.md): once a minute it calls the public API as
//! a customer would, through everything a customer's request goes through (API Gateway, the
//! function, the access guard, DynamoDB), so a minute in which the API cannot answer is known
//! even when no customer is calling, and even when nothing reaches our function (a gateway
//! that throttles or times out, a function that does not start).
//!
//! A minute passes when `GET /health` answers 200 with `{"status":"ok"}` and, with the
//! probe's own read-only key, `GET /v1/credits` answers 200, each within [`TIMEOUT`]. Any other
//! answer, or none, fails the minute, and what was seen is kept as its cause.

use shared::domain::sla::minute_of;
use shared::service::Services;
use std::time::Duration;

/// How long one call may take before the minute counts as failed.
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Probe {
    http: reqwest::Client,
    base: String,
    /// The probe account's read-only key; without one only `/health` is called.
    key: Option<String>,
}

impl Probe {
    pub fn new(base: &str, key: Option<String>) -> Result<Self, String> {
        shared::runtime::ensure_tls();
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent("videogen-sla-probe/1")
            .build()
            .map_err(|e| format!("probe client: {e}"))?;
        Ok(Probe {
            http,
            base: base.trim_end_matches('/').to_string(),
            key,
        })
    }

    /// What is wrong with the API now, or `None` when it answered as it should.
    pub async fn check(&self) -> Option<String> {
        let health = self.http.get(format!("{}/health", self.base)).send().await;
        match health {
            Err(e) => return Some(format!("GET /health: {}", reason(&e))),
            Ok(r) if r.status() != 200 => {
                return Some(format!("GET /health: status {}", r.status().as_u16()))
            }
            Ok(r) => match r.json::<serde_json::Value>().await {
                Ok(v) if v["status"] == "ok" => {}
                Ok(v) => return Some(format!("GET /health: unexpected answer {v}")),
                Err(e) => return Some(format!("GET /health: {}", reason(&e))),
            },
        }
        let key = self.key.as_deref()?;
        match self
            .http
            .get(format!("{}/v1/credits", self.base))
            .bearer_auth(key)
            .send()
            .await
        {
            Err(e) => Some(format!("GET /v1/credits: {}", reason(&e))),
            Ok(r) if r.status() != 200 => {
                Some(format!("GET /v1/credits: status {}", r.status().as_u16()))
            }
            Ok(_) => None,
        }
    }

    /// Checks the API and records the minute. Returns what failed, if anything.
    pub async fn run(&self, svc: &Services) -> Result<Option<String>, shared::ports::StoreError> {
        let minute = minute_of(svc.now_ms());
        let failure = self.check().await;
        if let Some(f) = &failure {
            tracing::warn!(failure = %f, "probe: the API did not answer as it should");
        }
        svc.sla.record_probe(minute, failure.as_deref()).await?;
        // The metric the availability burn-rate alarms watch (template.yaml).
        shared::service::metrics::emit(
            svc.now_ms(),
            "ProbeFailed",
            "Count",
            if failure.is_some() { 1.0 } else { 0.0 },
            &[],
            serde_json::json!({"failure": failure}),
        );
        Ok(failure)
    }
}

/// A transport failure in a few words (no URL: the minute's cause names the route).
fn reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!("no answer within {} s", TIMEOUT.as_secs())
    } else if e.is_connect() {
        "could not connect".into()
    } else if e.is_decode() {
        "the answer was not JSON".into()
    } else {
        "the connection failed".into()
    }
}
