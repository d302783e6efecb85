//! The queue in memory, with SQS's semantics: at-least-once delivery, delays, a visibility
//! timeout per queue, and redrive to the dead-letter queue after `maxReceiveCount` receives
//! (the numbers are the template's).

use crate::ports::queue::{QueueName, Received, MAX_DELAY_SECS};
use crate::ports::{Clock, PortResult, Queue};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// (visibility timeout in seconds, receives before the dead-letter queue, that queue).
fn settings(q: QueueName) -> (i64, u32, Option<QueueName>) {
    match q {
        QueueName::Tasks => (360, 5, Some(QueueName::TasksDlq)),
        QueueName::Settle => (180, 5, Some(QueueName::SettleDlq)),
        QueueName::Events => (180, 10, None),
        QueueName::Exports => (960, 3, None),
        QueueName::TasksDlq | QueueName::SettleDlq => (30, u32::MAX, None),
    }
}

#[derive(Clone, Debug)]
struct Message {
    id: u64,
    body: String,
    visible_at_ms: i64,
    receives: u32,
    receipt: Option<String>,
}

/// What went through each queue (the simulator's cost and liveness bounds read these).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub sent: u64,
    pub received: u64,
    pub deleted: u64,
    /// Moved to the dead-letter queue, or dropped after `maxReceiveCount` where none exists.
    pub dead: u64,
}

#[derive(Default)]
struct Queues {
    messages: BTreeMap<QueueName, Vec<Message>>,
    stats: BTreeMap<QueueName, QueueStats>,
    next_id: u64,
}

/// What a real queue does to order and timing, drawn from a seeded source: visible messages
/// are handed out in any order, and some sends arrive late.
#[derive(Clone)]
pub struct QueueChaos {
    pub random: Arc<dyn crate::ports::Random>,
    /// Chance that a send is delayed by up to `max_extra_delay_ms` more.
    pub delay_p: f64,
    pub max_extra_delay_ms: u64,
}

pub struct MemoryQueue {
    inner: Mutex<Queues>,
    clock: Arc<dyn Clock>,
    /// Honour delays (as SQS `DelaySeconds`); off where the test pump parks early messages.
    delays: bool,
    interleave: AtomicBool,
    chaos: Mutex<Option<QueueChaos>>,
}

impl MemoryQueue {
    pub fn new(clock: Arc<dyn Clock>, delays: bool) -> Self {
        MemoryQueue {
            inner: Mutex::new(Queues::default()),
            clock,
            delays,
            interleave: AtomicBool::new(false),
            chaos: Mutex::new(None),
        }
    }

    /// Reorders and delays from now on (the simulator's queue).
    pub fn set_chaos(&self, chaos: Option<QueueChaos>) {
        if let Ok(mut c) = self.chaos.lock() {
            *c = chaos;
        }
    }

    fn chaos(&self) -> Option<QueueChaos> {
        self.chaos.lock().ok().and_then(|c| c.clone())
    }

    /// A received message's visibility runs out early, as SQS's may: it is handed out again
    /// while its first receiver still works on it (at-least-once delivery). `pick` chooses
    /// among the invisible messages; returns its body.
    pub fn expose(&self, q: QueueName, pick: u64) -> Option<String> {
        let now = self.clock.now_ms();
        let mut st = self.lock();
        let msgs = st.messages.get_mut(&q)?;
        let received: Vec<usize> = (0..msgs.len())
            .filter(|i| msgs[*i].receipt.is_some() && msgs[*i].visible_at_ms > now)
            .collect();
        if received.is_empty() {
            return None;
        }
        let i = received[(pick % received.len() as u64) as usize];
        msgs[i].visible_at_ms = now;
        Some(msgs[i].body.clone())
    }

    /// Every call yields once first (see `Memory::interleave`).
    pub fn interleave(&self, on: bool) {
        self.interleave.store(on, Ordering::SeqCst);
    }

    async fn pause(&self) {
        super::pause_if(&self.interleave).await;
    }

