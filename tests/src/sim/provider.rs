//! The simulator's video provider: jobs with latencies drawn per model (seconds for sora-2,
//! one to forty-five minutes for veo-pro, past the 30-minute deadline), failures, policy
//! rejections, 429s with Retry-After, and outages that start and end. It keeps what the
//! cost bounds need: the jobs each task got, and when each job was polled.

use shared::adapters::clock::{ManualClock, SeededRandom};
use shared::domain::pricing::Model;
use shared::ports::provider::{JobRequest, JobState, ProviderError, Video};
use shared::ports::{Clock, Provider, Random};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub struct Job {
    pub task_id: String,
    pub submitted_ms: i64,
    pub ready_ms: i64,
    /// `None`: succeeds.
    pub outcome: Option<JobState>,
    pub cancelled: bool,
    pub polls: Vec<i64>,
}

#[derive(Default)]
struct State {
    jobs: BTreeMap<String, Job>,
    /// Jobs per task.
    per_task: BTreeMap<String, Vec<String>>,
    seen: Seen,
    /// Idempotency key -> job: a submit with a key seen before answers the same job.
    by_key: BTreeMap<String, String>,
    outage: bool,
    next: u64,
}

pub struct SimProvider {
    model: Model,
    state: Mutex<State>,
    random: SeededRandom,
    clock: ManualClock,
    pub fail_p: f64,
    pub reject_p: f64,
    pub throttle_p: f64,
}

