//! The pipeline at real timescales: jobs of twenty minutes and backlogs of hundreds of tasks,
//! on the in-memory twins (whatever `TEST_BACKEND` says) with a manual clock, so half an hour
//! of a veo-pro batch runs in a second. The seeded simulator (`tests/tests/sim.rs`) explores
//! the same ground at random; these two are the figures the closing rule is stated in.

use integration_tests::{tasks, Backend, TestApp};
use serde_json::json;
use shared::adapters::providers::simulated::Simulated;
use shared::domain::batch::BatchStatus;
use shared::ports::provider::{JobRequest, JobState, ProviderError, Video};
use shared::ports::{Faults, Provider};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The simulated provider, counting what we ask of it.
struct Counting {
    inner: Simulated,
    submits: AtomicU64,
    polls: AtomicU64,
}

#[async_trait::async_trait]
impl Provider for Counting {
    fn name(&self) -> &'static str {
        "simulated"
    }
    async fn submit(&self, req: &JobRequest) -> Result<String, ProviderError> {
        self.submits.fetch_add(1, Ordering::SeqCst);
        self.inner.submit(req)
    }
    async fn poll(&self, job_id: &str, now_ms: i64) -> Result<JobState, ProviderError> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        self.inner.poll(job_id, now_ms)
    }
    async fn download(
        &self,
        job_id: &str,
        video: &Video,
    ) -> Result<Box<dyn shared::ports::provider::VideoStream>, ProviderError> {
        Provider::download(&self.inner, job_id, video).await
    }
    async fn cancel(&self, job_id: &str) -> Result<(), ProviderError> {
        Provider::cancel(&self.inner, job_id).await
    }
}

async fn app_with(latency_ms: i64) -> (TestApp, Arc<Counting>) {
    let counting = Arc::new(Counting {
        inner: Simulated {
            seed: 11,
            latency_ms,
            fail_rate: 0.0,
            reject_rate: 0.0,
            throttle_rate: 0.0,
            outage: false,
        },
        submits: AtomicU64::new(0),
        polls: AtomicU64::new(0),
    });
    let c = counting.clone();
    let app = TestApp::spawn_on(
        Backend::Memory,
        Faults::none(),
        move |_| c.clone() as Arc<dyn Provider>,
        true,
    )
    .await;
    (app, counting)
}

async fn submit(app: &TestApp, key: &str, model: &str, n: usize, rid: &str) -> String {
    let r = app
        .post(
            "/v1/batches",
            key,
            &json!({"request_id": rid, "model": model, "tasks": tasks(n)}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["id"].as_str().unwrap_or_default().to_string()
}

async fn settled(app: &TestApp, acct: &str, batch: &str) -> bool {
    app.svc
        .batches
        .get(acct, batch)
        .await
        .ok()
        .flatten()
        .is_some_and(|b| b.status == BatchStatus::Completed)
}

/// Ten veo-pro jobs of 9 to 27 minutes each, polled every 10 s, swept every minute. Before
/// the task's message chain was guarded, every sweep after the fifth minute added one more
/// polling loop per task; now each minute costs the same: about six messages and six polls a
/// task, the first minute as the twentieth.
#[tokio::test]
async fn long_veo_jobs_keep_a_flat_message_and_poll_rate() {
    const TASKS: usize = 10;
    let (app, provider) = app_with(18 * 60_000).await;
    let (acct, key) = app.account_with_concurrency(100_000, 10).await;
    let batch = submit(&app, &key, "veo-pro", TASKS, "long-veo").await;

    // Per simulated minute: task messages handled and provider polls, per task.
    let mut minutes: Vec<(f64, f64)> = Vec::new();
    for _minute in 0..40 {
        let polls_before = provider.polls.load(Ordering::SeqCst);
        let mut handled = 0;
        for _ in 0..6 {
            handled += app.run_until_idle().await;
            app.clock.advance_ms(10_000);
        }
        handled += app.sweep().await.redriven as usize;
        let polls = provider.polls.load(Ordering::SeqCst) - polls_before;
        minutes.push((handled as f64 / TASKS as f64, polls as f64 / TASKS as f64));
        if settled(&app, &acct, &batch).await {
            break;
        }
    }
    let shown: Vec<String> = minutes
        .iter()
        .enumerate()
        .map(|(i, (m, p))| format!("min {}: {m:.1} msgs {p:.1} polls", i + 1))
        .collect();
    println!("per task per minute: {}", shown.join(", "));

    assert!(settled(&app, &acct, &batch).await, "the batch settles");
    assert_eq!(
        provider.submits.load(Ordering::SeqCst),
        TASKS as u64,
        "one job upstream per task"
    );
    // The shortest job takes 9 minutes: every task is still running through minute 8, so
    // those minutes must each cost what the first full one did.
    let (first_msgs, first_polls) = minutes[1];
    for (i, (m, p)) in minutes.iter().enumerate().take(9).skip(1) {
        assert!(
            *m <= first_msgs + 1.0 && *p <= first_polls + 1.0,
            "minute {}: {m:.1} messages and {p:.1} polls per task, against {first_msgs:.1} and \
             {first_polls:.1} in minute 2 ({shown:?})",
            i + 1
        );
    }
    // And no minute polls a task more often than its 10 s poll interval allows.
    for (i, (_, p)) in minutes.iter().enumerate() {
        assert!(*p <= 7.0, "minute {}: {p:.1} polls per task", i + 1);
    }
    app.assert_invariants().await;
}

/// Thirty ten-task batches queued behind one another on an account with four slots: most
/// tasks wait many minutes for their turn. Waiting is not a lost message, so no sweep
/// re-drives any of them, and the backlog drains once.
#[tokio::test]
async fn a_backlog_waiting_for_slots_is_never_re_driven() {
    const BATCHES: usize = 30;
    let (app, provider) = app_with(40_000).await;
    let (acct, key) = app.account_with_concurrency(1_000_000, 4).await;
    let mut batches = Vec::new();
    for i in 0..BATCHES {
        batches.push(submit(&app, &key, "sora-2", 10, &format!("backlog-{i}")).await);
    }
    let mut redriven = 0;
    let mut minutes = 0;
    loop {
        for _ in 0..6 {
            app.run_until_idle().await;
            app.clock.advance_ms(10_000);
        }
        redriven += app.sweep().await.redriven;
        minutes += 1;
        let mut all = true;
        for b in &batches {
            all &= settled(&app, &acct, b).await;
        }
        if all || minutes >= 240 {
            break;
        }
    }
    println!(
        "{BATCHES} batches drained in {minutes} simulated minutes; {redriven} re-driven, {} jobs",
        provider.submits.load(Ordering::SeqCst)
    );
    for b in &batches {
        assert!(settled(&app, &acct, b).await, "batch {b} settles");
    }
    assert!(minutes > 30, "the backlog really waited: {minutes} minutes");
    assert_eq!(redriven, 0, "tasks that waited their turn were re-driven");
    assert_eq!(
        provider.submits.load(Ordering::SeqCst),
        (BATCHES * 10) as u64,
        "one job per task"
    );
    app.assert_invariants().await;
}
