//! The video provider clients, each an adapter of the `Provider` port: the OpenAI video
//! protocol, Google's Veo (Vertex AI and the Gemini API), and the simulated provider that the
//! local stack uses. Which one serves each of our models is configuration ([`routes_from_lookup`]).

pub mod credential;
pub mod google;
pub mod mp4;
pub mod openai;
pub mod simulated;

use crate::domain::pricing::Model;
pub use crate::ports::provider::{
    JobRequest, JobState, ProviderError, Route, Routes, Video, VideoStream, Whole,
};
use crate::ports::Provider;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ProviderConfigError {
    #[error("{0} is not set")]
    Missing(String),
    #[error("{0}: {1}")]
    Invalid(String, String),
}

/// Reads `SORA_2_PROVIDER` / `VEO_PRO_PROVIDER` (`simulated`, `openai`, `vertex`, `gemini`),
/// `*_PROVIDER_MODEL`, and each provider's endpoint and credentials. See docs/PROVIDERS.md.
pub fn routes_from_lookup(
    get: &dyn Fn(&str) -> Option<String>,
    secrets: Arc<dyn credential::SecretSource>,
) -> Result<Routes, ProviderConfigError> {
    let mut routes = HashMap::new();
    for (model, var, default_model) in [
        (Model::Sora2, "SORA_2", "sora-2"),
        (Model::VeoPro, "VEO_PRO", "veo-3.1-generate-001"),
    ] {
        let kind = get(&format!("{var}_PROVIDER")).unwrap_or_else(|| "simulated".into());
        let provider_model =
            get(&format!("{var}_PROVIDER_MODEL")).unwrap_or_else(|| default_model.to_string());
        let provider: Arc<dyn Provider> = match kind.as_str() {
            "simulated" => Arc::new(simulated::Simulated::from_lookup(get)?),
            "openai" => Arc::new(openai::OpenAiVideos::from_lookup(get, secrets.clone())?),
            "vertex" => Arc::new(google::GoogleVeo::vertex_from_lookup(get, secrets.clone())?),
            "gemini" => Arc::new(google::GoogleVeo::gemini_from_lookup(get, secrets.clone())?),
            other => {
                return Err(ProviderConfigError::Invalid(
                    format!("{var}_PROVIDER"),
                    format!("unknown provider {other:?}"),
                ))
            }
        };
        routes.insert(
            model,
            Route {
                provider,
                provider_model,
            },
        );
    }
    Ok(Routes { routes })
}

/// A shared HTTP client for the provider clients: bounded timeouts, no redirects.
pub fn http_client(timeout_secs: u64) -> reqwest::Client {
    super::ensure_tls();
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(timeout_secs))
        .connect_timeout(std::time::Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Maps transport errors and HTTP statuses that every provider shares.
pub(crate) fn classify_status(status: u16, retry_after: Option<u64>, body: &str) -> ProviderError {
    let message = body.chars().take(500).collect::<String>();
    match status {
        408 | 409 | 425 | 429 | 500..=599 => ProviderError::Retryable {
            retry_after_secs: retry_after,
            message,
        },
        _ => ProviderError::Permanent {
            code: format!("http_{status}"),
            message,
        },
    }
}

pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

pub(crate) fn transport(e: reqwest::Error) -> ProviderError {
    ProviderError::Retryable {
        retry_after_secs: None,
        message: e.to_string(),
    }
}

/// A video body streaming from an HTTP response (OpenAI's content endpoint, a Gemini file).
pub(crate) struct HttpVideo(pub reqwest::Response);

#[async_trait]
impl VideoStream for HttpVideo {
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, ProviderError> {
        Ok(self.0.chunk().await.map_err(transport)?.map(|b| b.to_vec()))
    }
}

#[async_trait]
impl Provider for simulated::Simulated {
    fn name(&self) -> &'static str {
        "simulated"
    }

    async fn submit(&self, req: &JobRequest) -> Result<String, ProviderError> {
        simulated::Simulated::submit(self, req)
    }

    async fn poll(&self, job_id: &str, now_ms: i64) -> Result<JobState, ProviderError> {
        simulated::Simulated::poll(self, job_id, now_ms)
    }

    async fn download(
        &self,
        _job_id: &str,
        video: &Video,
    ) -> Result<Box<dyn VideoStream>, ProviderError> {
        match video {
            Video::Bytes(b) => Ok(Whole::boxed(b.clone())),
            Video::Url(_) => Err(ProviderError::Permanent {
                code: "no_video".into(),
                message: "the simulated provider returns bytes".into(),
            }),
        }
    }

    async fn cancel(&self, _job_id: &str) -> Result<(), ProviderError> {
        Ok(())
    }
}

#[async_trait]
impl Provider for openai::OpenAiVideos {
    fn name(&self) -> &'static str {
        "openai"
    }

    async fn submit(&self, req: &JobRequest) -> Result<String, ProviderError> {
        openai::OpenAiVideos::submit(self, req).await
    }

    async fn poll(&self, job_id: &str, _now_ms: i64) -> Result<JobState, ProviderError> {
        openai::OpenAiVideos::poll(self, job_id).await
    }

    async fn download(
        &self,
        job_id: &str,
        video: &Video,
    ) -> Result<Box<dyn VideoStream>, ProviderError> {
        match video {
            Video::Bytes(b) => Ok(Whole::boxed(b.clone())),
            Video::Url(_) => Ok(Box::new(HttpVideo(self.content(job_id).await?))),
        }
    }

    async fn cancel(&self, job_id: &str) -> Result<(), ProviderError> {
        self.delete(job_id).await
    }
}

#[async_trait]
impl Provider for google::GoogleVeo {
    fn name(&self) -> &'static str {
        self.flavour()
    }

    async fn submit(&self, req: &JobRequest) -> Result<String, ProviderError> {
        google::GoogleVeo::submit(self, req).await
    }

    async fn poll(&self, job_id: &str, _now_ms: i64) -> Result<JobState, ProviderError> {
        google::GoogleVeo::poll(self, job_id).await
    }

    async fn download(
        &self,
        _job_id: &str,
        video: &Video,
    ) -> Result<Box<dyn VideoStream>, ProviderError> {
        match video {
            Video::Bytes(b) => Ok(Whole::boxed(b.clone())),
            Video::Url(u) => Ok(Box::new(HttpVideo(
                google::GoogleVeo::download(self, u).await?,
            ))),
        }
    }

    /// Neither Vertex AI's nor the Gemini API's video operations can be cancelled.
    async fn cancel(&self, _job_id: &str) -> Result<(), ProviderError> {
        Ok(())
    }
}
