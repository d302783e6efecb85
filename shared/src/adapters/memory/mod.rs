//! The in-memory twins of every port, with the semantics of the DynamoDB / SQS / S3
//! adapters: conditional writes and all-or-nothing transactions (one lock around the whole
//! state, every condition checked before anything changes), strongly consistent reads where
//! the real store gives them, and eventually consistent reads where it does not (global
//! indexes) with a switch that serves them stale. The contract suite
//! (`tests/src/contract`) runs the same cases against both implementations.
//!
//! Use cases run over these in unit tests and in the simulator, in milliseconds and with
//! time and chance under control.

mod access;
mod billing;
mod blobs;
mod money;
mod pipeline;
mod queue;
mod sealer;
mod sla;
mod webhooks;

pub use blobs::MemoryBlobs;
pub use queue::{MemoryQueue, QueueChaos, QueueStats};
pub use sealer::MemorySealer;

use crate::config::Settings;
use crate::ports::records::{
    AccountRecord, ApiKeyRecord, BatchRecord, DeliveryRecord, EndpointRecord, EventRecord,
    ExportRecord, FileRecord, LedgerRecord, RequestRecord, ShardRecord, TaskRecord, UsageRecord,
};
use crate::ports::store::ModelSetting;
use crate::ports::{Clock, PageToken, PortResult, Ports, Random, Slice, StoreError, WebhookSender};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Items per page of an oldest-first read (as the DynamoDB adapter).
const PAGE_ITEMS: usize = 1_000;
/// Pages read for one filtered list answer (as the DynamoDB adapter).
const MAX_PAGES_PER_CALL: usize = 20;

/// One table: its items by key, and for eventually consistent reads the items as they were
/// before the writes a replica has not seen yet.
#[derive(Clone, Debug)]
pub(crate) struct Table<K: Ord + Clone, V: Clone> {
    items: BTreeMap<K, V>,
    /// Key -> the item before the first write the replica missed (`None`: it did not exist).
    behind: BTreeMap<K, Option<V>>,
}

