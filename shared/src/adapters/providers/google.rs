//! Google's long-running video generation (Veo), in its two forms:
//! - Vertex AI: `POST .../publishers/google/models/{model}:predictLongRunning`, then
//!   `POST .../models/{model}:fetchPredictOperation {operationName}` until `done`;
//! - Gemini API: `POST /v1beta/models/{model}:predictLongRunning`, then
//!   `GET /v1beta/{operation}` until `done`; the video is a file URI fetched with the key.
//!
//! A safety-filtered result (`raiMediaFilteredCount` > 0 and no video) is a rejection.

use super::credential::{Credential, SecretSource};
use super::{
    classify_status, http_client, retry_after, transport, JobRequest, JobState,
    ProviderConfigError, ProviderError, Video,
};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use std::sync::Arc;

const VERTEX_TOKEN: &str = "VERTEX_ACCESS_TOKEN";
const GEMINI_KEY: &str = "GEMINI_API_KEY";

#[derive(Clone)]
enum Flavour {
    Vertex { project: String, location: String },
    Gemini,
}

#[derive(Clone)]
pub struct GoogleVeo {
    base_url: String,
    flavour: Flavour,
    /// Vertex: an OAuth access token (an hour's life); Gemini: an API key.
    credential: Arc<Credential>,
    http: reqwest::Client,
}

impl GoogleVeo {
    pub fn vertex(base_url: &str, project: &str, location: &str, access_token: &str) -> Self {
        Self::vertex_with(
            base_url,
            project,
            location,
            Credential::fixed(VERTEX_TOKEN, access_token),
        )
    }

    /// Vertex with a token that is read again before it ends and after a refusal.
    pub fn vertex_with(base_url: &str, project: &str, location: &str, token: Credential) -> Self {
        GoogleVeo {
            base_url: base_url.trim_end_matches('/').to_string(),
            flavour: Flavour::Vertex {
                project: project.into(),
                location: location.into(),
            },
            credential: Arc::new(token),
            http: http_client(60),
        }
    }

    pub fn gemini(base_url: &str, api_key: &str) -> Self {
        Self::gemini_with(base_url, Credential::fixed(GEMINI_KEY, api_key))
    }

    pub fn gemini_with(base_url: &str, key: Credential) -> Self {
        GoogleVeo {
            base_url: base_url.trim_end_matches('/').to_string(),
            flavour: Flavour::Gemini,
            credential: Arc::new(key),
            http: http_client(60),
        }
    }

    pub fn vertex_from_lookup(
        get: &dyn Fn(&str) -> Option<String>,
        secrets: Arc<dyn SecretSource>,
    ) -> Result<Self, ProviderConfigError> {
        let need = |k: &str| get(k).ok_or_else(|| ProviderConfigError::Missing(k.into()));
        let location = get("VERTEX_LOCATION").unwrap_or_else(|| "us-central1".into());
        let base = get("VERTEX_BASE_URL")
            .unwrap_or_else(|| format!("https://{location}-aiplatform.googleapis.com"));
        // Present at start (a deployment without it fails loudly), then read as it changes.
        need(VERTEX_TOKEN)?;
        Ok(Self::vertex_with(
            &base,
            &need("VERTEX_PROJECT")?,
            &location,
            Credential::new(VERTEX_TOKEN, secrets),
        ))
    }

    pub fn gemini_from_lookup(
        get: &dyn Fn(&str) -> Option<String>,
        secrets: Arc<dyn SecretSource>,
    ) -> Result<Self, ProviderConfigError> {
        let base = get("GEMINI_BASE_URL")
            .unwrap_or_else(|| "https://generativelanguage.googleapis.com".into());
        get(GEMINI_KEY).ok_or_else(|| ProviderConfigError::Missing(GEMINI_KEY.into()))?;
        Ok(Self::gemini_with(
            &base,
            Credential::new(GEMINI_KEY, secrets),
        ))
    }

