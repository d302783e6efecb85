//! A world for use-case tests: every port in memory, a manual clock, seeded randomness, the
//! simulated provider, and a pump that hands queued messages to the same use-case handlers
//! the functions run. No network, no emulator: a test runs in milliseconds.

use shared::adapters::clock::{ManualClock, SeededRandom};
use shared::adapters::memory::{Memory, MemoryBlobs, MemoryQueue};
use shared::adapters::providers::simulated::Simulated;
use shared::config::Settings;
use shared::domain::account::{AccountTerms, Plan};
use shared::domain::batch::BatchStatus;
use shared::domain::idempotency::fingerprint;
use shared::domain::ledger::Tally;
use shared::domain::money::Credits;
use shared::domain::pricing::Model;
use shared::ports::provider::{Route, Routes};
use shared::ports::queue::QueueName;
use shared::ports::records::{AccountRecord, ApiKeyRecord, BatchRecord};
use shared::ports::webhooks::PostOutcome;
use shared::ports::{Clock, Faults, Queue, TimeRange, WebhookSender};
use shared::service::auth::Caller;
use shared::service::pipeline::{settle, worker, Pipeline};
use shared::service::{Reply, Services};
use std::sync::{Arc, Mutex};

/// A webhook sender that records what it was asked to send and answers 200.
#[derive(Default)]
pub struct Recorder(pub Mutex<Vec<String>>);

#[async_trait::async_trait]
impl WebhookSender for Recorder {
    async fn post(&self, url: &str, _headers: &[(&str, String)], _body: Vec<u8>) -> PostOutcome {
        if let Ok(mut v) = self.0.lock() {
            v.push(url.to_string());
        }
        PostOutcome::answered(200)
    }

    async fn check_public_name(&self, _host: &str, _port: Option<u16>) -> Result<(), String> {
        Ok(())
    }
}

pub struct World {
    pub svc: Services,
    pub p: Pipeline,
    pub clock: ManualClock,
    pub queue: Arc<MemoryQueue>,
    pub blobs: Arc<MemoryBlobs>,
}

/// A provider that always succeeds after its latency.
pub fn steady() -> Simulated {
    Simulated {
        latency_ms: 3_000,
        fail_rate: 0.0,
        reject_rate: 0.0,
        throttle_rate: 0.0,
        ..Default::default()
    }
}

impl World {
    pub fn new(sim: Simulated) -> World {
        Self::with_faults(sim, Faults::none())
    }

    pub fn with_faults(sim: Simulated, faults: Faults) -> World {
        let clock = ManualClock::starting_at(1_780_000_000_000).with_sleeps_advancing();
        let memory = Memory::new();
        let queue = Arc::new(MemoryQueue::new(Arc::new(clock.clone()), true));
        let blobs = Arc::new(MemoryBlobs::default());
        let settings = Settings {
            ..Default::default()
        };
        let mut ports = memory.ports(
            queue.clone(),
            blobs.clone(),
            Arc::new(Recorder::default()),
            Arc::new(clock.clone()),
            Arc::new(SeededRandom::new(7)),
            settings,
        );
        ports.faults = faults;
        let svc = Services::new(ports);
        let provider: Arc<dyn shared::ports::Provider> = Arc::new(sim);
        let routes = Model::ALL
            .into_iter()
            .map(|m| {
                (
                    m,
                    Route {
                        provider: provider.clone(),
                        provider_model: m.as_str().to_string(),
                    },
                )
            })
            .collect();
        let p = Pipeline {
            svc: svc.clone(),
            providers: Routes { routes },
        };
        World {
            svc,
            p,
            clock,
            queue,
            blobs,
        }
    }

    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// A pay-as-you-go account with `credits` granted; and a caller with an admin key on it.
    pub async fn account(&self, credits: i64, max_concurrency: u32) -> Caller {
        let terms =
            AccountTerms::new("Acme Films", Plan::Payg, 90, max_concurrency, None).expect("terms");
        let body = serde_json::json!({ "name": "Acme Films", "n": self.now() });
        let rid = format!("acct-{}", self.svc.random.up_to(u32::MAX as u64));
        let r =
            shared::service::accounts::create_account(&self.svc, &rid, terms, &fingerprint(&body))
                .await
                .expect("account");
        let id = serde_json::from_str::<serde_json::Value>(&r.body).expect("json")["id"]
            .as_str()
            .expect("id")
            .to_string();
        if credits > 0 {
            self.grant(&id, credits).await;
        }
        self.caller(&id).await
    }

