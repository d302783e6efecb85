//! Fake provider servers on 127.0.0.1 that speak the providers' wire protocols, for testing
//! our HTTP clients (not mocks of our own trait). They also measure how many jobs run at once.
//!
//! Prompts steer them: containing `forbidden` -> a content-policy refusal; `explode` -> the
//! job fails; `busy` -> the first submission answers 429 with `Retry-After: 7`. OpenAI's
//! content: `large` -> a video of `LARGE_VIDEO_BYTES`; `cut` -> the same, but the first
//! download breaks off half way (the connection drops).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The size of a `large` video: more than two multipart parts.
pub const LARGE_VIDEO_BYTES: usize = 20 * 1024 * 1024 + 123;

/// The bytes of a `large` video: a real MP4 header, then a pattern that shows any lost or
/// reordered part.
pub fn large_video() -> Vec<u8> {
    let mut v = shared::adapters::providers::mp4::tiny_mp4(4, 1);
    let n = v.len();
    v.extend((n..LARGE_VIDEO_BYTES).map(|i| (i % 251) as u8));
    v
}

#[derive(Default)]
pub struct Book {
    /// job id -> (prompt, polls so far, finished)
    jobs: HashMap<String, (String, u32, bool)>,
    pub submissions: u32,
    pub active: u32,
    pub peak_active: u32,
    busy_seen: std::collections::HashSet<String>,
    cut_seen: std::collections::HashSet<String>,
    /// Downloads that broke off part way.
    pub cuts: u32,
}

#[derive(Clone, Default)]
pub struct Fake {
    pub book: Arc<Mutex<Book>>,
    /// Polls before a job is done.
    pub polls_to_finish: u32,
}

impl Fake {
    pub fn peak_active(&self) -> u32 {
        self.book.lock().map(|b| b.peak_active).unwrap_or(0)
    }
    pub fn submissions(&self) -> u32 {
        self.book.lock().map(|b| b.submissions).unwrap_or(0)
    }
    /// The new job's id, or `None` when the fake is "busy" (the caller answers 429).
    fn create(&self, prompt: &str, prefix: &str) -> Option<String> {
        let mut b = self.book.lock().ok()?;
        if prompt.contains("busy") && b.busy_seen.insert(prompt.to_string()) {
            return None;
        }
        b.submissions += 1;
        b.active += 1;
        b.peak_active = b.peak_active.max(b.active);
        let id = format!("{prefix}{}", b.submissions);
        b.jobs.insert(id.clone(), (prompt.to_string(), 0, false));
        Some(id)
    }
    /// Some(prompt, done) after counting a poll; None for an unknown job.
    fn poll(&self, id: &str) -> Option<(String, bool)> {
        let mut b = self.book.lock().ok()?;
        let polls = self.polls_to_finish;
        let (prompt, done, newly_done) = {
            let job = b.jobs.get_mut(id)?;
            job.1 += 1;
            let done = job.1 >= polls;
            let newly = done && !job.2;
            if done {
                job.2 = true;
            }
            (job.0.clone(), done, newly)
        };
        if newly_done {
            b.active = b.active.saturating_sub(1);
        }
        Some((prompt, done))
    }
}

pub async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind fake");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    base
}

fn openai_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}}))).into_response()
}

fn authed(h: &HeaderMap, want: &str) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some(want)
}

