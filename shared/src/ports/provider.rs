//! The video providers behind one interface. Which provider (and which upstream model id)
//! serves each of our models is configuration ([`Routes`]), because upstream models are
//! retired often.

use crate::domain::pricing::Model;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;

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
    /// Names this submission: a provider that honours it answers a repeat with the same job.
    pub idempotency_key: Option<String>,
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

/// A finished video's bytes as they arrive, a chunk at a time: the worker sends them on to
/// storage part by part, so a video of any size never sits whole in memory.
#[async_trait]
pub trait VideoStream: Send {
    /// The next chunk; `None` at the end. An error part way is retryable like any transport
    /// error (the download starts again).
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, ProviderError>;
}

/// A video that is whole already (base64 in the provider's answer, or simulated).
pub struct Whole(Option<Vec<u8>>);

impl Whole {
    pub fn boxed(bytes: Vec<u8>) -> Box<dyn VideoStream> {
        Box::new(Whole(Some(bytes)))
    }
}

#[async_trait]
impl VideoStream for Whole {
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, ProviderError> {
        Ok(self.0.take())
    }
}

/// One upstream video service.
#[async_trait]
pub trait Provider: Send + Sync {
    /// `simulated`, `openai`, `vertex`, `gemini`: recorded on each task.
    fn name(&self) -> &'static str;
    /// Starts a job; its id.
    async fn submit(&self, req: &JobRequest) -> Result<String, ProviderError>;
    async fn poll(&self, job_id: &str, now_ms: i64) -> Result<JobState, ProviderError>;
    /// The video of a finished job, as it streams in.
    async fn download(
        &self,
        job_id: &str,
        video: &Video,
    ) -> Result<Box<dyn VideoStream>, ProviderError>;
    /// Best effort: stops paying upstream for a job we no longer want.
    async fn cancel(&self, job_id: &str) -> Result<(), ProviderError>;
}

/// Our model -> (provider, upstream model id).
#[derive(Clone)]
pub struct Route {
    pub provider: Arc<dyn Provider>,
    pub provider_model: String,
}

#[derive(Clone, Default)]
pub struct Routes {
    pub routes: HashMap<Model, Route>,
}

impl Routes {
    pub fn route(&self, model: Model) -> Option<&Route> {
        self.routes.get(&model)
    }
}
