//! Video providers behind one interface. Which provider (and which upstream model id) serves
//! each of our models is configuration ([`ProviderConfig`]), because upstream models are
//! retired often.

pub mod google;
pub mod mp4;
pub mod openai;
pub mod simulated;

use crate::domain::pricing::Model;
use std::collections::HashMap;

/// What a provider is asked to make.
#[derive(Clone, Debug)]
pub struct JobRequest {
    pub task_id: String,
    pub provider_model: String,
    pub prompt: String,
    pub duration_seconds: u32,
    pub aspect_ratio: String,
    pub resolution: String,
    /// How many times this task was submitted before (deterministic simulation uses it).
    pub attempt: u32,
    pub now_ms: i64,
}

/// Where a finished job's video is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Video {
    /// The bytes themselves (base64 in the provider's answer, or simulated).
    Bytes(Vec<u8>),
    /// A URL to fetch (Gemini API file URIs, OpenAI's content endpoint).
    Url(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    Running {
        progress: Option<u8>,
    },
    Succeeded(Video),
    Failed {
        code: String,
        message: String,
    },
    /// The provider's safety/moderation system refused the content.
    Rejected {
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// 429, 5xx, timeouts, connection errors: try again later (honouring `retry_after`).
    #[error("provider busy or unreachable: {message}")]
    Retryable {
        retry_after_secs: Option<u64>,
        message: String,
    },
    /// The request itself was refused as violating policy.
    #[error("content rejected: {reason}")]
    Rejected { reason: String },
    /// Will not succeed on retry (bad request, auth, unknown model, unknown job).
    #[error("{code}: {message}")]
    Permanent { code: String, message: String },
}

/// One configured provider.
#[derive(Clone)]
pub enum Provider {
    Simulated(simulated::Simulated),
    OpenAi(openai::OpenAiVideos),
    Google(google::GoogleVeo),
}

impl Provider {
    pub fn name(&self) -> &'static str {
        match self {
            Provider::Simulated(_) => "simulated",
            Provider::OpenAi(_) => "openai",
            Provider::Google(g) => g.flavour(),
        }
    }

    pub async fn submit(&self, req: &JobRequest) -> Result<String, ProviderError> {
        match self {
            Provider::Simulated(p) => p.submit(req),
            Provider::OpenAi(p) => p.submit(req).await,
            Provider::Google(p) => p.submit(req).await,
        }
    }

    pub async fn poll(&self, job_id: &str, now_ms: i64) -> Result<JobState, ProviderError> {
        match self {
            Provider::Simulated(p) => p.poll(job_id, now_ms),
            Provider::OpenAi(p) => p.poll(job_id).await,
            Provider::Google(p) => p.poll(job_id).await,
        }
    }

    pub async fn download(&self, job_id: &str, video: &Video) -> Result<Vec<u8>, ProviderError> {
        match (self, video) {
            (_, Video::Bytes(b)) => Ok(b.clone()),
            (Provider::OpenAi(p), Video::Url(_)) => p.content(job_id).await,
            (Provider::Google(p), Video::Url(u)) => p.download(u).await,
            (Provider::Simulated(_), Video::Url(_)) => Err(ProviderError::Permanent {
                code: "no_video".into(),
                message: "the simulated provider returns bytes".into(),
            }),
        }
    }

    /// Best effort: stops paying upstream for a job we no longer want.
    pub async fn cancel(&self, job_id: &str) -> Result<(), ProviderError> {
        match self {
            Provider::Simulated(_) => Ok(()),
            Provider::OpenAi(p) => p.delete(job_id).await,
            // Neither Vertex AI's nor the Gemini API's video operations can be cancelled.
            Provider::Google(_) => Ok(()),
        }
    }
}

/// Our model -> (provider, upstream model id).
#[derive(Clone)]
pub struct Route {
    pub provider: Provider,
    pub provider_model: String,
}

#[derive(Clone)]
pub struct ProviderConfig {
    pub routes: HashMap<Model, Route>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderConfigError {
    #[error("{0} is not set")]
    Missing(String),
    #[error("{0}: {1}")]
    Invalid(String, String),
}

impl ProviderConfig {
    /// Reads `SORA_2_PROVIDER` / `VEO_PRO_PROVIDER` (`simulated`, `openai`, `vertex`,
    /// `gemini`), `*_PROVIDER_MODEL`, and each provider's endpoint and credentials. See
    /// docs/PROVIDERS.md.
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, ProviderConfigError> {
        let mut routes = HashMap::new();
        for (model, var, default_model) in [
            (Model::Sora2, "SORA_2", "sora-2"),
            (Model::VeoPro, "VEO_PRO", "veo-3.1-generate-001"),
        ] {
            let kind = get(&format!("{var}_PROVIDER")).unwrap_or_else(|| "simulated".into());
            let provider_model =
                get(&format!("{var}_PROVIDER_MODEL")).unwrap_or_else(|| default_model.to_string());
            let provider = match kind.as_str() {
                "simulated" => Provider::Simulated(simulated::Simulated::from_lookup(get)?),
                "openai" => Provider::OpenAi(openai::OpenAiVideos::from_lookup(get)?),
                "vertex" => Provider::Google(google::GoogleVeo::vertex_from_lookup(get)?),
                "gemini" => Provider::Google(google::GoogleVeo::gemini_from_lookup(get)?),
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
        Ok(ProviderConfig { routes })
    }

    pub fn route(&self, model: Model) -> Option<&Route> {
        self.routes.get(&model)
    }
}

/// A shared HTTP client for the provider clients: bounded timeouts, no redirects.
pub fn http_client(timeout_secs: u64) -> reqwest::Client {
    crate::runtime::ensure_tls();
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
