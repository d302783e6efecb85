//! Our provider clients against fake servers that speak the providers' protocols, and the
//! whole pipeline through them.

use integration_tests::fakes::{self, Fake};
use integration_tests::{tasks, TestApp};
use serde_json::json;
use shared::adapters::providers::credential::{Credential, SecretSource};
use shared::adapters::providers::google::GoogleVeo;
use shared::adapters::providers::openai::OpenAiVideos;
use shared::ports::provider::{JobRequest, JobState, ProviderError, Video, VideoStream};
use shared::ports::Faults;
use shared::ports::Provider;
use std::sync::Arc;

fn req(prompt: &str, model: &str, seconds: u32) -> JobRequest {
    JobRequest {
        task_id: "task_x".into(),
        provider_model: model.into(),
        prompt: prompt.into(),
        duration_seconds: seconds,
        aspect_ratio: "16:9".into(),
        resolution: "720p".into(),
        attempt: 0,
        now_ms: 0,
        idempotency_key: None,
    }
}

/// A downloaded video read to its end.
async fn whole(mut body: Box<dyn VideoStream>) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next_chunk().await.expect("a chunk") {
        out.extend(chunk);
    }
    out
}

async fn finish(p: &dyn Provider, job: &str) -> JobState {
    for _ in 0..10 {
        match p.poll(job, 0).await {
            Ok(JobState::Running { .. }) => continue,
            Ok(other) => return other,
            Err(e) => panic!("poll failed: {e}"),
        }
    }
    panic!("job {job} never finished")
}

#[tokio::test]
async fn the_openai_client_speaks_the_videos_protocol() {
    shared::runtime::ensure_tls();
    let fake = Fake {
        polls_to_finish: 2,
        ..Default::default()
    };
    let base = fakes::serve(fakes::openai(fake.clone(), "sk-test")).await;
    let p: Arc<dyn Provider> = Arc::new(OpenAiVideos::new(&base, "sk-test"));

    let job = p
        .submit(&req("a lighthouse", "sora-2", 8))
        .await
        .expect("submitted");
    assert!(job.starts_with("video_"));
    let JobState::Succeeded(video) = finish(p.as_ref(), &job).await else {
        panic!("expected success")
    };
    assert_eq!(video, Video::Url(format!("{base}/v1/videos/{job}/content")));
    let bytes = whole(p.download(&job, &video).await.expect("content")).await;
    assert_eq!(&bytes[4..8], b"ftyp");

    let failed = p
        .submit(&req("explode", "sora-2", 4))
        .await
        .expect("submitted");
    assert!(
        matches!(finish(p.as_ref(), &failed).await, JobState::Failed { code, .. } if code == "video_generation_failed")
    );
    assert!(matches!(
        p.submit(&req("forbidden scene", "sora-2", 4)).await,
        Err(ProviderError::Rejected { .. })
    ));
    assert!(matches!(
        p.submit(&req("busy hour", "sora-2", 4)).await,
        Err(ProviderError::Retryable {
            retry_after_secs: Some(7),
            ..
        })
    ));
    assert!(
        p.submit(&req("busy hour", "sora-2", 4)).await.is_ok(),
        "the second try goes through"
    );
    assert!(matches!(
        p.submit(&req("x", "sora-2", 5)).await,
        Err(ProviderError::Permanent { .. })
    ));
    assert!(
        matches!(p.poll("video_nope", 0).await, Err(ProviderError::Permanent { code, .. }) if code == "not_found")
    );
    // A refused key is ours to fix, not the task's: retryable (the task waits), never a
    // failure that refunds work the provider may still be doing.
    let wrong_key: Arc<dyn Provider> = Arc::new(OpenAiVideos::new(&base, "sk-wrong"));
    assert!(
        matches!(wrong_key.submit(&req("x", "sora-2", 4)).await, Err(ProviderError::Retryable { message, .. }) if message.contains("401"))
    );
    // Nobody listening: retry later, not a failure.
    let gone: Arc<dyn Provider> = Arc::new(OpenAiVideos::new("http://127.0.0.1:9", "k"));
    assert!(matches!(
        gone.submit(&req("x", "sora-2", 4)).await,
        Err(ProviderError::Retryable { .. })
    ));
}

