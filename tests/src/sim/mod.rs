//! A deterministic simulator of the money path: the whole pipeline over the in-memory twins,
//! driven by one `u64` seed.
//!
//! One seed decides everything: which in-flight invocation runs next (every port call is a
//! point where another may run first), when time moves, what the clients do (submissions,
//! replays, concurrent duplicates, cancels, grants, adjustments, reconcile calls), what the
//! providers answer and how long their jobs take (up to past the deadlines), when they go
//! down, what the queue does (late, reordered, handed out twice when a visibility timeout runs
//! out), where a fault point fails, which invocation is killed mid-flight or stalls (up to
//! its function's timeout, when the platform ends it), how much of a sweep runs, and when an
//! index serves stale reads. The clock is manual, randomness is seeded, and invocations are
//! polled by hand on one thread, so a run replays exactly.
//!
//! After every step the invariants of docs/CONTRACT.md are checked (conservation, no negative
//! balance, a gap-free ledger, `held` equal to the open holds, per-batch refund and release
//! tallies, `held == charged + refunded + released` for every settled batch), and
//! the cost and liveness bounds: at most one upstream job and at most two live messages per
//! task, provider polls per minute within the poll interval, the concurrency cap, and a
//! reconcile that reports only what is real. At the end everything quiets down, every batch
//! must settle, and every ended task's event must be stored.

pub mod provider;

use crate::MemoryStack;
use provider::{Providers, SimProvider};
use shared::adapters::clock::{ManualClock, SeededRandom};
use shared::adapters::memory::QueueChaos;
use shared::domain::account::{AccountTerms, Plan};
use shared::domain::batch::{BatchStatus, TaskStatus};
use shared::domain::idempotency::fingerprint;
use shared::domain::ledger::{EntryKind, Tally};
use shared::domain::money::Credits;
use shared::domain::pricing::Model;
use shared::ports::provider::{Route, Routes};
use shared::ports::queue::QueueName;
use shared::ports::records::ShardRecord;
use shared::ports::webhooks::PostOutcome;
use shared::ports::{Clock, Faults, Provider, Random, TimeRange, WebhookSender};
use shared::service::auth::Caller;
use shared::service::pipeline::Pipeline;
use shared::service::Services;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

const T0: i64 = 1_780_000_000_000;

/// What a run does; `Options::default()` is what CI runs for every seed.
#[derive(Clone, Debug)]
pub struct Options {
    /// Steps of weather (clients, chaos, crashes) before the quiet phase.
    pub steps: usize,
    /// Chance that a named fault point fails when reached.
    pub crash_p: f64,
    /// Share of batches on veo-pro (jobs of minutes, past the deadline).
    pub veo_share: f64,
    /// Let global indexes serve stale reads (and catch up at random).
    pub stale_reads: bool,
    /// Keep the last this many steps for the trace printed with a violation.
    pub trace_len: usize,
    /// Print every step as it happens.
    pub verbose: bool,
    /// Kinds of check to skip (`reconcile`, `live-messages`, `upstream-jobs`, `polls`), to
    /// hunt one fault at a time. Empty in CI.
    pub ignore: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            steps: 150,
            crash_p: 0.02,
            veo_share: 0.25,
            stale_reads: true,
            trace_len: 60,
            verbose: false,
            ignore: Vec::new(),
        }
    }
}

/// What a run saw.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub steps: usize,
    pub virtual_ms: i64,
    pub batches: usize,
    pub settled: usize,
    pub tasks: u64,
    pub upstream_jobs: usize,
    pub task_messages_sent: u64,
    pub max_live_messages_per_task: usize,
    pub max_polls_per_minute: usize,
    pub reconciles: usize,
    pub kills: usize,
    /// Cancelled tasks that had reached a provider (charged), and those released.
    pub cancelled_charged: usize,
    pub released: usize,
    /// Invocations the platform ended at their function's timeout.
    pub timeouts: usize,
    /// The first invariant or bound that failed, if one did.
    pub violation: Option<String>,
    /// The steps before it.
    pub trace: Vec<String>,
}

/// A webhook sender that answers 200 to everything (no endpoint exists in the sim).
struct NullSender;

#[async_trait::async_trait]
impl WebhookSender for NullSender {
    async fn post(&self, _url: &str, _headers: &[(&str, String)], _body: Vec<u8>) -> PostOutcome {
        PostOutcome::answered(200)
    }

    async fn check_public_name(&self, _host: &str, _port: Option<u16>) -> Result<(), String> {
        Ok(())
    }
}

enum Done {
    /// An SQS-triggered invocation ended: the messages it held, and which it reported failed.
    Sqs {
        queue: QueueName,
        receipts: Vec<String>,
        failed: BTreeSet<String>,
    },
    Submitted {
        request_id: String,
        created: Option<String>,
    },
    Reconciled(Box<Result<shared::service::reconcile::Report, String>>),
    Other,
}

type Job = Pin<Box<dyn Future<Output = Done>>>;

struct Inflight {
    label: String,
    fut: Job,
    /// A stalled instance (a long pause, a slow network) is not polled before this.
    frozen_until_ms: i64,
    /// When it started: the platform ends it once its function's timeout has passed.
    started_ms: i64,
}