    pub async fn caller(&self, account_id: &str) -> Caller {
        let account = self.read_account(account_id).await;
        let key = ApiKeyRecord {
            key_hash: format!("{:064}", 1),
            key_id: "key_test".into(),
            account_id: account_id.to_string(),
            name: "t".into(),
            prefix: "vgk_x".into(),
            last4: "abcd".into(),
            enabled: true,
            created_ms: self.now(),
            scopes: vec!["admin".into()],
            rate_limit_per_min: None,
            ip_allowlist: vec![],
            expires_ms: None,
            revoked_ms: None,
            disabled_reason: None,
            throttle: None,
            updated_ms: self.now(),
        };
        Caller {
            account,
            key_id: key.key_id.clone(),
            key,
        }
    }

    pub async fn grant(&self, account_id: &str, amount: i64) -> Reply {
        let body = serde_json::json!({ "amount": amount, "t": self.now(), "r": self.svc.random.up_to(1 << 40) });
        let req = shared::service::credits::GrantRequest {
            request_id: format!("g-{}", body["r"]),
            pack: None,
            amount: Some(amount),
            reason: "test credit".into(),
        };
        shared::service::credits::grant(&self.svc, account_id, req, &fingerprint(&body), "tests")
            .await
            .expect("grant")
    }

    pub async fn read_account(&self, id: &str) -> AccountRecord {
        self.svc
            .accounts
            .get(id)
            .await
            .expect("read")
            .expect("account")
    }

    pub async fn batch(&self, account_id: &str, batch_id: &str) -> BatchRecord {
        self.svc
            .batches
            .get(account_id, batch_id)
            .await
            .expect("read")
            .expect("batch")
    }

    /// Submits a batch of `n` sora-2 tasks; the reply.
    pub async fn submit(
        &self,
        caller: &Caller,
        request_id: &str,
        n: usize,
    ) -> Result<Reply, shared::service::ServiceError> {
        let tasks: Vec<serde_json::Value> = (0..n)
            .map(|i| serde_json::json!({ "prompt": format!("a lighthouse, take {i}") }))
            .collect();
        let body =
            serde_json::json!({ "request_id": request_id, "model": "sora-2", "tasks": tasks });
        let req: shared::service::batches::SubmitBatch =
            serde_json::from_value(body.clone()).expect("request");
        shared::service::batches::submit(&self.svc, caller, req, &fingerprint(&body)).await
    }

    /// Hands every visible message to its handler until none is left at the current time;
    /// a failed message becomes visible again at once. Returns how many were handled.
    pub async fn drain(&self) -> usize {
        let mut total = 0;
        for _ in 0..10_000 {
            let mut handled = 0;
            for q in [
                QueueName::Tasks,
                QueueName::Settle,
                QueueName::Events,
                QueueName::Exports,
            ] {
                for m in self.queue.receive(q, 0).await.expect("receive") {
                    handled += 1;
                    let ok = match q {
                        QueueName::Tasks => {
                            worker::handle(&self.p, decode(&m.body), m.receive_count)
                                .await
                                .is_ok()
                        }
                        QueueName::Settle => settle::handle(&self.p, decode(&m.body)).await.is_ok(),
                        QueueName::Events => {
                            shared::service::webhooks::dispatch::handle(&self.svc, decode(&m.body))
                                .await
                                .is_ok()
                        }
                        _ => {
                            let x: shared::service::exports::ExportMessage = decode(&m.body);
                            shared::service::exports::run(&self.svc, &x.account_id, &x.export_id)
                                .await
                                .is_ok()
                        }
                    };
                    if ok {
                        self.queue
                            .delete(q, std::slice::from_ref(&m.receipt))
                            .await
                            .expect("delete");
                    } else {
                        self.queue.release(q, &m.receipt, 0).await.expect("release");
                    }
                }
            }
            if handled == 0 {
                return total;
            }
            total += handled;
        }
        panic!("the queues did not go idle");
    }

