//! The outbound webhook client, an adapter of the `WebhookSender` port: no redirects (a 3xx
//! is a failure), a per-attempt timeout, and in the cloud a resolver that drops every
//! address a webhook must not reach.

use crate::config::WebhookConfig;
use crate::domain::webhook::{forbidden_ip, AttemptResult};
use crate::ports::webhooks::PostOutcome;
use crate::ports::{StoreError, WebhookSender};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// In the cloud, an endpoint's host name must resolve, and only to public addresses.
async fn check_public_name(host: &str, port: Option<u16>) -> Result<(), String> {
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port.unwrap_or(443)))
        .await
        .map_err(|e| format!("{host} does not resolve: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} does not resolve"));
    }
    if let Some(bad) = addrs.iter().find(|a| forbidden_ip(a.ip())) {
        let _ = bad;
        return Err(format!(
            "{host} resolves to a loopback, private, link-local or metadata address"
        ));
    }
    Ok(())
}

/// Resolves names and drops every address a webhook must not reach, so a name that resolves
/// (or re-resolves, DNS rebinding) to a private address is never connected to.
struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !forbidden_ip(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            let it: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(it)
        })
    }
}

/// The outbound client: no redirects (a 3xx is a failure), a per-attempt timeout, and in the
/// cloud the guarded resolver.
#[derive(Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    allow_private: bool,
}

impl WebhookClient {
    pub fn new(cfg: WebhookConfig) -> Result<Self, StoreError> {
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .connect_timeout(Duration::from_millis(cfg.timeout_ms.min(10_000)))
            .user_agent("VideoPlatform-Webhooks/1 (+https://www.standardwebhooks.com)");
        if !cfg.allow_private {
            b = b.dns_resolver(Arc::new(GuardedResolver));
        }
        Ok(WebhookClient {
            http: b
                .build()
                .map_err(|e| StoreError::Corrupt(format!("webhook client: {e}")))?,
            allow_private: cfg.allow_private,
        })
    }

    async fn send(&self, url: &str, headers: &[(&str, String)], body: Vec<u8>) -> PostOutcome {
        let started = Instant::now();
        let no_response = |error: String| PostOutcome {
            result: AttemptResult::NoResponse,
            latency_ms: started.elapsed().as_millis() as u64,
            body: None,
            error: Some(error),
        };
        // IP literals never reach the resolver: check them here.
        if !self.allow_private {
            let policy = crate::domain::webhook::UrlPolicy {
                allow_private: false,
            };
            if let Err(e) = crate::domain::webhook::check_url(url, policy) {
                return no_response(e.to_string());
            }
        }
        let mut req = self
            .http
            .post(url)
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = match req.body(body).send().await {
            Ok(r) => r,
            Err(e) => {
                let what = if e.is_timeout() {
                    "timed out".to_string()
                } else if e.is_connect() {
                    format!("could not connect: {}", root_cause(&e))
                } else {
                    format!("request failed: {}", root_cause(&e))
                };
                return no_response(what);
            }
        };
        let code = resp.status().as_u16();
        let retry_after_secs = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        // Read at most what the log keeps; the rest of a large body is not our business.
        let mut kept = Vec::new();
        let mut resp = resp;
        let mut error = None;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    kept.extend_from_slice(&chunk);
                    if kept.len() >= crate::domain::webhook::LOGGED_BODY_BYTES {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    error = Some(format!("reading the response: {}", root_cause(&e)));
                    break;
                }
            }
        }
        PostOutcome {
            result: AttemptResult::Status {
                code,
                retry_after_secs,
            },
            latency_ms: started.elapsed().as_millis() as u64,
            body: Some(crate::domain::webhook::truncate_body(&kept)),
            error,
        }
    }
}

#[async_trait]
impl WebhookSender for WebhookClient {
    async fn post(&self, url: &str, headers: &[(&str, String)], body: Vec<u8>) -> PostOutcome {
        self.send(url, headers, body).await
    }

    async fn check_public_name(&self, host: &str, port: Option<u16>) -> Result<(), String> {
        check_public_name(host, port).await
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