/// How long the function behind an invocation may run (`template.yaml` timeouts): a stall
/// lasts at most that long.
fn lifetime_ms(label: &str) -> i64 {
    if label == "sweep" {
        300_000
    } else if label.contains(" tasks[") || label.contains(" events[") {
        60_000
    } else if label.contains(" settle[") {
        30_000
    } else {
        29_000
    }
}

struct Account {
    id: String,
    max_concurrency: u32,
}

/// The world of one run.
pub struct Sim {
    opts: Options,
    rng: SeededRandom,
    clock: ManualClock,
    stack: MemoryStack,
    svc: Services,
    p: Pipeline,
    providers: Providers,
    faults_on: Arc<AtomicBool>,
    inflight: Vec<Inflight>,
    accounts: Vec<Account>,
    /// request_id -> (account, body) of every submission, and the batch its first 201 named.
    submissions: BTreeMap<String, (usize, serde_json::Value, Option<String>)>,
    batches: Vec<(String, String)>,
    next_sweep_ms: i64,
    next_check_ms: i64,
    sweeping: bool,
    /// Every end mark seen so far: a mark, once written, never changes or disappears.
    marks: BTreeMap<(String, String), shared::domain::task::Outcome>,
    trace: VecDeque<String>,
    report: Report,
    counter: u64,
}

fn waker() -> Waker {
    Waker::noop().clone()
}