/// OpenAI's Videos API: POST /v1/videos (multipart or form fields), GET /v1/videos/{id},
/// GET /v1/videos/{id}/content, DELETE /v1/videos/{id}.
pub fn openai(fake: Fake, key: &'static str) -> Router {
    let bearer: &'static str = Box::leak(format!("Bearer {key}").into_boxed_str());
    Router::new()
        .route(
            "/v1/videos",
            post(move |State(f): State<Fake>, h: HeaderMap, Form(form): Form<HashMap<String, String>>| async move {
                if !authed(&h, bearer) {
                    return openai_error(StatusCode::UNAUTHORIZED, "invalid_api_key", "Incorrect API key provided");
                }
                let prompt = form.get("prompt").cloned().unwrap_or_default();
                if form.get("model").map(String::as_str) != Some("sora-2") || !["4", "8", "12"].contains(&form.get("seconds").map(String::as_str).unwrap_or("")) {
                    return openai_error(StatusCode::BAD_REQUEST, "invalid_value", "bad model or seconds");
                }
                if prompt.contains("forbidden") {
                    return openai_error(StatusCode::BAD_REQUEST, "moderation_blocked", "Your request was blocked by our moderation system.");
                }
                match f.create(&prompt, "video_") {
                    Some(id) => Json(json!({"id": id, "object": "video", "model": "sora-2", "status": "queued", "progress": 0, "created_at": 1_790_000_000, "seconds": form.get("seconds"), "size": form.get("size")})).into_response(),
                    None => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "7")], "slow down").into_response(),
                }
            }),
        )
        .route(
            "/v1/videos/{id}",
            get(move |State(f): State<Fake>, h: HeaderMap, Path(id): Path<String>| async move {
                if !authed(&h, bearer) {
                    return openai_error(StatusCode::UNAUTHORIZED, "invalid_api_key", "Incorrect API key provided");
                }
                match f.poll(&id) {
                    None => openai_error(StatusCode::NOT_FOUND, "video_not_found", "No video found"),
                    Some((_, false)) => Json(json!({"id": id, "object": "video", "status": "in_progress", "progress": 50})).into_response(),
                    Some((p, true)) if p.contains("explode") => Json(json!({"id": id, "object": "video", "status": "failed", "progress": 100, "error": {"code": "video_generation_failed", "message": "generation failed"}})).into_response(),
                    Some((_, true)) => Json(json!({"id": id, "object": "video", "status": "completed", "progress": 100})).into_response(),
                }
            })
            .delete(|Path(id): Path<String>| async move { Json(json!({"id": id, "object": "video.deleted", "deleted": true})) }),
        )
        .route(
            "/v1/videos/{id}/content",
            get(move |State(f): State<Fake>, h: HeaderMap, Path(id): Path<String>| async move {
                if !authed(&h, bearer) {
                    return openai_error(StatusCode::UNAUTHORIZED, "invalid_api_key", "Incorrect API key provided");
                }
                let prompt = f.book.lock().ok().and_then(|b| b.jobs.get(&id).map(|j| j.0.clone())).unwrap_or_default();
                if prompt.contains("cut") {
                    let first = f.book.lock().map(|mut b| {
                        let first = b.cut_seen.insert(id.clone());
                        b.cuts += u32::from(first);
                        first
                    }).unwrap_or(false);
                    if first {
                        return cut_short(large_video());
                    }
                }
                if prompt.contains("large") || prompt.contains("cut") {
                    return ([("content-type", "video/mp4")], large_video()).into_response();
                }
                ([("content-type", "video/mp4")], shared::adapters::providers::mp4::tiny_mp4(4, id.len() as u64)).into_response()
            }),
        )
        .with_state(fake)
}

/// A response that promises the whole video (its `Content-Length`) and drops the connection
/// half way through the body.
fn cut_short(video: Vec<u8>) -> Response {
    let len = video.len();
    let half = video[..len / 2].to_vec();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(half),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "cut",
        )),
    ];
    let body = axum::body::Body::from_stream(futures_util::stream::iter(chunks));
    (
        [
            ("content-type", "video/mp4".to_string()),
            ("content-length", len.to_string()),
        ],
        body,
    )
        .into_response()
}

fn google_error(status: StatusCode, rpc: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": status.as_u16(), "message": message, "status": rpc}})),
    )
        .into_response()
}

fn veo_done(flavour: &str, base: &str, prompt: &str, name: &str) -> Value {
    if prompt.contains("forbidden") {
        let filtered = json!({"raiMediaFilteredCount": 1, "raiMediaFilteredReasons": ["Unable to generate videos because the prompt violates the usage guidelines."]});
        return match flavour {
            "gemini" => {
                json!({"name": name, "done": true, "response": {"@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse", "generateVideoResponse": filtered}})
            }
            _ => {
                json!({"name": name, "done": true, "response": {"@type": "type.googleapis.com/cloud.ai.large_models.vision.GenerateVideoResponse", "raiMediaFilteredCount": 1, "raiMediaFilteredReasons": filtered["raiMediaFilteredReasons"]}})
            }
        };
    }
    if prompt.contains("explode") {
        return json!({"name": name, "done": true, "error": {"code": 13, "message": "Internal error while generating"}});
    }
    match flavour {
        "gemini" => {
            json!({"name": name, "done": true, "response": {"@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse", "generateVideoResponse": {"generatedSamples": [{"video": {"uri": format!("{base}/v1beta/files/{}:download?alt=media", name.rsplit('/').next().unwrap_or("x"))}}]}}})
        }
        _ => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(
                shared::adapters::providers::mp4::tiny_mp4(8, name.len() as u64),
            );
            json!({"name": name, "done": true, "response": {"@type": "type.googleapis.com/cloud.ai.large_models.vision.GenerateVideoResponse", "videos": [{"bytesBase64Encoded": b64, "mimeType": "video/mp4"}]}})
        }
    }
}

