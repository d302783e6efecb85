//! The OpenAI video protocol (`/v1/videos`), usable against any endpoint that speaks it: base
//! URL and key are configuration. Job life cycle: `POST /v1/videos` -> `GET /v1/videos/{id}`
//! until `completed` or `failed` -> `GET /v1/videos/{id}/content`.

use super::credential::{Credential, SecretSource};
use super::{
    classify_status, http_client, retry_after, transport, JobRequest, JobState,
    ProviderConfigError, ProviderError, Video,
};
use serde::Deserialize;
use std::sync::Arc;

const API_KEY: &str = "OPENAI_API_KEY";

#[derive(Clone)]
pub struct OpenAiVideos {
    base_url: String,
    /// Read again before long and after a refusal: keys get rotated.
    api_key: Arc<Credential>,
    http: reqwest::Client,
}

#[derive(Debug, Deserialize)]
struct VideoObject {
    id: String,
    status: String,
    #[serde(default)]
    progress: Option<f64>,
    #[serde(default)]
    error: Option<ApiErrorBody>,
}

#[derive(Debug, Deserialize)]
struct ApiErrorBody {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: ApiErrorBody,
}

/// Error codes that mean the content itself was refused, not that the service failed.
fn is_policy_code(code: &str) -> bool {
    matches!(
        code,
        "moderation_blocked" | "content_policy_violation" | "content_filter" | "safety_violation"
    ) || code.contains("moderation")
        || code.contains("policy")
}

/// Our `(aspect_ratio, resolution)` as the protocol's `size`.
pub fn size_for(aspect_ratio: &str, resolution: &str) -> &'static str {
    match (aspect_ratio, resolution) {
        ("9:16", "1080p") => "1024x1792",
        ("16:9", "1080p") => "1792x1024",
        ("9:16", _) => "720x1280",
        _ => "1280x720",
    }
}

impl OpenAiVideos {
    pub fn new(base_url: &str, api_key: &str) -> Self {
        Self::with(base_url, Credential::fixed(API_KEY, api_key))
    }

    pub fn with(base_url: &str, api_key: Credential) -> Self {
        OpenAiVideos {
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key: Arc::new(api_key),
            http: http_client(30),
        }
    }

    pub fn from_lookup(
        get: &dyn Fn(&str) -> Option<String>,
        secrets: Arc<dyn SecretSource>,
    ) -> Result<Self, ProviderConfigError> {
        let base = get("OPENAI_BASE_URL").unwrap_or_else(|| "https://api.openai.com".into());
        get(API_KEY).ok_or_else(|| ProviderConfigError::Missing(API_KEY.into()))?;
        Ok(Self::with(&base, Credential::new(API_KEY, secrets)))
    }

    async fn error_from(resp: reqwest::Response) -> ProviderError {
        let status = resp.status().as_u16();
        let ra = retry_after(resp.headers());
        let text = resp.text().await.unwrap_or_default();
        if let Ok(env) = serde_json::from_str::<ErrorEnvelope>(&text) {
            let code = env.error.code.unwrap_or_default();
            let message = env.error.message.unwrap_or_default();
            if is_policy_code(&code) {
                return ProviderError::Rejected {
                    reason: if message.is_empty() { code } else { message },
                };
            }
            if status == 404 {
                return ProviderError::Permanent {
                    code: "not_found".into(),
                    message,
                };
            }
        }
        classify_status(status, ra, &text)
    }

    pub async fn submit(&self, req: &JobRequest) -> Result<String, ProviderError> {
        let form = [
            ("model", req.provider_model.clone()),
            ("prompt", req.prompt.clone()),
            ("seconds", req.duration_seconds.to_string()),
            (
                "size",
                size_for(&req.aspect_ratio, &req.resolution).to_string(),
            ),
        ];
        let url = format!("{}/v1/videos", self.base_url);
        let resp = self
            .api_key
            .send(|key| self.http.post(&url).bearer_auth(key).form(&form))
            .await?;
        if !resp.status().is_success() {
            return Err(Self::error_from(resp).await);
        }
        let v: VideoObject = resp.json().await.map_err(transport)?;
        Ok(v.id)
    }

    pub async fn poll(&self, job_id: &str) -> Result<JobState, ProviderError> {
        let url = format!("{}/v1/videos/{job_id}", self.base_url);
        let resp = self
            .api_key
            .send(|key| self.http.get(&url).bearer_auth(key))
            .await?;
        if !resp.status().is_success() {
            return Err(Self::error_from(resp).await);
        }
        let v: VideoObject = resp.json().await.map_err(transport)?;
        Ok(match v.status.as_str() {
            "queued" | "in_progress" => JobState::Running {
                progress: v.progress.map(|p| p.clamp(0.0, 100.0) as u8),
            },
            "completed" => JobState::Succeeded(Video::Url(format!(
                "{}/v1/videos/{}/content",
                self.base_url, v.id
            ))),
            "failed" => {
                let code = v
                    .error
                    .as_ref()
                    .and_then(|e| e.code.clone())
                    .unwrap_or_else(|| "failed".into());
                let message = v.error.and_then(|e| e.message).unwrap_or_default();
                if is_policy_code(&code) {
                    JobState::Rejected {
                        reason: if message.is_empty() { code } else { message },
                    }
                } else {
                    JobState::Failed { code, message }
                }
            }
            other => JobState::Failed {
                code: "unknown_status".into(),
                message: format!("status {other:?}"),
            },
        })
    }

    /// The video's response, its body not read yet (it streams).
    pub async fn content(&self, job_id: &str) -> Result<reqwest::Response, ProviderError> {
        let url = format!("{}/v1/videos/{job_id}/content", self.base_url);
        let resp = self
            .api_key
            .send(|key| self.http.get(&url).bearer_auth(key))
            .await?;
        if !resp.status().is_success() {
            return Err(Self::error_from(resp).await);
        }
        Ok(resp)
    }

    pub async fn delete(&self, job_id: &str) -> Result<(), ProviderError> {
        let url = format!("{}/v1/videos/{job_id}", self.base_url);
        let resp = self
            .api_key
            .send(|key| self.http.delete(&url).bearer_auth(key))
            .await?;
        if resp.status().is_success() || resp.status().as_u16() == 404 {
            return Ok(());
        }
        Err(Self::error_from(resp).await)
    }
}