    pub fn flavour(&self) -> &'static str {
        match self.flavour {
            Flavour::Vertex { .. } => "vertex",
            Flavour::Gemini => "gemini",
        }
    }

    /// Sends the request `build` makes, with the credential (again after a refusal).
    async fn authed(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ProviderError> {
        let vertex = matches!(self.flavour, Flavour::Vertex { .. });
        self.credential
            .send(|secret| {
                if vertex {
                    build().bearer_auth(secret)
                } else {
                    build().header("x-goog-api-key", secret)
                }
            })
            .await
    }

    fn model_url(&self, model: &str) -> String {
        match &self.flavour {
            Flavour::Vertex {
                project, location, ..
            } => {
                format!("{}/v1/projects/{project}/locations/{location}/publishers/google/models/{model}", self.base_url)
            }
            Flavour::Gemini => format!("{}/v1beta/models/{model}", self.base_url),
        }
    }

    async fn send(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Value, ProviderError> {
        let resp = self.authed(build).await?;
        let status = resp.status().as_u16();
        let ra = retry_after(resp.headers());
        let text = resp.text().await.map_err(transport)?;
        if !(200..300).contains(&status) {
            // google.rpc.Status: {"error": {"code", "message", "status"}}
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let rpc = v["error"]["status"].as_str().unwrap_or("");
            return Err(match rpc {
                "RESOURCE_EXHAUSTED" | "UNAVAILABLE" | "DEADLINE_EXCEEDED" | "INTERNAL"
                | "ABORTED" => ProviderError::Retryable {
                    retry_after_secs: ra,
                    message: v["error"]["message"].as_str().unwrap_or(&text).to_string(),
                },
                "" => classify_status(status, ra, &text),
                other => ProviderError::Permanent {
                    code: other.to_ascii_lowercase(),
                    message: v["error"]["message"].as_str().unwrap_or("").to_string(),
                },
            });
        }
        serde_json::from_str(&text).map_err(|e| ProviderError::Retryable {
            retry_after_secs: None,
            message: format!("unreadable answer: {e}"),
        })
    }

    pub async fn submit(&self, req: &JobRequest) -> Result<String, ProviderError> {
        let mut parameters = json!({
            "aspectRatio": req.aspect_ratio,
            "durationSeconds": req.duration_seconds,
            "resolution": req.resolution,
            "sampleCount": 1,
        });
        if matches!(self.flavour, Flavour::Gemini) {
            // The Gemini API makes one video per request and has no sampleCount.
            if let Some(o) = parameters.as_object_mut() {
                o.remove("sampleCount");
            }
        }
        let body = json!({ "instances": [{ "prompt": req.prompt }], "parameters": parameters });
        let url = format!("{}:predictLongRunning", self.model_url(&req.provider_model));
        let v = self.send(|| self.http.post(&url).json(&body)).await?;
        v["name"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ProviderError::Retryable {
                retry_after_secs: None,
                message: "no operation name".into(),
            })
    }

    pub async fn poll(&self, operation: &str) -> Result<JobState, ProviderError> {
        let op = match &self.flavour {
            Flavour::Vertex { .. } => {
                // projects/P/locations/L/publishers/google/models/M/operations/ID
                let model = operation
                    .split("/models/")
                    .nth(1)
                    .and_then(|rest| rest.split('/').next())
                    .ok_or_else(|| ProviderError::Permanent {
                        code: "not_found".into(),
                        message: format!("bad operation {operation}"),
                    })?;
                let url = format!("{}:fetchPredictOperation", self.model_url(model));
                let body = json!({ "operationName": operation });
                self.send(|| self.http.post(&url).json(&body)).await?
            }
            Flavour::Gemini => {
                let url = format!("{}/v1beta/{operation}", self.base_url);
                self.send(|| self.http.get(&url)).await?
            }
        };
        Ok(interpret(&op))
    }

    /// The video file's response, its body not read yet (it streams).
    pub async fn download(&self, uri: &str) -> Result<reqwest::Response, ProviderError> {
        let resp = self.authed(|| self.http.get(uri)).await?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let ra = retry_after(resp.headers());
            return Err(classify_status(
                status,
                ra,
                &resp.text().await.unwrap_or_default(),
            ));
        }
        Ok(resp)
    }
}