impl Sim {
    pub async fn new(seed: u64, opts: Options) -> Sim {
        let clock = ManualClock::starting_at(T0).with_sleeps_advancing();
        let stack = MemoryStack::with_queue_delays(clock.clone(), true, true);
        stack.store.interleave(true);
        stack.store.serve_stale_reads(opts.stale_reads);
        stack.queue.interleave(true);
        stack.queue.set_chaos(Some(QueueChaos {
            random: Arc::new(SeededRandom::new(seed ^ 0x51)),
            delay_p: 0.05,
            max_extra_delay_ms: 30_000,
        }));
        let faults_on = Arc::new(AtomicBool::new(true));
        let crash_rng = SeededRandom::new(seed ^ 0xC4A5);
        let (on, crash_p) = (faults_on.clone(), opts.crash_p);
        let mut ports = stack.ports.clone();
        ports.random = Arc::new(SeededRandom::new(seed ^ 0x1D5));
        ports.sender = Arc::new(NullSender);
        ports.faults =
            Faults::new(move |_point| on.load(Ordering::SeqCst) && crash_rng.unit() < crash_p);
        let svc = Services::new(ports);
        let providers = Providers {
            sora: Arc::new(SimProvider::new(Model::Sora2, seed ^ 0x50, clock.clone())),
            veo: Arc::new(SimProvider::new(Model::VeoPro, seed ^ 0x7E0, clock.clone())),
        };
        let mut routes = std::collections::HashMap::new();
        for (m, prov) in [
            (Model::Sora2, providers.sora.clone() as Arc<dyn Provider>),
            (Model::VeoPro, providers.veo.clone() as Arc<dyn Provider>),
        ] {
            routes.insert(
                m,
                Route {
                    provider: prov,
                    provider_model: m.as_str().to_string(),
                },
            );
        }
        let p = Pipeline {
            svc: svc.clone(),
            providers: Routes { routes },
        };
        let mut sim = Sim {
            rng: SeededRandom::new(seed),
            opts,
            clock,
            stack,
            svc,
            p,
            providers,
            faults_on,
            inflight: Vec::new(),
            accounts: Vec::new(),
            submissions: BTreeMap::new(),
            batches: Vec::new(),
            next_sweep_ms: T0 + 60_000,
            next_check_ms: T0,
            sweeping: false,
            marks: BTreeMap::new(),
            trace: VecDeque::new(),
            report: Report {
                seed,
                ..Default::default()
            },
            counter: 0,
        };
        sim.open_accounts().await;
        sim
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    fn ignores(&self, kind: &str) -> bool {
        self.opts.ignore.iter().any(|k| k == kind)
    }

    fn note(&mut self, line: String) {
        let line = format!("t=+{:.1}s {line}", (self.now() - T0) as f64 / 1_000.0);
        if self.opts.verbose {
            println!("{line}");
        }
        self.trace.push_back(line);
        while self.trace.len() > self.opts.trace_len {
            self.trace.pop_front();
        }
    }

    fn pick(&self, n: usize) -> usize {
        self.rng.up_to(n as u64 - 1) as usize
    }

    async fn open_accounts(&mut self) {
        let n = 2 + self.pick(2);
        for i in 0..n {
            let max = 2 + self.rng.up_to(4) as u32;
            let terms = AccountTerms::new(&format!("Sim {i}"), Plan::Payg, 90, max, None)
                .unwrap_or_else(|e| panic!("terms: {e}"));
            let body = serde_json::json!({ "account": i });
            let r = shared::service::accounts::create_account(
                &self.svc,
                &format!("acct-{i}"),
                terms,
                &fingerprint(&body),
            )
            .await
            .unwrap_or_else(|e| panic!("account: {e}"));
            let id = serde_json::from_str::<serde_json::Value>(&r.body).unwrap_or_default()["id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let credits = 2_000 + self.rng.up_to(60_000) as i64;
            let req = shared::service::credits::GrantRequest {
                request_id: format!("open-{i}"),
                pack: None,
                amount: Some(credits),
                reason: "simulated prepaid".into(),
            };
            // Fault points are quiet while the world is set up.
            self.faults_on.store(false, Ordering::SeqCst);
            let granted = shared::service::credits::grant(&self.svc, &id, req, "open", "sim").await;
            self.faults_on.store(true, Ordering::SeqCst);
            if let Err(e) = granted {
                panic!("grant: {e}");
            }
            self.accounts.push(Account {
                id,
                max_concurrency: max,
            });
        }
    }

    fn spawn(&mut self, label: String, fut: Job) {
        self.note(format!("start {label}"));
        let started_ms = self.now();
        self.inflight.push(Inflight {
            label,
            fut,
            frozen_until_ms: 0,
            started_ms,
        });
    }

    /// Polls one in-flight invocation once; handles it if it finished.
    async fn poll_one(&mut self, i: usize) -> Result<(), String> {
        let w = waker();
        let mut cx = Context::from_waker(&w);
        let ready = match self.inflight[i].fut.as_mut().poll(&mut cx) {
            Poll::Ready(done) => Some(done),
            Poll::Pending => None,
        };
        if let Some(done) = ready {
            let f = self.inflight.swap_remove(i);
            self.finished(f.label, done).await?;
        }
        Ok(())
    }

    async fn finished(&mut self, label: String, done: Done) -> Result<(), String> {
        match done {
            Done::Sqs {
                queue,
                receipts,
                failed,
            } => {
                let done: Vec<String> = receipts
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !failed.contains(&i.to_string()))
                    .map(|(_, r)| r.clone())
                    .collect();
                let _ = self.svc.queue.delete(queue, &done).await;
                self.note(format!("done {label} ({} failed)", failed.len()));
            }
            Done::Submitted {
                request_id,
                created,
            } => {
                if let Some(id) = created {
                    let entry = self.submissions.get_mut(&request_id);
                    match entry {
                        Some((acct, _, first @ None)) => {
                            *first = Some(id.clone());
                            let a = self.accounts[*acct].id.clone();
                            if !self.batches.iter().any(|(_, b)| b == &id) {
                                self.batches.push((a, id.clone()));
                            }
                        }
                        Some((_, _, Some(first))) if first != &id => {
                            return Err(format!(
                                "idempotency: request {request_id} made {first} and then {id}"
                            ));
                        }
                        _ => {}
                    }
                }
                self.note(format!("done {label}"));
            }
            Done::Reconciled(r) => {
                self.report.reconciles += 1;
                match *r {
                    Ok(rep) if !rep.ok && !self.ignores("reconcile") => {
                        return Err(format!(
                            "reconcile reported discrepancies that do not exist: {:?}",
                            rep.discrepancies
                        ));
                    }
                    _ => self.note(format!("done {label}")),
                }
            }
            Done::Other => self.note(format!("done {label}")),
        }
        Ok(())
    }

    /// Receives up to ten visible messages of `queue` and starts the function that handles
    /// them, as Lambda's event source would.
    async fn invoke(&mut self, queue: QueueName) -> bool {
        let msgs = match self.svc.queue.receive(queue, 0).await {
            Ok(m) if !m.is_empty() => m,
            _ => return false,
        };
        if queue == QueueName::Tasks {
            self.report.task_messages_sent = self.stack.queue.stats(QueueName::Tasks).sent;
        }
        let mut event = aws_lambda_events::event::sqs::SqsEvent::default();
        let mut receipts = Vec::new();
        for (i, m) in msgs.into_iter().enumerate() {
            let mut e = aws_lambda_events::event::sqs::SqsMessage::default();
            e.message_id = Some(i.to_string());
            e.body = Some(m.body);
            e.attributes.insert(
                shared::adapters::lambda::RECEIVE_COUNT.to_string(),
                m.receive_count.to_string(),
            );
            receipts.push(m.receipt);
            event.records.push(e);
        }
        let n = receipts.len();
        let (p, svc) = (self.p.clone(), self.svc.clone());
        let fut: Job = match queue {
            QueueName::Tasks => Box::pin(async move {
                let r = task_worker::handle_event(&p, event).await;
                Done::Sqs {
                    queue,
                    receipts,
                    failed: failures(r),
                }
            }),
            QueueName::Settle => Box::pin(async move {
                let r = settlement::handle_event(&p, event).await;
                Done::Sqs {
                    queue,
                    receipts,
                    failed: failures(r),
                }
            }),
            _ => Box::pin(async move {
                let r = webhook_dispatch::handle_event(&svc, event).await;
                Done::Sqs {
                    queue,
                    receipts,
                    failed: failures(r),
                }
            }),
        };
        self.counter += 1;
        self.spawn(format!("#{} {}[{n}]", self.counter, queue.as_str()), fut);
        true
    }

    fn caller_future(&self, acct: usize) -> impl Future<Output = Option<Caller>> + 'static {
        let svc = self.svc.clone();
        let id = self.accounts[acct].id.clone();
        async move {
            let account = svc.accounts.get(&id).await.ok().flatten()?;
            let key = shared::ports::records::ApiKeyRecord {
                key_hash: "0".repeat(64),
                key_id: "key_sim".into(),
                account_id: id.clone(),
                name: "sim".into(),
                prefix: "vgk_sim".into(),
                last4: "0000".into(),
                enabled: true,
                created_ms: 0,
                scopes: vec!["admin".into()],
                rate_limit_per_min: None,
                ip_allowlist: vec![],
                expires_ms: None,
                revoked_ms: None,
                disabled_reason: None,
                throttle: None,
                updated_ms: 0,
            };
            Some(Caller {
                account,
                key_id: key.key_id.clone(),
                key,
            })
        }
    }