    /// Moves time in `step_ms` steps, draining at each, until the batch settles.
    pub async fn settle(&self, account_id: &str, batch_id: &str, step_ms: i64, max_ms: i64) {
        let mut elapsed = 0;
        loop {
            self.drain().await;
            if self.batch(account_id, batch_id).await.status == BatchStatus::Completed {
                return;
            }
            assert!(elapsed < max_ms, "{batch_id} did not settle in {max_ms} ms");
            self.clock.advance_ms(step_ms);
            elapsed += step_ms;
        }
    }

    /// Conservation, a gap-free ledger, `held` equal to the open holds, every refund in its
    /// batch's tally, every settled batch closed (DESIGN.md §3).
    pub async fn assert_invariants(&self, account_id: &str) {
        let a = self.read_account(account_id).await;
        let mut tally = Tally::from_start();
        let mut after = None;
        let (mut refunds, mut releases) = (Credits::ZERO, Credits::ZERO);
        loop {
            let page = self
                .svc
                .ledger
                .page(account_id, TimeRange::ALL, after.take())
                .await
                .expect("page");
            for e in &page.items {
                tally.add(e.seq, e.amount, e.balance_after).expect("sum");
                match e.kind {
                    shared::domain::ledger::EntryKind::Refund => refunds += e.amount,
                    shared::domain::ledger::EntryKind::Release => releases += e.amount,
                    _ => {}
                }
            }
            match page.next {
                Some(t) => after = Some(t),
                None => break,
            }
        }
        assert!(tally.is_clean(), "{:?}", tally.findings);
        assert_eq!(a.balance, tally.sum, "conservation");
        assert_eq!(a.ledger_seq, tally.count, "gap-free");
        assert!(a.balance >= Credits::ZERO);
        let (batches, _) = self
            .svc
            .batches
            .list(account_id, None, 200, None)
            .await
            .expect("batches");
        let open: Credits = batches
            .iter()
            .filter(|b| b.status != BatchStatus::Completed)
            .map(|b| b.credits.held - b.credits.refunded - b.credits.released)
            .sum();
        assert_eq!(a.held, open, "held == open holds");
        let tallied: Credits = batches.iter().map(|b| b.credits.refunded).sum();
        assert_eq!(refunds, tallied, "every refund in its batch's tally");
        let tallied: Credits = batches.iter().map(|b| b.credits.released).sum();
        assert_eq!(releases, tallied, "every release in its batch's tally");
        assert_eq!(a.lifetime_released, releases, "lifetime_released");
        for b in batches
            .iter()
            .filter(|b| b.status == BatchStatus::Completed)
        {
            let st = b.settlement.expect("settled");
            assert_eq!(
                st.held,
                st.charged + st.refunded + st.released,
                "closure of {}",
                b.batch_id
            );
        }
    }
}

pub fn decode<T: serde::de::DeserializeOwned>(body: &str) -> T {
    serde_json::from_str(body).expect("message")
}

pub fn body(r: &Reply) -> serde_json::Value {
    serde_json::from_str(&r.body).expect("json")
}

/// A fault hook that fires the first `times` times `point` is reached.
pub fn fail_at(point: &'static str, times: usize) -> Faults {
    let left = Arc::new(std::sync::atomic::AtomicUsize::new(times));
    Faults::new(move |p| {
        p == point
            && left
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |n| n.checked_sub(1),
                )
                .is_ok()
    })
}