/// Vertex AI (`/v1/projects/.../models/{m}:predictLongRunning` and `:fetchPredictOperation`,
/// bearer token) or the Gemini API (`/v1beta/models/{m}:predictLongRunning`,
/// `GET /v1beta/{operation}`, file download; `x-goog-api-key`).
pub fn google(fake: Fake, flavour: &'static str, credential: &'static str) -> Router {
    google_with(
        fake,
        flavour,
        Arc::new(std::sync::Mutex::new(credential.to_string())),
    )
}

/// The same, accepting whichever credential `accepted` holds now (tokens that expire).
pub fn google_with(
    fake: Fake,
    flavour: &'static str,
    accepted: Arc<std::sync::Mutex<String>>,
) -> Router {
    let current = move || accepted.lock().map(|c| c.clone()).unwrap_or_default();
    let gemini_current = current.clone();
    let ok = move |h: &HeaderMap| match flavour {
        "gemini" => {
            h.get("x-goog-api-key").and_then(|v| v.to_str().ok()) == Some(current().as_str())
        }
        _ => {
            h.get("authorization").and_then(|v| v.to_str().ok())
                == Some(&format!("Bearer {}", current()))
        }
    };
    let post_handler = move |State(f): State<Fake>,
                             h: HeaderMap,
                             Path(rest): Path<String>,
                             body: Bytes| async move {
        if !ok(&h) {
            return google_error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials.",
            );
        }
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if let Some(model_path) = rest.strip_suffix(":predictLongRunning") {
            let prompt = v["instances"][0]["prompt"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if v["parameters"]["durationSeconds"].as_u64().is_none() {
                return google_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    "durationSeconds is required",
                );
            }
            return match f.create(&prompt, "op") {
                Some(id) => {
                    Json(json!({"name": format!("{model_path}/operations/{id}")})).into_response()
                }
                None => google_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "RESOURCE_EXHAUSTED",
                    "Quota exceeded",
                ),
            };
        }
        if rest.ends_with(":fetchPredictOperation") {
            let name = v["operationName"].as_str().unwrap_or("").to_string();
            let id = name.rsplit('/').next().unwrap_or("").to_string();
            return match f.poll(&id) {
                None => google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "operation not found"),
                Some((_, false)) => Json(json!({"name": name, "done": false})).into_response(),
                Some((p, true)) => {
                    Json(veo_done(flavour, &host_base(&h), &p, &name)).into_response()
                }
            };
        }
        google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such method")
    };
    let gemini_get = move |State(f): State<Fake>, h: HeaderMap, Path(rest): Path<String>| async move {
        if h.get("x-goog-api-key").and_then(|v| v.to_str().ok()) != Some(gemini_current().as_str())
        {
            return google_error(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                "API key not valid",
            );
        }
        if rest.starts_with("files/") {
            return (
                [("content-type", "video/mp4")],
                shared::adapters::providers::mp4::tiny_mp4(8, 3),
            )
                .into_response();
        }
        let id = rest.rsplit('/').next().unwrap_or("").to_string();
        match f.poll(&id) {
            None => google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "operation not found"),
            Some((_, false)) => Json(json!({"name": rest, "done": false})).into_response(),
            Some((p, true)) => Json(veo_done("gemini", &host_base(&h), &p, &rest)).into_response(),
        }
    };
    Router::new()
        .route("/v1/{*rest}", post(post_handler.clone()))
        .route("/v1beta/{*rest}", post(post_handler).get(gemini_get))
        .with_state(fake)
}

/// Where the caller reached us (Gemini file URIs point back here).
fn host_base(h: &HeaderMap) -> String {
    h.get("host")
        .and_then(|v| v.to_str().ok())
        .map(|host| format!("http://{host}"))
        .unwrap_or_default()
}