    fn submit_future(&self, acct: usize, body: serde_json::Value) -> Job {
        let svc = self.svc.clone();
        let caller = self.caller_future(acct);
        Box::pin(async move {
            let request_id = body["request_id"].as_str().unwrap_or_default().to_string();
            let Some(caller) = caller.await else {
                return Done::Submitted {
                    request_id,
                    created: None,
                };
            };
            let fp = fingerprint(&body);
            let created = match serde_json::from_value(body) {
                Ok(req) => match shared::service::batches::submit(&svc, &caller, req, &fp).await {
                    Ok(r) if r.status == 201 => serde_json::from_str::<serde_json::Value>(&r.body)
                        .ok()
                        .and_then(|v| v["id"].as_str().map(str::to_string)),
                    _ => None,
                },
                Err(_) => None,
            };
            Done::Submitted {
                request_id,
                created,
            }
        })
    }

    /// A client does something.
    fn client(&mut self) {
        let roll = self.rng.up_to(99);
        let acct = self.pick(self.accounts.len());
        let account_id = self.accounts[acct].id.clone();
        match roll {
            0..=39 => {
                self.counter += 1;
                // 10 to 22 tasks: both sides of `WITH_HOLD_MAX_TASKS`, so batches created
                // whole in their hold and batches written after it both meet every fault.
                let n = 10 + self.rng.up_to(12) as usize;
                let model = if self.rng.unit() < self.opts.veo_share {
                    "veo-pro"
                } else {
                    "sora-2"
                };
                let tasks: Vec<serde_json::Value> = (0..n)
                    .map(|i| serde_json::json!({ "prompt": format!("shot {i}") }))
                    .collect();
                let rid = format!("r{}", self.counter);
                let body = serde_json::json!({"request_id": rid, "model": model, "tasks": tasks});
                self.submissions
                    .insert(rid.clone(), (acct, body.clone(), None));
                let twice = self.rng.unit() < 0.2;
                let f = self.submit_future(acct, body.clone());
                self.spawn(format!("submit {rid} {model}x{n}"), f);
                if twice {
                    let f = self.submit_future(acct, body);
                    self.spawn(format!("submit {rid} (concurrent duplicate)"), f);
                }
            }
            40..=54 => {
                // A replay of an earlier submission: same request_id, same body.
                if self.submissions.is_empty() {
                    return;
                }
                // Mostly a client retrying what never got its 201 (a crash, a time-out):
                // that is when a retry races a recovery of the same batch.
                let unanswered: Vec<&String> = self
                    .submissions
                    .iter()
                    .filter(|(_, (_, _, batch))| batch.is_none())
                    .map(|(rid, _)| rid)
                    .collect();
                let rid = if !unanswered.is_empty() && self.rng.unit() < 0.7 {
                    unanswered[self.pick(unanswered.len())].clone()
                } else {
                    let k = self.pick(self.submissions.len());
                    match self.submissions.keys().nth(k) {
                        Some(r) => r.clone(),
                        None => return,
                    }
                };
                let Some((a, body, _)) = self.submissions.get(&rid) else {
                    return;
                };
                let (a, body) = (*a, body.clone());
                let f = self.submit_future(a, body);
                self.spawn(format!("replay {rid}"), f);
            }
            55..=66 => {
                if self.batches.is_empty() {
                    return;
                }
                let (a, b) = self.batches[self.pick(self.batches.len())].clone();
                self.counter += 1;
                let svc = self.svc.clone();
                let rid = format!("cancel-{}", self.counter);
                let bb = b.clone();
                let f: Job = Box::pin(async move {
                    let req = shared::service::batches::CancelBatch { request_id: rid };
                    let _ = shared::service::batches::cancel(&svc, &a, 30, &bb, req, "fp").await;
                    Done::Other
                });
                self.spawn(format!("cancel {b}"), f);
            }
            67..=78 => {
                self.counter += 1;
                let svc = self.svc.clone();
                let amount = 100 + self.rng.up_to(20_000) as i64;
                let rid = format!("g{}", self.counter);
                let id = account_id.clone();
                let f: Job = Box::pin(async move {
                    let req = shared::service::credits::GrantRequest {
                        request_id: rid,
                        pack: None,
                        amount: Some(amount),
                        reason: "top-up".into(),
                    };
                    let fp = fingerprint(&serde_json::json!({ "amount": amount }));
                    let _ = shared::service::credits::grant(&svc, &id, req, &fp, "sim").await;
                    Done::Other
                });
                self.spawn(format!("grant {amount} to {account_id}"), f);
            }
            79..=84 => {
                self.counter += 1;
                let svc = self.svc.clone();
                let rid = format!("adj{}", self.counter);
                let id = account_id.clone();
                let f: Job = Box::pin(async move {
                    let req = shared::service::credits::AdjustRequest {
                        request_id: rid,
                        amount: 7,
                        reason: "goodwill".into(),
                        kind: Some("compensation".into()),
                        refers_to: None,
                    };
                    let _ = shared::service::credits::adjust(&svc, &id, req, "fp", "sim").await;
                    Done::Other
                });
                self.spawn(format!("adjust {account_id}"), f);
            }
            _ => {
                let svc = self.svc.clone();
                let id = account_id.clone();
                let f: Job = Box::pin(async move {
                    let r = match svc.accounts.get(&id).await {
                        Ok(Some(a)) => shared::service::reconcile::account(&svc, &a)
                            .await
                            .map_err(|e| e.to_string()),
                        _ => Err("no account".into()),
                    };
                    Done::Reconciled(Box::new(r))
                });
                self.spawn(format!("reconcile {account_id}"), f);
            }
        }
    }