impl<K: Ord + Clone, V: Clone> Default for Table<K, V> {
    fn default() -> Self {
        Table {
            items: BTreeMap::new(),
            behind: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone, V: Clone> Table<K, V> {
    pub(crate) fn get(&self, k: &K) -> Option<&V> {
        self.items.get(k)
    }

    pub(crate) fn contains(&self, k: &K) -> bool {
        self.items.contains_key(k)
    }

    fn remember(&mut self, k: &K) {
        if !self.behind.contains_key(k) {
            let before = self.items.get(k).cloned();
            self.behind.insert(k.clone(), before);
        }
    }

    pub(crate) fn put(&mut self, k: K, v: V) {
        self.remember(&k);
        self.items.insert(k, v);
    }

    pub(crate) fn remove(&mut self, k: &K) -> Option<V> {
        self.remember(k);
        self.items.remove(k)
    }

    /// Changes an existing item in place; `None` when it does not exist.
    pub(crate) fn update<R>(&mut self, k: &K, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        if !self.items.contains_key(k) {
            return None;
        }
        self.remember(k);
        self.items.get_mut(k).map(f)
    }

    pub(crate) fn range<'a>(
        &'a self,
        r: impl RangeBounds<K> + 'a,
    ) -> impl DoubleEndedIterator<Item = (&'a K, &'a V)> + 'a {
        self.items.range(r)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.items.values()
    }

    /// The items as an eventually consistent reader may see them: when `stale`, without the
    /// writes the replica has not caught up with.
    pub(crate) fn view(&self, stale: bool) -> BTreeMap<K, V> {
        let mut out = self.items.clone();
        if stale {
            for (k, before) in &self.behind {
                match before {
                    Some(v) => out.insert(k.clone(), v.clone()),
                    None => out.remove(k),
                };
            }
        }
        out
    }

    fn catch_up(&mut self) {
        self.behind.clear();
    }
}

type Key2 = (String, String);

/// Everything the twins store, behind one lock.
#[derive(Default)]
pub(crate) struct State {
    pub accounts: Table<String, AccountRecord>,
    pub ledger: Table<(String, u64), LedgerRecord>,
    pub batches: Table<Key2, BatchRecord>,
    pub tasks: Table<(String, u32), TaskRecord>,
    pub progress: Table<(String, u32), ShardRecord>,
    pub requests: Table<Key2, RequestRecord>,
    pub files: Table<Key2, FileRecord>,
    pub models: Table<String, ModelSetting>,
    pub keys: Table<String, ApiKeyRecord>,
    pub sessions: Table<String, crate::ports::records::SessionRecord>,
    pub windows: Table<String, access::Window>,
    pub blocks: Table<String, access::Block>,
    pub exemptions: crate::ports::access::Exemptions,
    /// Shares by pool: slot -> (holder, lease until).
    pub shares: std::collections::HashMap<String, std::collections::BTreeMap<u32, (String, i64)>>,
    pub usage: Table<Key2, UsageRecord>,
    pub endpoints: Table<Key2, EndpointRecord>,
    pub events: Table<Key2, EventRecord>,
    pub deliveries: Table<Key2, DeliveryRecord>,
    pub exports: Table<Key2, ExportRecord>,
    pub sla_months: BTreeMap<Key2, crate::ports::sla::SlaMonth>,
    pub probes: BTreeMap<String, sla::Probes>,
    pub incidents: sla::Incidents,
    pub sla_closes: Table<Key2, crate::ports::sla::SlaCloseRecord>,
    /// (account, number) -> document.
    pub invoices: Table<Key2, crate::ports::billing::InvoiceRecord>,
    /// (series prefix, year) -> the last number taken.
    pub counters: Table<(String, i32), u64>,
    /// payment intent -> card payment.
    pub payments: Table<String, crate::ports::billing::PaymentRecord>,
}

impl State {
    fn catch_up(&mut self) {
        self.accounts.catch_up();
        self.ledger.catch_up();
        self.batches.catch_up();
        self.tasks.catch_up();
        self.progress.catch_up();
        self.requests.catch_up();
        self.files.catch_up();
        self.models.catch_up();
        self.keys.catch_up();
        self.sessions.catch_up();
        self.windows.catch_up();
        self.blocks.catch_up();
        self.usage.catch_up();
        self.endpoints.catch_up();
        self.events.catch_up();
        self.deliveries.catch_up();
        self.exports.catch_up();
        self.sla_closes.catch_up();
        self.invoices.catch_up();
        self.counters.catch_up();
        self.payments.catch_up();
    }
}

/// The storage ports in memory. Cheap to clone (shares its state).
#[derive(Clone, Default)]
pub struct Memory {
    state: Arc<Mutex<State>>,
    /// Serve eventually consistent reads (global indexes) without the latest writes.
    stale_reads: Arc<AtomicBool>,
    /// Make every call a point where other work may run first (see [`Memory::interleave`]).
    interleave: Arc<AtomicBool>,
}

/// A future that is pending once: whoever polls the caller decides what runs in between.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// Yields once: the point where whoever polls the caller runs something else first (the
/// simulator makes every network call one).
pub async fn yield_once() {
    YieldOnce(false).await;
}

/// Yields once when `on`: the point between two calls where a real store lets other
/// clients' calls land.
pub(crate) async fn pause_if(on: &AtomicBool) {
    if on.load(Ordering::SeqCst) {
        yield_once().await;
    }
}

impl Memory {
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied write: every operation
        // checks all its conditions before it changes anything.
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// From now on, eventually consistent reads miss the writes made since the last
    /// [`Memory::catch_up`] (as a lagging index replica would).
    pub fn serve_stale_reads(&self, on: bool) {
        self.stale_reads.store(on, Ordering::SeqCst);
    }