#[tokio::test]
async fn the_google_clients_speak_vertex_and_gemini() {
    shared::runtime::ensure_tls();
    for flavour in ["vertex", "gemini"] {
        let fake = Fake {
            polls_to_finish: 2,
            ..Default::default()
        };
        let base = fakes::serve(fakes::google(fake.clone(), flavour, "cred-1")).await;
        let p: Arc<dyn Provider> = Arc::new(match flavour {
            "vertex" => GoogleVeo::vertex(&base, "proj", "us-central1", "cred-1"),
            _ => GoogleVeo::gemini(&base, "cred-1"),
        });
        let job = p
            .submit(&req("a lighthouse", "veo-3.1-generate-001", 8))
            .await
            .expect("submitted");
        match flavour {
            "vertex" => assert!(job.starts_with("projects/proj/locations/us-central1/publishers/google/models/veo-3.1-generate-001/operations/"), "{job}"),
            _ => assert!(job.starts_with("models/veo-3.1-generate-001/operations/"), "{job}"),
        }
        let JobState::Succeeded(video) = finish(p.as_ref(), &job).await else {
            panic!("{flavour}: expected success")
        };
        let bytes = whole(p.download(&job, &video).await.expect("video")).await;
        assert_eq!(&bytes[4..8], b"ftyp", "{flavour}");
        let filtered = p
            .submit(&req("forbidden scene", "veo-3.1-generate-001", 8))
            .await
            .expect("submitted");
        assert!(
            matches!(finish(p.as_ref(), &filtered).await, JobState::Rejected { reason } if reason.contains("usage guidelines")),
            "{flavour}"
        );
        let failed = p
            .submit(&req("explode", "veo-3.1-generate-001", 8))
            .await
            .expect("submitted");
        assert!(
            matches!(finish(p.as_ref(), &failed).await, JobState::Failed { .. }),
            "{flavour}"
        );
        assert!(
            matches!(
                p.submit(&req("busy", "veo-3.1-generate-001", 8)).await,
                Err(ProviderError::Retryable { .. })
            ),
            "{flavour}: RESOURCE_EXHAUSTED is retryable"
        );
    }
}