    fn lock(&self) -> MutexGuard<'_, Queues> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn stats(&self, q: QueueName) -> QueueStats {
        self.lock().stats.get(&q).cloned().unwrap_or_default()
    }

    /// Messages on the queue, visible or not.
    pub fn depth(&self, q: QueueName) -> usize {
        self.lock().messages.get(&q).map_or(0, Vec::len)
    }

    /// The bodies on the queue, visible or not, oldest first.
    pub fn bodies(&self, q: QueueName) -> Vec<String> {
        self.lock()
            .messages
            .get(&q)
            .map(|m| m.iter().map(|m| m.body.clone()).collect())
            .unwrap_or_default()
    }

    /// Visits the bodies waiting to be handed out (not held by a receiver right now).
    pub fn for_each_pending(&self, q: QueueName, mut f: impl FnMut(&str)) {
        let now = self.clock.now_ms();
        if let Some(msgs) = self.lock().messages.get(&q) {
            for m in msgs
                .iter()
                .filter(|m| m.receipt.is_none() || m.visible_at_ms <= now)
            {
                f(&m.body);
            }
        }
    }

    /// Drops every message of a queue (an outage that loses messages).
    pub fn purge(&self, q: QueueName) {
        self.lock().messages.remove(&q);
    }

    /// The earliest time a message of `q` becomes visible, if it holds any.
    pub fn next_visible_ms(&self, q: QueueName) -> Option<i64> {
        self.lock()
            .messages
            .get(&q)
            .and_then(|m| m.iter().map(|m| m.visible_at_ms).min())
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    fn has(&self, _q: QueueName) -> bool {
        true
    }

    async fn send(&self, q: QueueName, bodies: &[(String, u64)]) -> PortResult<()> {
        self.pause().await;
        let now = self.clock.now_ms();
        let chaos = self.chaos();
        let mut st = self.lock();
        for (body, delay) in bodies {
            st.next_id += 1;
            let mut delay_ms = if self.delays {
                (*delay).min(MAX_DELAY_SECS) as i64 * 1_000
            } else {
                0
            };
            if let Some(c) = &chaos {
                if c.random.unit() < c.delay_p {
                    delay_ms += c.random.up_to(c.max_extra_delay_ms) as i64;
                }
            }
            let m = Message {
                id: st.next_id,
                body: body.clone(),
                visible_at_ms: now + delay_ms,
                receives: 0,
                receipt: None,
            };
            st.messages.entry(q).or_default().push(m);
            st.stats.entry(q).or_default().sent += 1;
        }
        Ok(())
    }

    async fn receive(&self, q: QueueName, _wait_secs: i32) -> PortResult<Vec<Received>> {
        self.pause().await;
        let now = self.clock.now_ms();
        let (visibility_secs, max_receives, dlq) = settings(q);
        let chaos = self.chaos();
        let mut st = self.lock();
        let mut out = Vec::new();
        let mut dead = Vec::new();
        if let (Some(msgs), Some(c)) = (st.messages.get_mut(&q), &chaos) {
            // Any visible message may come first: rotate the list by a random amount.
            if !msgs.is_empty() {
                let k = c.random.up_to(msgs.len() as u64 - 1) as usize;
                msgs.rotate_left(k);
            }
        }
        if let Some(msgs) = st.messages.get_mut(&q) {
            let mut i = 0;
            while i < msgs.len() && out.len() < 10 {
                if msgs[i].visible_at_ms > now {
                    i += 1;
                    continue;
                }
                if msgs[i].receives >= max_receives {
                    dead.push(msgs.remove(i));
                    continue;
                }
                let m = &mut msgs[i];
                m.receives += 1;
                m.visible_at_ms = now + visibility_secs * 1_000;
                let receipt = format!("{}-{}", m.id, m.receives);
                m.receipt = Some(receipt.clone());
                out.push(Received {
                    receipt,
                    body: m.body.clone(),
                    receive_count: m.receives,
                });
                i += 1;
            }
        }
        st.stats.entry(q).or_default().received += out.len() as u64;
        st.stats.entry(q).or_default().dead += dead.len() as u64;
        if let Some(dlq) = dlq {
            for mut m in dead {
                m.receives = 0;
                m.receipt = None;
                m.visible_at_ms = now;
                st.messages.entry(dlq).or_default().push(m);
                st.stats.entry(dlq).or_default().sent += 1;
            }
        }
        Ok(out)
    }

    async fn delete(&self, q: QueueName, receipts: &[String]) -> PortResult<()> {
        self.pause().await;
        let mut st = self.lock();
        let mut deleted = 0;
        if let Some(msgs) = st.messages.get_mut(&q) {
            let before = msgs.len();
            msgs.retain(|m| !m.receipt.as_ref().is_some_and(|r| receipts.contains(r)));
            deleted = (before - msgs.len()) as u64;
        }
        st.stats.entry(q).or_default().deleted += deleted;
        Ok(())
    }

    async fn release(&self, q: QueueName, receipt: &str, secs: i32) -> PortResult<()> {
        self.pause().await;
        let now = self.clock.now_ms();
        let mut st = self.lock();
        if let Some(m) = st.messages.get_mut(&q).and_then(|msgs| {
            msgs.iter_mut()
                .find(|m| m.receipt.as_deref() == Some(receipt))
        }) {
            m.visible_at_ms = now + i64::from(secs.max(0)) * 1_000;
        }
        Ok(())
    }
}
