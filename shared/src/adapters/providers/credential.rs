//! Provider credentials that change under a running instance. A Vertex access token lasts an
//! hour and an API key can be rotated, while a warm Lambda instance lives for hours: reading
//! the secret once at a cold start lets tasks fail with 401s (and be refunded while upstream
//! jobs keep running). A `Credential` is read from its source, kept for at most `max_age`,
//! and read again at once when the provider refuses it; the request is then sent once more.

use super::{transport, ProviderError};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where credentials come from: the provider secret, or fixed values (local runs, tests).
#[async_trait]
pub trait SecretSource: Send + Sync {
    /// The secret's current values by name.
    async fn read(&self) -> Result<HashMap<String, String>, String>;
}

/// Values that never change: the environment of a local run, or a test's.
pub struct Fixed(pub HashMap<String, String>);

#[async_trait]
impl SecretSource for Fixed {
    async fn read(&self) -> Result<HashMap<String, String>, String> {
        Ok(self.0.clone())
    }
}

/// How long a credential read is trusted before it is read again, refusal or not: well
/// inside a Vertex token's hour, so a token rotated on schedule is picked up before it ends.
pub const MAX_AGE: Duration = Duration::from_secs(300);

pub struct Credential {
    name: String,
    source: Arc<dyn SecretSource>,
    max_age: Duration,
    cached: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl Credential {
    pub fn new(name: &str, source: Arc<dyn SecretSource>) -> Self {
        Credential {
            name: name.to_string(),
            source,
            max_age: MAX_AGE,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// A credential that is what it is (tests, local runs).
    pub fn fixed(name: &str, value: &str) -> Self {
        let values = HashMap::from([(name.to_string(), value.to_string())]);
        Self::new(name, Arc::new(Fixed(values)))
    }

    /// The current value: cached while fresh, otherwise read from the source. A source that
    /// cannot be read is a passing fault of ours, never the task's: retryable.
    pub async fn get(&self) -> Result<String, ProviderError> {
        let mut cached = self.cached.lock().await;
        if let Some((value, read_at)) = cached.as_ref() {
            if read_at.elapsed() < self.max_age {
                return Ok(value.clone());
            }
        }
        let values = self
            .source
            .read()
            .await
            .map_err(|e| ProviderError::Retryable {
                retry_after_secs: Some(30),
                message: format!("could not read the provider credential {}: {e}", self.name),
            })?;
        let value = values
            .get(&self.name)
            .cloned()
            .ok_or_else(|| ProviderError::Retryable {
                retry_after_secs: Some(60),
                message: format!("the provider secret has no {}", self.name),
            })?;
        *cached = Some((value.clone(), Instant::now()));
        Ok(value)
    }

    /// Forgets the cached value: the provider just refused it.
    pub async fn forget(&self) {
        *self.cached.lock().await = None;
    }

    /// Sends a request built with the current credential; on a 401, reads the credential
    /// again and sends it once more. A credential still refused is our problem, not the
    /// task's: retryable, so tasks wait (until their deadline) instead of failing at once.
    pub async fn send(
        &self,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ProviderError> {
        let used = self.get().await?;
        let resp = build(&used).send().await.map_err(transport)?;
        if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        self.forget().await;
        let fresh = self.get().await?;
        if fresh != used {
            tracing::info!(credential = %self.name, "provider refused a credential; using the newer one");
            let resp = build(&fresh).send().await.map_err(transport)?;
            if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
        }
        tracing::error!(credential = %self.name, "the provider refuses our credential");
        Err(ProviderError::Retryable {
            retry_after_secs: Some(60),
            message: format!("the provider refused our credential {} (401)", self.name),
        })
    }
}