    fn sweep_if_due(&mut self) {
        if self.sweeping || self.now() < self.next_sweep_ms {
            return;
        }
        self.next_sweep_ms = self.now() + 60_000;
        self.sweeping = true;
        let p = self.p.clone();
        let f: Job = Box::pin(async move {
            let _ = shared::service::pipeline::sweeper::sweep(&p).await;
            Done::Other
        });
        self.spawn("sweep".into(), f);
    }

    fn forget_sweep_if_gone(&mut self) {
        self.sweeping = self.inflight.iter().any(|f| f.label == "sweep");
    }

    /// One step of weather.
    async fn step(&mut self) -> Result<(), String> {
        self.end_timed_out();
        self.sweep_if_due();
        let roll = self.rng.up_to(999);
        match roll {
            0..=449 if !self.inflight.is_empty() => {
                let now = self.now();
                let awake: Vec<usize> = (0..self.inflight.len())
                    .filter(|&i| self.inflight[i].frozen_until_ms <= now)
                    .collect();
                if awake.is_empty() {
                    self.advance_a_little();
                } else {
                    let i = awake[self.pick(awake.len())];
                    self.poll_one(i).await?;
                }
            }
            0..=649 => {
                let q = match self.rng.up_to(9) {
                    0..=6 => QueueName::Tasks,
                    7..=8 => QueueName::Settle,
                    _ => QueueName::Events,
                };
                if !self.invoke(q).await {
                    self.advance_a_little();
                }
            }
            650..=799 => self.advance_a_little(),
            800..=869 => self.client(),
            870..=884 if !self.inflight.is_empty() => {
                // An instance dies mid-flight: what it wrote stays, the rest never happens;
                // its messages come back when their visibility runs out.
                let i = self.pick(self.inflight.len());
                let f = self.inflight.swap_remove(i);
                self.report.kills += 1;
                self.note(format!("kill {}", f.label));
                self.forget_sweep_if_gone();
            }
            885..=919 => {
                let pick = self.rng.up_to(u32::MAX as u64);
                if let Some(body) = self.stack.queue.expose(QueueName::Tasks, pick) {
                    self.note(format!("visibility ran out early: {body}"));
                }
            }
            920..=929 => {
                let on = !self.providers.sora.outage();
                self.providers.set_outage(on);
                self.note(format!(
                    "provider outage {}",
                    if on { "starts" } else { "ends" }
                ));
            }
            930..=969 => {
                self.stack.store.catch_up();
                self.note("index replicas catch up".into());
            }
            970..=979 if !self.inflight.is_empty() => {
                // An instance stalls for up to its function's whole timeout, then goes on
                // as if nothing happened: whatever leases it held may have run out.
                let i = self.pick(self.inflight.len());
                let life = lifetime_ms(&self.inflight[i].label);
                let until = self.now() + 1_000 + self.rng.up_to(life as u64) as i64;
                self.inflight[i].frozen_until_ms = until;
                let label = self.inflight[i].label.clone();
                self.note(format!(
                    "stall {label} until t=+{:.1}s",
                    (until - T0) as f64 / 1e3
                ));
            }
            _ => {
                self.advance_a_little();
            }
        }
        self.forget_sweep_if_gone();
        Ok(())
    }

    /// While an instance is awake, time moves as fast as its calls (milliseconds); when
    /// every instance waits or sleeps, it moves as fast as the clients and schedules.
    fn advance_a_little(&mut self) {
        let now = self.now();
        let busy = self.inflight.iter().any(|f| f.frozen_until_ms <= now);
        let dt = if busy {
            1 + self.rng.up_to(250) as i64
        } else {
            200 + self.rng.up_to(20_000) as i64
        };
        self.clock.advance_ms(dt);
    }

    /// The platform ends every invocation whose function's timeout has passed, stalled or
    /// not: what it wrote stays, the rest never happens.
    fn end_timed_out(&mut self) {
        let now = self.now();
        let mut i = 0;
        while i < self.inflight.len() {
            let f = &self.inflight[i];
            if now - f.started_ms > lifetime_ms(&f.label) {
                let f = self.inflight.swap_remove(i);
                self.report.timeouts += 1;
                self.note(format!("timeout {}", f.label));
            } else {
                i += 1;
            }
        }
        self.forget_sweep_if_gone();
    }