#[tokio::test]
async fn a_batch_through_the_openai_protocol_respects_the_concurrency_cap_at_the_provider() {
    let fake = Fake {
        polls_to_finish: 3,
        ..Default::default()
    };
    let base = fakes::serve(fakes::openai(fake.clone(), "sk-test")).await;
    let app = TestApp::spawn_routes(Faults::none(), |_| {
        Arc::new(OpenAiVideos::new(&base, "sk-test")) as Arc<dyn Provider>
    })
    .await;
    let (acct, key) = app.account_with(100_000).await; // max_concurrency 4
    let mut ts = tasks(16);
    if let Some(list) = ts.as_array_mut() {
        list[3] = json!({"prompt": "a forbidden scene"});
        list[5] = json!({"prompt": "explode please"});
        list[7] = json!({"prompt": "busy street"});
    }
    let r = app
        .post(
            "/v1/batches",
            &key,
            &json!({"request_id": "oa", "model": "sora-2", "tasks": ts}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let batch = r.body["id"].as_str().unwrap_or_default().to_string();
    app.drive_to_settlement(&acct, &batch, 5_000, 30 * 60_000)
        .await;
    assert_eq!(
        fake.peak_active(),
        4,
        "never more than the account's 4 jobs at the provider"
    );
    let b = app.get(&format!("/v1/batches/{batch}"), &key).await.body;
    assert_eq!(
        (
            b["counts"]["succeeded"].clone(),
            b["counts"]["rejected"].clone(),
            b["counts"]["failed"].clone()
        ),
        (json!(14), json!(1), json!(1)),
        "{b}"
    );
    assert_eq!(b["settlement"]["charged"], 49 * 15);
    assert_eq!(b["settlement"]["refunded"], 49);
    app.assert_invariants().await;
}

/// Videos stream from the provider to storage: a large one goes up as a multipart upload
/// (never whole in memory), and one whose download breaks off is not stored half: the
/// upload is aborted and the next poll downloads it again.
#[tokio::test]
async fn large_videos_stream_to_storage_in_parts_and_a_cut_download_is_fetched_again() {
    let fake = Fake {
        polls_to_finish: 1,
        ..Default::default()
    };
    let base = fakes::serve(fakes::openai(fake.clone(), "sk-test")).await;
    let app = TestApp::spawn_routes(Faults::none(), |_| {
        Arc::new(OpenAiVideos::new(&base, "sk-test")) as Arc<dyn Provider>
    })
    .await;
    let (acct, key) = app.account_with(100_000).await;
    let mut ts = tasks(10);
    if let Some(list) = ts.as_array_mut() {
        list[0] = json!({"prompt": "a large harbour"});
        list[1] = json!({"prompt": "a cut away"});
    }
    let r = app
        .post(
            "/v1/batches",
            &key,
            &json!({"request_id": "big", "model": "sora-2", "tasks": ts}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let batch = r.body["id"].as_str().unwrap_or_default().to_string();
    app.drive_to_settlement(&acct, &batch, 5_000, 30 * 60_000)
        .await;
    assert_eq!(fake.book.lock().map(|b| b.cuts).unwrap_or(0), 1);
    let list = app
        .get(&format!("/v1/batches/{batch}/tasks"), &key)
        .await
        .body;
    let want = fakes::large_video();
    let all = list["data"].as_array().expect("tasks");
    assert!(all.iter().all(|t| t["status"] == "succeeded"), "{list}");
    for t in &all[..2] {
        let one = app
            .get(
                &format!("/v1/tasks/{}", t["id"].as_str().unwrap_or("")),
                &key,
            )
            .await
            .body;
        let url = one["download_url"].as_str().expect("a download link");
        let got = app.download(url).await;
        assert!(
            got == want,
            "{}: {} bytes stored, {} served",
            t["id"],
            got.len(),
            want.len()
        );
    }
    if app.aws_side().is_some() {
        // Three parts each (8 + 8 + 4 MiB), created and completed as multipart uploads; the
        // cut download's first upload was aborted (S3's DELETE ?uploadId).
        let ops = app.emulator_operations().await;
        assert!(ops.get("s3.DELETE").copied().unwrap_or(0) >= 1, "{ops:?}");
        assert!(ops.get("s3.POST").copied().unwrap_or(0) >= 4, "{ops:?}");
    }
    app.assert_invariants().await;
}

/// A secret whose value an operator (or a rotation job) changes, counting its reads.
struct Rotating {
    value: std::sync::Mutex<String>,
    reads: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl SecretSource for Rotating {
    async fn read(&self) -> Result<std::collections::HashMap<String, String>, String> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let v = self.value.lock().map_err(|e| e.to_string())?.clone();
        Ok(std::collections::HashMap::from([(
            "VERTEX_ACCESS_TOKEN".to_string(),
            v,
        )]))
    }
}

/// A Vertex token lasts an hour and a warm instance lives longer. When the provider refuses
/// the token, the client reads the secret again and sends the request once more: the task
/// does not fail. A credential the secret cannot replace is our fault, not the task's, so it
/// is retryable (the task waits, and is refunded only at its deadline).
#[tokio::test]
async fn a_refused_credential_is_read_again_and_the_request_sent_once_more() {
    shared::runtime::ensure_tls();
    let fake = Fake {
        polls_to_finish: 2,
        ..Default::default()
    };
    let accepted = Arc::new(std::sync::Mutex::new("token-1".to_string()));
    let base = fakes::serve(fakes::google_with(fake, "vertex", accepted.clone())).await;
    let secret = Arc::new(Rotating {
        value: std::sync::Mutex::new("token-1".into()),
        reads: Default::default(),
    });
    let p = GoogleVeo::vertex_with(
        &base,
        "proj",
        "us-central1",
        Credential::new("VERTEX_ACCESS_TOKEN", secret.clone()),
    );
    let p: Arc<dyn Provider> = Arc::new(p);
    let job = p
        .submit(&req("a lighthouse", "veo-3.1-generate-001", 8))
        .await
        .expect("submitted");
    let reads = || secret.reads.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(reads(), 1);
    // The hour is up: the provider takes only the new token, which the secret now holds.
    let rotate = |to: &str| {
        if let Ok(mut a) = accepted.lock() {
            *a = to.to_string();
        }
    };
    rotate("token-2");
    if let Ok(mut v) = secret.value.lock() {
        *v = "token-2".into();
    }
    let JobState::Succeeded(video) = finish(p.as_ref(), &job).await else {
        panic!("the job should finish with the new token")
    };
    assert_eq!(
        reads(),
        2,
        "read again once, on the refusal, not per request"
    );
    let bytes = whole(p.download(&job, &video).await.expect("video")).await;
    assert_eq!(&bytes[4..8], b"ftyp");
    // A token nobody replaced: refused again after the re-read, and retryable.
    rotate("token-3");
    let refused = p.submit(&req("a harbour", "veo-3.1-generate-001", 8)).await;
    assert!(
        matches!(&refused, Err(ProviderError::Retryable { message, .. }) if message.contains("401")),
        "{refused:?}"
    );
    assert_eq!(reads(), 3);
}