    /// The replicas catch up: eventually consistent reads see everything written so far.
    pub fn catch_up(&self) {
        self.lock().catch_up();
    }

    pub(crate) fn stale(&self) -> bool {
        self.stale_reads.load(Ordering::SeqCst)
    }

    /// From now on every call yields once before it runs, so concurrent callers interleave
    /// at every call (the simulator picks which runs next; a call never yields inside).
    pub fn interleave(&self, on: bool) {
        self.interleave.store(on, Ordering::SeqCst);
    }

    pub(crate) async fn pause(&self) {
        pause_if(&self.interleave).await;
    }

    /// Every port in memory: this store, a queue and blob storage on the same clock, and
    /// the given webhook sender.
    pub fn ports(
        &self,
        queue: Arc<MemoryQueue>,
        blobs: Arc<MemoryBlobs>,
        sender: Arc<dyn WebhookSender>,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
        settings: Settings,
    ) -> Ports {
        // Each store has its own key: a value sealed by one in-memory world opens in no other.
        let key = crate::ports::time::random_bytes::<32>(random.as_ref());
        let sealer = Arc::new(crate::adapters::sealing::Remembered::new(Arc::new(
            MemorySealer::new(key),
        )));
        Ports::from_store(
            Arc::new(self.clone()),
            queue,
            blobs,
            sender,
            sealer,
            clock,
            random,
            settings,
        )
    }
}

/// A page token for the in-memory tables: the last key read, as JSON.
pub(crate) fn token<K: Serialize>(k: &K) -> PortResult<PageToken> {
    serde_json::to_string(k)
        .map(PageToken)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn untoken<K: DeserializeOwned>(t: &PageToken) -> PortResult<K> {
    serde_json::from_str(&t.0).map_err(|_| StoreError::Corrupt("page token".into()))
}

/// One oldest-first page of `items` (already in order and filtered to the partition),
/// resuming after the key in `after`.
pub(crate) fn slice<K, V>(
    items: impl Iterator<Item = (K, V)>,
    after: Option<PageToken>,
) -> PortResult<Slice<V>>
where
    K: Ord + Serialize + DeserializeOwned + Clone,
{
    let after: Option<K> = after.as_ref().map(untoken).transpose()?;
    let mut out = Vec::new();
    let mut last = None;
    let mut more = false;
    for (k, v) in items {
        if after.as_ref().is_some_and(|a| &k <= a) {
            continue;
        }
        if out.len() == PAGE_ITEMS {
            more = true;
            break;
        }
        last = Some(k);
        out.push(v);
    }
    Ok(Slice {
        items: out,
        next: match (more, last) {
            (true, Some(k)) => Some(token(&k)?),
            _ => None,
        },
    })
}

/// A list answer from items already in answer order and filtered: up to `limit`, and
/// whether more follow. Like the DynamoDB adapter, a filter only sees the items of at most
/// [`MAX_PAGES_PER_CALL`] pages of `limit + 1` items.
pub(crate) fn listed<V>(items: impl Iterator<Item = (bool, V)>, limit: usize) -> (Vec<V>, bool) {
    let budget = MAX_PAGES_PER_CALL.saturating_mul(limit + 1);
    let mut out = Vec::new();
    for (seen, (matches, v)) in items.enumerate() {
        if seen == budget {
            return (out, true);
        }
        if !matches {
            continue;
        }
        if out.len() == limit {
            return (out, true);
        }
        out.push(v);
    }
    (out, false)
}

/// Every key of one partition of a table keyed `(partition, sort)` by strings.
pub(crate) fn partition(p: &str) -> std::ops::RangeInclusive<(String, String)> {
    (p.to_string(), String::new())..=(p.to_string(), char::MAX.to_string())
}

pub(crate) fn refused(op: &'static str, detail: impl Into<String>) -> StoreError {
    StoreError::Refused {
        op,
        detail: detail.into(),
    }
}