    /// Checks every invariant and bound that must hold at any instant. The reads do not
    /// interleave (nothing else runs while the world is inspected).
    async fn check(&mut self) -> Result<(), String> {
        self.stack.store.interleave(false);
        self.stack.queue.interleave(false);
        let r = self.inspect().await;
        self.stack.store.interleave(true);
        self.stack.queue.interleave(true);
        r
    }

    async fn inspect(&mut self) -> Result<(), String> {
        let svc = self.svc.clone();
        for a in &self.accounts {
            let acct = svc
                .accounts
                .get(&a.id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("account vanished")?;
            let mut tally = Tally::from_start();
            let mut refunds: BTreeMap<String, Credits> = BTreeMap::new();
            let mut releases: BTreeMap<String, Credits> = BTreeMap::new();
            let mut after = None;
            loop {
                let page = svc
                    .ledger
                    .page(&a.id, TimeRange::ALL, after.take())
                    .await
                    .map_err(|e| e.to_string())?;
                for e in &page.items {
                    tally
                        .add(e.seq, e.amount, e.balance_after)
                        .map_err(|e| e.to_string())?;
                    let per_batch = match e.kind {
                        EntryKind::Refund => Some(&mut refunds),
                        EntryKind::Release => Some(&mut releases),
                        _ => None,
                    };
                    if let Some(m) = per_batch {
                        *m.entry(e.batch_id.clone().unwrap_or_default()).or_default() += e.amount;
                    }
                }
                match page.next {
                    Some(t) => after = Some(t),
                    None => break,
                }
            }
            if !tally.is_clean() {
                return Err(format!("ledger of {}: {:?}", a.id, tally.findings));
            }
            if acct.balance != tally.sum {
                return Err(format!(
                    "conservation: {} has balance {} but its ledger sums to {}",
                    a.id, acct.balance, tally.sum
                ));
            }
            if acct.ledger_seq != tally.count {
                return Err(format!("ledger of {} has gaps or extras", a.id));
            }
            if acct.balance < Credits::ZERO {
                return Err(format!("negative balance on {}", a.id));
            }
            let mut open = Credits::ZERO;
            // Tasks whose record holds a slot: never more than the account counts (a slot
            // given back twice, or handed over to two tasks, would show here).
            let mut holders = 0u32;
            let mut before = None;
            loop {
                let (page, more) = svc
                    .batches
                    .list(&a.id, None, 200, before.take())
                    .await
                    .map_err(|e| e.to_string())?;
                for b in &page {
                    let idxs: Vec<u32> = (0..b.task_count).collect();
                    let tasks = svc
                        .tasks
                        .get_many(&b.batch_id, &idxs)
                        .await
                        .map_err(|e| e.to_string())?;
                    holders += tasks
                        .iter()
                        .filter(|t| t.slot && !t.status.is_terminal())
                        .count() as u32;
                    let tallied = refunds.get(&b.batch_id).copied().unwrap_or_default();
                    if tallied != b.credits.refunded {
                        return Err(format!(
                            "refund tally of {}: entries {} != batch {}",
                            b.batch_id, tallied, b.credits.refunded
                        ));
                    }
                    let released = releases.get(&b.batch_id).copied().unwrap_or_default();
                    if released != b.credits.released {
                        return Err(format!(
                            "release tally of {}: entries {} != batch {}",
                            b.batch_id, released, b.credits.released
                        ));
                    }
                    if b.status == BatchStatus::Completed {
                        let st = b.settlement.ok_or("completed without settlement")?;
                        if st.held != st.charged + st.refunded + st.released {
                            return Err(format!("{} does not close: {st:?}", b.batch_id));
                        }
                    } else {
                        open += b.credits.held - b.credits.refunded - b.credits.released;
                    }
                }
                before = page.last().map(|b| b.batch_id.clone());
                if !more {
                    break;
                }
            }
            if acct.held != open {
                return Err(format!(
                    "held of {} is {} but open batches hold {}",
                    a.id, acct.held, open
                ));
            }
            if holders > acct.running {
                return Err(format!(
                    "slots of {}: {holders} tasks hold one, {} counted",
                    a.id, acct.running
                ));
            }
            if acct.running > a.max_concurrency {
                return Err(format!(
                    "concurrency of {}: {} slots taken, cap {}",
                    a.id, acct.running, a.max_concurrency
                ));
            }
        }
        // A run whose messages grow without bound is stopped (it would never end).
        let sent = self.stack.queue.stats(QueueName::Tasks).sent;
        if sent > 200_000 {
            return Err(format!("runaway: {sent} task messages sent"));
        }
        // End marks are written once and never change: a task's outcome is final. (A settled
        // batch's marks are final: its shards are not written again.)
        let open: BTreeSet<String> = svc
            .batches
            .open()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(_, b)| b)
            .collect();
        for (_, b) in self.batches.iter().filter(|(_, b)| open.contains(b)) {
            let shards = svc.progress.all(b).await.map_err(|e| e.to_string())?;
            let mut now_marked = BTreeMap::new();
            for sh in &shards {
                counts_whole(sh)?;
                for (idx, o) in &sh.ended {
                    now_marked.insert(idx.clone(), *o);
                }
            }
            for ((batch, idx), o) in self.marks.range((b.clone(), String::new())..) {
                if batch != b {
                    break;
                }
                if now_marked.get(idx) != Some(o) {
                    return Err(format!(
                        "the end mark {o:?} of task {idx} of {b} was erased or changed"
                    ));
                }
            }
            for (idx, o) in now_marked {
                self.marks.insert((b.clone(), idx), o);
            }
        }
        // At most two live messages per task wait to be handed out: the chain's next one, and
        // at most one copy of it (a step that ran twice). Messages for an older version of the
        // task are dead: they are dropped on arrival and send nothing, so they cannot grow a
        // second chain; they are not counted.
        let mut pending: BTreeMap<(String, u32), Vec<Option<u64>>> = BTreeMap::new();
        self.stack.queue.for_each_pending(QueueName::Tasks, |body| {
            if let Some((task, version)) = run_target(body) {
                pending.entry(task).or_default().push(version);
            }
        });
        for ((b, i), versions) in pending.into_iter().filter(|(_, v)| v.len() > 1) {
            let current = svc
                .tasks
                .get(&b, i)
                .await
                .map_err(|e| e.to_string())?
                .map_or(0, |t| t.version);
            let live = versions
                .iter()
                .filter(|v| v.is_none_or(|v| v >= current))
                .count();
            self.report.max_live_messages_per_task =
                self.report.max_live_messages_per_task.max(live);
            if live > 2 && !self.ignores("live-messages") {
                return Err(format!(
                    "{live} live messages for task {i} of {b} (versions {versions:?}, task at {current})"
                ));
            }
        }
        // At most one upstream job per task; polls no more often than the interval allows
        // (the providers keep these as they happen).
        let seen = self.providers.seen();
        self.report.max_polls_per_minute = seen.max_polls_per_minute;
        self.report.upstream_jobs = seen.jobs;
        if let Some(v) = seen.too_many_polls.filter(|_| !self.ignores("polls")) {
            return Err(v);
        }
        if let Some(v) = seen.second_job.filter(|_| !self.ignores("upstream-jobs")) {
            return Err(v);
        }
        Ok(())
    }