/// What a (possibly finished) long-running operation says.
pub fn interpret(op: &Value) -> JobState {
    if op["done"].as_bool() != Some(true) {
        return JobState::Running { progress: None };
    }
    if op.get("error").is_some() {
        let code = op["error"]["code"]
            .as_i64()
            .map(|c| c.to_string())
            .unwrap_or_else(|| "error".into());
        let message = op["error"]["message"].as_str().unwrap_or("").to_string();
        // Vertex reports prompt-level safety blocks as an error whose message names them.
        let lower = message.to_ascii_lowercase();
        if lower.contains("safety")
            || lower.contains("responsible ai")
            || lower.contains("usage guidelines")
        {
            return JobState::Rejected { reason: message };
        }
        return JobState::Failed { code, message };
    }
    let r = &op["response"];
    // Vertex: response.videos[]; Gemini API: response.generateVideoResponse.generatedSamples[].video
    let (samples, filtered_count, reasons) = if r.get("generateVideoResponse").is_some() {
        let g = &r["generateVideoResponse"];
        (
            g["generatedSamples"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            g["raiMediaFilteredCount"].as_i64().unwrap_or(0),
            g["raiMediaFilteredReasons"].clone(),
        )
    } else {
        (
            r["videos"].as_array().cloned().unwrap_or_default(),
            r["raiMediaFilteredCount"].as_i64().unwrap_or(0),
            r["raiMediaFilteredReasons"].clone(),
        )
    };
    if let Some(first) = samples.first() {
        let video = if first.get("video").is_some() {
            &first["video"]
        } else {
            first
        };
        if let Some(b64) = video["bytesBase64Encoded"].as_str() {
            return match STANDARD.decode(b64) {
                Ok(bytes) => JobState::Succeeded(Video::Bytes(bytes)),
                Err(e) => JobState::Failed {
                    code: "invalid_output".into(),
                    message: format!("undecodable video: {e}"),
                },
            };
        }
        if let Some(uri) = video["uri"].as_str().or_else(|| video["gcsUri"].as_str()) {
            if uri.starts_with("gs://") {
                return JobState::Failed {
                    code: "invalid_output".into(),
                    message: "video written to GCS; configure inline bytes (no storageUri)".into(),
                };
            }
            return JobState::Succeeded(Video::Url(uri.to_string()));
        }
    }
    if filtered_count > 0 {
        let reason = reasons
            .as_array()
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .unwrap_or("filtered by the provider's safety system")
            .to_string();
        return JobState::Rejected { reason };
    }
    JobState::Failed {
        code: "invalid_output".into(),
        message: "finished without a video".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_response_forms_and_safety_filtering() {
        assert_eq!(
            interpret(&json!({"name": "x"})),
            JobState::Running { progress: None }
        );
        let vertex = json!({"done": true, "response": {"videos": [{"bytesBase64Encoded": "AAEC", "mimeType": "video/mp4"}]}});
        assert_eq!(
            interpret(&vertex),
            JobState::Succeeded(Video::Bytes(vec![0, 1, 2]))
        );
        let gemini = json!({"done": true, "response": {"generateVideoResponse": {"generatedSamples": [{"video": {"uri": "https://files/x:download"}}]}}});
        assert_eq!(
            interpret(&gemini),
            JobState::Succeeded(Video::Url("https://files/x:download".into()))
        );
        let filtered = json!({"done": true, "response": {"raiMediaFilteredCount": 1, "raiMediaFilteredReasons": ["blocked: violence"]}});
        assert_eq!(
            interpret(&filtered),
            JobState::Rejected {
                reason: "blocked: violence".into()
            }
        );
        let failed = json!({"done": true, "error": {"code": 13, "message": "internal"}});
        assert!(matches!(interpret(&failed), JobState::Failed { .. }));
    }
}