impl SimProvider {
    pub fn new(model: Model, seed: u64, clock: ManualClock) -> Self {
        SimProvider {
            model,
            state: Mutex::new(State::default()),
            random: SeededRandom::new(seed),
            clock,
            fail_p: 0.08,
            reject_p: 0.04,
            throttle_p: 0.08,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn set_outage(&self, on: bool) {
        self.lock().outage = on;
    }

    /// The model's poll interval in our worker (the bound on polls per minute follows it).
    fn poll_interval_ms(&self) -> i64 {
        match self.model {
            Model::Sora2 => 5_000,
            Model::VeoPro => 10_000,
        }
    }

    pub fn seen(&self) -> Seen {
        self.lock().seen.clone()
    }

    pub fn outage(&self) -> bool {
        self.lock().outage
    }

    /// Every job so far.
    pub fn jobs(&self) -> Vec<(String, Job)> {
        self.lock()
            .jobs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn latency_ms(&self) -> i64 {
        match self.model {
            // 20 s to 150 s.
            Model::Sora2 => 20_000 + self.random.up_to(130_000) as i64,
            // 1 to 45 minutes: some outlive the 30-minute deadline.
            Model::VeoPro => 60_000 + self.random.up_to(44 * 60_000) as i64,
        }
    }

    fn busy(&self, outage: bool) -> Option<ProviderError> {
        if outage {
            return Some(ProviderError::Retryable {
                retry_after_secs: Some(5),
                message: "503 simulated outage".into(),
            });
        }
        if self.random.unit() < self.throttle_p {
            return Some(ProviderError::Retryable {
                retry_after_secs: Some(1 + self.random.up_to(29)),
                message: "429 simulated rate limit".into(),
            });
        }
        None
    }
}

/// A provider call is a point where other work runs (it is a network call).
async fn network() {
    shared::adapters::memory::yield_once().await;
}

#[async_trait::async_trait]
impl Provider for SimProvider {
    fn name(&self) -> &'static str {
        "simulated"
    }

    async fn submit(&self, req: &JobRequest) -> Result<String, ProviderError> {
        network().await;
        let outage = self.outage();
        if let Some(e) = self.busy(outage) {
            return Err(e);
        }
        if let Some(key) = &req.idempotency_key {
            if let Some(job) = self.lock().by_key.get(key) {
                return Ok(job.clone());
            }
        }
        let now = self.clock.now_ms();
        let roll = self.random.unit();
        let outcome = if roll < self.fail_p {
            Some(JobState::Failed {
                code: "model_error".into(),
                message: "simulated generation failure".into(),
            })
        } else if roll < self.fail_p + self.reject_p {
            Some(JobState::Rejected {
                reason: "simulated policy rejection".into(),
            })
        } else {
            None
        };
        let ready_ms = now + self.latency_ms();
        let mut st = self.lock();
        st.next += 1;
        let id = format!("{}-job-{}", self.model.as_str(), st.next);
        st.jobs.insert(
            id.clone(),
            Job {
                task_id: req.task_id.clone(),
                submitted_ms: now,
                ready_ms,
                outcome,
                cancelled: false,
                polls: Vec::new(),
            },
        );
        if let Some(key) = &req.idempotency_key {
            st.by_key.insert(key.clone(), id.clone());
        }
        st.seen.jobs += 1;
        let jobs = st.per_task.entry(req.task_id.clone()).or_default();
        jobs.push(id.clone());
        let second = (jobs.len() > 1).then(|| format!("{jobs:?}"));
        if let (Some(jobs), None) = (second, &st.seen.second_job) {
            st.seen.second_job = Some(format!("task {} has upstream jobs {jobs}", req.task_id));
        }
        Ok(id)
    }

    async fn poll(&self, job_id: &str, now_ms: i64) -> Result<JobState, ProviderError> {
        network().await;
        let outage = self.outage();
        {
            let bound = 2 * (60_000 / self.poll_interval_ms()) as usize + 2;
            let mut st = self.lock();
            let mut worst = None;
            if let Some(j) = st.jobs.get_mut(job_id) {
                j.polls.push(now_ms);
                let n = j
                    .polls
                    .iter()
                    .rev()
                    .take_while(|t| **t + 60_000 > now_ms)
                    .count();
                worst = Some((n, j.task_id.clone()));
            }
            if let Some((n, task)) = worst {
                st.seen.max_polls_per_minute = st.seen.max_polls_per_minute.max(n);
                if n > bound && st.seen.too_many_polls.is_none() {
                    st.seen.too_many_polls = Some(format!(
                        "job {job_id} of {task} polled {n} times in a minute (bound {bound})"
                    ));
                }
            }
        }
        if let Some(e) = self.busy(outage) {
            return Err(e);
        }
        let st = self.lock();
        let Some(j) = st.jobs.get(job_id) else {
            return Err(ProviderError::Permanent {
                code: "not_found".into(),
                message: format!("no job {job_id}"),
            });
        };
        if now_ms < j.ready_ms {
            return Ok(JobState::Running { progress: None });
        }
        Ok(j.outcome.clone().unwrap_or_else(|| {
            JobState::Succeeded(Video::Bytes(shared::adapters::providers::mp4::tiny_mp4(
                4,
                j.ready_ms as u64,
            )))
        }))
    }

    async fn download(
        &self,
        _job_id: &str,
        video: &Video,
    ) -> Result<Box<dyn shared::ports::provider::VideoStream>, ProviderError> {
        network().await;
        match video {
            Video::Bytes(b) => Ok(shared::ports::provider::Whole::boxed(b.clone())),
            Video::Url(_) => Err(ProviderError::Permanent {
                code: "no_video".into(),
                message: "the simulated provider returns bytes".into(),
            }),
        }
    }

    async fn cancel(&self, job_id: &str) -> Result<(), ProviderError> {
        network().await;
        if let Some(j) = self.lock().jobs.get_mut(job_id) {
            j.cancelled = true;
        }
        Ok(())
    }
}

/// What the cost bounds watch, recorded as it happens.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    pub jobs: usize,
    pub max_polls_per_minute: usize,
    /// The first task found with a second upstream job.
    pub second_job: Option<String>,
    /// The first job found polled more often than its interval allows.
    pub too_many_polls: Option<String>,
}

/// The sim's providers, one per model.
pub struct Providers {
    pub sora: Arc<SimProvider>,
    pub veo: Arc<SimProvider>,
}

impl Providers {
    pub fn seen(&self) -> Seen {
        let (a, b) = (self.sora.seen(), self.veo.seen());
        Seen {
            jobs: a.jobs + b.jobs,
            max_polls_per_minute: a.max_polls_per_minute.max(b.max_polls_per_minute),
            second_job: a.second_job.or(b.second_job),
            too_many_polls: a.too_many_polls.or(b.too_many_polls),
        }
    }

    pub fn set_outage(&self, on: bool) {
        self.sora.set_outage(on);
        self.veo.set_outage(on);
    }
}