    /// Runs every in-flight invocation to its end.
    async fn finish_inflight(&mut self) -> Result<(), String> {
        while !self.inflight.is_empty() {
            let i = self.pick(self.inflight.len());
            self.poll_one(i).await?;
        }
        self.forget_sweep_if_gone();
        Ok(())
    }

    /// The weather stops: no more faults, duplicates, outages or stale reads; time moves
    /// from one due message or sweep to the next until every batch has settled.
    async fn quiet(&mut self) -> Result<(), String> {
        self.faults_on.store(false, Ordering::SeqCst);
        self.providers.set_outage(false);
        self.stack.store.serve_stale_reads(false);
        self.stack.store.catch_up();
        self.stack.queue.set_chaos(None);
        self.finish_inflight().await?;
        let limit = self.now() + 26 * 3_600_000;
        for _ in 0..200_000 {
            let mut any = false;
            for q in [QueueName::Tasks, QueueName::Settle, QueueName::Events] {
                while self.invoke(q).await {
                    any = true;
                    self.finish_inflight().await?;
                }
            }
            self.sweep_if_due();
            if !self.inflight.is_empty() {
                any = true;
                self.finish_inflight().await?;
            }
            // Once a simulated minute (with the sweep): checking every delivery of a quiet
            // world would cost more than the run.
            if self.now() >= self.next_check_ms {
                self.next_check_ms = self.now() + 60_000;
                self.check().await?;
            }
            if !any {
                // Quiet means settled and every queue empty: a message still invisible (its
                // invocation was killed) comes back and may have work to finish, such as the
                // events of an end whose invocation died before sending them.
                let drained = [QueueName::Tasks, QueueName::Settle, QueueName::Events]
                    .into_iter()
                    .all(|q| self.stack.queue.next_visible_ms(q).is_none());
                if drained && self.all_settled().await? {
                    for (_, b) in &self.batches {
                        let shards = self.svc.progress.all(b).await.map_err(|e| e.to_string())?;
                        shards.iter().try_for_each(counts_whole)?;
                    }
                    return self.check().await;
                }
                if self.now() > limit {
                    return Err("liveness: batches still open a day past every deadline".into());
                }
                let next = [QueueName::Tasks, QueueName::Settle, QueueName::Events]
                    .into_iter()
                    .filter_map(|q| self.stack.queue.next_visible_ms(q))
                    .min()
                    .unwrap_or(self.next_sweep_ms)
                    .min(self.next_sweep_ms);
                let to = next.max(self.now() + 1);
                self.clock.advance_ms(to - self.now());
            }
        }
        Err("the pipeline never went quiet".into())
    }

    async fn all_settled(&mut self) -> Result<bool, String> {
        let mut settled = 0;
        let mut tasks = 0u64;
        for (a, b) in &self.batches {
            let batch = self
                .svc
                .batches
                .get(a, b)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("batch vanished")?;
            tasks += u64::from(batch.task_count);
            if batch.status == BatchStatus::Completed {
                settled += 1;
            }
        }
        self.report.batches = self.batches.len();
        self.report.settled = settled;
        self.report.tasks = tasks;
        Ok(settled == self.batches.len())
    }

    /// Task records agree with how their tasks ended (a batch that settled has no task left
    /// running or queued).
    /// After settlement: no task is left open, and the cancel rule held: a cancelled task
    /// is charged only if a job was made for it upstream (it had reached a provider). (A
    /// released task may still have one: a submit that raced the cancel, whose job the
    /// losing worker cancels.)
    async fn check_task_records(&mut self) -> Result<(), String> {
        let upstream: BTreeSet<String> = [&self.providers.sora, &self.providers.veo]
            .iter()
            .flat_map(|p| p.jobs())
            .map(|(_, j)| j.task_id)
            .collect();
        for (_, b) in &self.batches {
            let mut after = None;
            loop {
                let (page, more) = self
                    .svc
                    .tasks
                    .list(b, 200, after)
                    .await
                    .map_err(|e| e.to_string())?;
                for t in &page {
                    if matches!(t.status, TaskStatus::Queued | TaskStatus::Running) {
                        return Err(format!(
                            "{} is still {:?} after settlement",
                            t.task_id, t.status
                        ));
                    }
                    // Every end is told: its event is stored (a worker killed after the end
                    // and before its invocation's sends went out must not lose it).
                    let status = serde_json::to_value(t.status)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    let event_id = format!("evt_{}_{status}", t.task_id);
                    let stored = self
                        .svc
                        .events
                        .get(&t.account_id, &event_id)
                        .await
                        .map_err(|e| e.to_string())?;
                    if stored.is_none() {
                        return Err(format!(
                            "{} ended {status} and {event_id} was never stored",
                            t.task_id
                        ));
                    }
                    if t.status == TaskStatus::Cancelled {
                        let charged = t.charged.ok_or("a cancelled task without `charged`")?;
                        if charged && !upstream.contains(&t.task_id) {
                            return Err(format!(
                                "{} was charged for a cancel but never reached a provider",
                                t.task_id
                            ));
                        }
                        self.report.released += usize::from(!charged);
                        self.report.cancelled_charged += usize::from(charged);
                    }
                }
                after = page.last().map(|t| t.idx);
                if !more {
                    break;
                }
            }
        }
        Ok(())
    }

    pub async fn run(mut self) -> Report {
        let outcome = async {
            for _ in 0..self.opts.steps {
                self.step().await?;
                self.report.steps += 1;
                self.check().await?;
            }
            self.quiet().await?;
            self.check_task_records().await
        }
        .await;
        self.report.virtual_ms = self.now() - T0;
        self.report.task_messages_sent = self.stack.queue.stats(QueueName::Tasks).sent;
        if let Err(v) = outcome {
            self.note(format!("VIOLATION: {v}"));
            self.report.violation = Some(v);
            self.report.trace = self.trace.iter().cloned().collect();
        }
        self.report
    }
}

/// A shard's counts stay whole, however late a start mark lands or whether it lands at all
/// (`adapters::held_starts`): each task is counted started or ended-before-start, never both;
/// only a started task ends as one; a shard whose tasks all ended counts each once.
fn counts_whole(sh: &ShardRecord) -> Result<(), String> {
    let ended = sh.counts().ended();
    let whole = sh.n_ended_unstarted <= ended
        && ended - sh.n_ended_unstarted <= sh.n_started
        && sh.n_started + sh.n_ended_unstarted <= sh.size
        && (ended < sh.size || sh.n_started + sh.n_ended_unstarted == sh.size);
    if whole {
        Ok(())
    } else {
        Err(format!(
            "the counts of shard {} of {} are not whole: {sh:?}",
            sh.shard, sh.batch_id
        ))
    }
}

/// The task a `Run` message is for, and the task version it was sent for.
fn run_target(body: &str) -> Option<((String, u32), Option<u64>)> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    if v["kind"] != "run" {
        return None;
    }
    let batch = v["batch_id"].as_str()?.to_string();
    let idx = u32::try_from(v["idx"].as_u64()?).ok()?;
    Some(((batch, idx), v["version"].as_u64()))
}

fn failures(r: aws_lambda_events::event::sqs::SqsBatchResponse) -> BTreeSet<String> {
    r.batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect()
}

/// Runs one seed.
pub async fn run(seed: u64, opts: Options) -> Report {
    Sim::new(seed, opts).await.run().await
}

/// The command that replays `seed` under `opts` with its step trace.
pub fn replay_command(seed: u64, opts: &Options) -> String {
    let d = Options::default();
    let mut cmd = format!("scripts/sim.sh --seed {seed}");
    if opts.steps != d.steps {
        cmd += &format!(" --steps {}", opts.steps);
    }
    if opts.crash_p != d.crash_p {
        cmd += &format!(" --crash {}", opts.crash_p);
    }
    if opts.veo_share != d.veo_share {
        cmd += &format!(" --veo {}", opts.veo_share);
    }
    if !opts.ignore.is_empty() {
        cmd += &format!(" --ignore {}", opts.ignore.join(","));
    }
    cmd + " --verbose"
}
