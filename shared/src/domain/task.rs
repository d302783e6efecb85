//! The task pipeline's rules: outcomes and who pays for them, deadlines, retry timing, the
//! dispatch window, progress shards and the settlement arithmetic. Pure; the worker, the
//! sweeper and settlement apply them.

use super::batch::{TaskCounts, TaskStatus};
use super::money::Credits;
use super::pricing::Model;
use serde::{Deserialize, Serialize};

/// How a task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    /// Provider or model failure, invalid output, our own error after retries.
    Failed,
    /// The provider refused the content as violating its policy (contract 2.2: charged).
    Rejected,
    /// Past the model's deadline (contract 3.2: failed and refunded).
    TimedOut,
    /// The customer cancelled after the task reached a provider (contract 2.2: charged).
    Cancelled,
    /// The customer cancelled before the task reached a provider: its unit is released
    /// (docs/CONTRACT.md, our reading of 2.2). Its status is `cancelled`.
    Released,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Succeeded,
        Outcome::Failed,
        Outcome::Rejected,
        Outcome::TimedOut,
        Outcome::Cancelled,
        Outcome::Released,
    ];

    /// Contract 1.1 / 2.1 / 2.2 / 3.2: failures and time-outs are refunded; successes,
    /// policy rejections and cancellations of started work are charged.
    pub fn refunded(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::TimedOut)
    }

    /// A cancel that landed before the task reached a provider: given back, not charged.
    pub fn released(self) -> bool {
        self == Outcome::Released
    }

    /// Whether the task's unit is charged at settlement.
    pub fn charged(self) -> bool {
        !self.refunded() && !self.released()
    }

    /// How a cancel ends a task: released when no provider job exists for it, charged
    /// once one does (the provider is already doing the work).
    pub fn of_cancel(reached_provider: bool) -> Self {
        if reached_provider {
            Outcome::Cancelled
        } else {
            Outcome::Released
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Rejected => "rejected",
            Outcome::TimedOut => "timed_out",
            Outcome::Cancelled => "cancelled",
            Outcome::Released => "released",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }

    pub fn status(self) -> TaskStatus {
        match self {
            Outcome::Succeeded => TaskStatus::Succeeded,
            Outcome::Failed => TaskStatus::Failed,
            Outcome::Rejected => TaskStatus::Rejected,
            Outcome::TimedOut => TaskStatus::TimedOut,
            Outcome::Cancelled | Outcome::Released => TaskStatus::Cancelled,
        }
    }
}

impl TaskStatus {
    pub fn is_terminal(self) -> bool {
        !matches!(self, TaskStatus::Queued | TaskStatus::Running)
    }
}

/// The longest error message a customer sees on a task.
pub const CUSTOMER_MESSAGE_CHARS: usize = 300;

/// A provider's error text as a customer may see it. Providers put their own identifiers in
/// error bodies (cloud project ids and numbers, resource paths, service-account addresses,
/// console links); those are ours, not the customer's, and stay in our logs. What remains
/// (the provider's words, our codes) is kept, so a policy rejection still says why.
pub fn customer_message(raw: &str) -> String {
    let scrubbed: Vec<String> = raw.split_whitespace().map(scrub_word).collect();
    let text = scrubbed.join(" ");
    match text.char_indices().nth(CUSTOMER_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn scrub_word(word: &str) -> String {
    if word.contains("://") {
        return "[link removed]".into();
    }
    if word.contains('@') && word.contains('.') {
        return "[address removed]".into();
    }
    // Resource paths name our project: `projects/my-proj-123/locations/...`.
    if let Some(at) = word.find("projects/") {
        return format!("{}projects/[removed]", &word[..at]);
    }
    // Project numbers and other long identifiers: six digits or more in a row.
    let mut out = String::with_capacity(word.len());
    let mut digits = String::new();
    for c in word.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        if digits.len() >= 6 {
            out.push_str("[number removed]");
        } else {
            out.push_str(&digits);
        }
        digits.clear();
        if c != ' ' {
            out.push(c);
        }
    }
    out
}

/// Hard deadlines, chosen against the SLA (contract 3.2: p95 `sora-2` <= 2 min, `veo-pro` <=
/// 10 min): five and three times the p95 target, so a healthy provider's tail is never cut,
/// and a stuck job is refunded well within the hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    pub sora_2_ms: i64,
    pub veo_pro_ms: i64,
    /// How long a task may wait for a concurrency slot before it times out (refunded).
    pub queue_ms: i64,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            sora_2_ms: 10 * 60_000,
            veo_pro_ms: 30 * 60_000,
            queue_ms: 24 * 3_600_000,
        }
    }
}

impl Deadlines {
    pub fn run_ms(&self, model: Model) -> i64 {
        match model {
            Model::Sora2 => self.sora_2_ms,
            Model::VeoPro => self.veo_pro_ms,
        }
    }
}

/// Delay before retrying a provider call after a 429/5xx/timeout: exponential from 2 s with
/// full jitter, capped at 60 s, and never shorter than the provider's `Retry-After` (itself
/// capped at 5 min). `None` when the retry would land past the deadline: the task fails.
pub fn retry_delay_secs(
    attempt: u32,
    retry_after_secs: Option<u64>,
    jitter: f64,
    remaining_ms: i64,
) -> Option<u64> {
    let exp = 2u64.saturating_mul(1u64 << attempt.min(5)).min(60);
    let jittered = ((exp as f64) * jitter.clamp(0.0, 1.0)).ceil() as u64;
    let delay = jittered.max(1).max(retry_after_secs.unwrap_or(0).min(300));
    (i64::try_from(delay * 1_000).unwrap_or(i64::MAX) < remaining_ms).then_some(delay)
}

/// How many of a batch's tasks are in flight at once: the account's concurrency. The task
/// that ends frees its slot before it dispatches the next, so the next one finds a slot at
/// once; a wider window would only leave tasks on the queue asking for slots again and
/// again (each ask a paid read).
pub fn dispatch_window(max_concurrency: u32, total: u32) -> u32 {
    max_concurrency.clamp(1, 1_000).min(total)
}

/// How long to wait before polling a running job again: the model's interval at first, then
/// a twentieth of the time the job has been running, at most a minute. Each poll is a read
/// and a message, so a 30-minute job costs 83 polls instead of 360 (sora-2; veo-pro 68
/// instead of 180), and its end is still seen within 5 % of its run time (the first
/// 100–200 s at the model's pace).
pub fn poll_interval_secs(model: Model, running_ms: i64) -> u64 {
    let base = match model {
        Model::Sora2 => 5,
        Model::VeoPro => 10,
    };
    let grown = u64::try_from(running_ms.max(0) / 20_000).unwrap_or(u64::MAX);
    grown.clamp(base, 60)
}

/// Progress is kept in shards of this many tasks (one small item each). Every start and end
/// writes its shard, and a write costs one unit per KB of the item: at 64 tasks a full shard
/// stays near one KB (at 256 it grew to five, and the last ends of a shard cost five units
/// each). Fewer, larger shards would only make the batch-wide query, run when a shard
/// completes, read fewer items of the same total size.
pub const SHARD_SIZE: u32 = 64;

pub fn shard_of(idx: u32) -> u32 {
    idx / SHARD_SIZE
}

/// The one shard every index is in: `None` if they span shards, repeat an index, or there
/// are none.
pub fn one_shard(idxs: &[u32]) -> Option<u32> {
    let first = shard_of(*idxs.first()?);
    let distinct = idxs.iter().collect::<std::collections::BTreeSet<_>>().len() == idxs.len();
    (distinct && idxs.iter().all(|i| shard_of(*i) == first)).then_some(first)
}

pub fn shard_count(total: u32) -> u32 {
    total.div_ceil(SHARD_SIZE)
}

pub fn shard_len(total: u32, shard: u32) -> u32 {
    total.saturating_sub(shard * SHARD_SIZE).min(SHARD_SIZE)
}

/// What a shard records, in counts: started, and ended per outcome (split by whether the
/// task had started, so queued and running can be told apart).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardCounts {
    pub size: u32,
    pub started: u32,
    pub ended_unstarted: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub rejected: u32,
    pub timed_out: u32,
    pub cancelled: u32,
    pub released: u32,
}

impl ShardCounts {
    pub fn ended(&self) -> u32 {
        let outcomes = [
            self.succeeded,
            self.failed,
            self.rejected,
            self.timed_out,
            self.cancelled,
            self.released,
        ];
        outcomes.iter().sum()
    }
}

/// Sums shards into the per-status counts customers see.
pub fn task_counts(shards: &[ShardCounts]) -> TaskCounts {
    let mut c = TaskCounts::default();
    for s in shards {
        let ended = s.ended();
        c.total += s.size;
        c.queued += s.size.saturating_sub(s.started + s.ended_unstarted);
        c.running += s
            .started
            .saturating_sub(ended.saturating_sub(s.ended_unstarted));
        c.succeeded += s.succeeded;
        c.failed += s.failed;
        c.rejected += s.rejected;
        c.timed_out += s.timed_out;
        c.cancelled += s.cancelled;
        c.released += s.released;
    }
    c
}

pub fn all_ended(c: &TaskCounts) -> bool {
    c.ended() == c.total
}

/// A batch's settlement record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    pub held: Credits,
    pub charged: Credits,
    pub refunded: Credits,
    /// Units of tasks cancelled before they reached a provider.
    #[serde(default)]
    pub released: Credits,
    pub counts: TaskCounts,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClosureError {
    #[error("{0} tasks are not terminal yet")]
    Unfinished(u32),
    #[error("held {held} != charged {charged} + refunded {refunded} + released {released}")]
    Mismatch {
        held: Credits,
        charged: Credits,
        refunded: Credits,
        released: Credits,
    },
}

/// What a batch's refund and release entries moved, by its own tallies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GivenBack {
    pub refunded: Credits,
    pub released: Credits,
}

/// DESIGN.md §3.2 with the cancel rule: `hold == charged + refunded + released`, `charged ==
/// unit x (succeeded + rejected + cancelled)`. `given_back` is what refund and release
/// entries actually moved; they must equal `unit x (failed + timed_out)` and `unit x
/// released`.
pub fn settle(
    unit: Credits,
    held: Credits,
    counts: TaskCounts,
    given_back: GivenBack,
) -> Result<Settlement, ClosureError> {
    if !all_ended(&counts) {
        return Err(ClosureError::Unfinished(counts.total - counts.ended()));
    }
    let units = |n: u32| Credits(unit.value() * i64::from(n));
    let charged = units(counts.succeeded + counts.rejected + counts.cancelled);
    let GivenBack { refunded, released } = given_back;
    if units(counts.failed + counts.timed_out) != refunded
        || units(counts.released) != released
        || charged.value() + refunded.value() + released.value() != held.value()
    {
        return Err(ClosureError::Mismatch {
            held,
            charged,
            refunded,
            released,
        });
    }
    Ok(Settlement {
        held,
        charged,
        refunded,
        released,
        counts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_pays_follows_the_contract() {
        let refunded: Vec<_> = Outcome::ALL.into_iter().filter(|o| o.refunded()).collect();
        assert_eq!(refunded, vec![Outcome::Failed, Outcome::TimedOut]);
        let charged: Vec<_> = Outcome::ALL.into_iter().filter(|o| o.charged()).collect();
        assert_eq!(
            charged,
            vec![Outcome::Succeeded, Outcome::Rejected, Outcome::Cancelled]
        );
        assert_eq!(Outcome::of_cancel(false), Outcome::Released);
        assert_eq!(Outcome::Released.status(), TaskStatus::Cancelled);
        assert_eq!(Outcome::parse("timed_out"), Some(Outcome::TimedOut));
    }

    #[test]
    fn provider_identifiers_never_reach_customers() {
        let raw = "Quota exceeded for aiplatform.googleapis.com/generate in projects/acme-vid-prod/locations/us-central1 \
                   (project number 123456789012); see https://console.cloud.google.com/iam?project=acme \
                   or ask ops@acme-internal.com. Code 429, retry in 30 s.";
        let shown = customer_message(raw);
        for secret in ["acme-vid-prod", "123456789012", "console.cloud", "ops@acme"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.starts_with("Quota exceeded for"), "{shown}");
        assert!(shown.contains("Code 429, retry in 30 s."), "{shown}");
        assert_eq!(
            customer_message("The prompt was blocked by the safety filter."),
            "The prompt was blocked by the safety filter."
        );
        let long = "word ".repeat(200);
        assert_eq!(
            customer_message(&long).chars().count(),
            CUSTOMER_MESSAGE_CHARS + 1
        );
    }

    #[test]
    fn settlement_closes_or_says_why_not() {
        let counts = TaskCounts {
            total: 10,
            succeeded: 6,
            failed: 2,
            rejected: 1,
            cancelled: 1,
            ..Default::default()
        };
        let back = |refunded, released| GivenBack {
            refunded: Credits(refunded),
            released: Credits(released),
        };
        let s = settle(Credits(49), Credits(490), counts, back(98, 0));
        assert_eq!(
            s.map(|s| (s.charged, s.refunded)),
            Ok((Credits(392), Credits(98)))
        );
        assert!(matches!(
            settle(Credits(49), Credits(490), counts, back(49, 0)),
            Err(ClosureError::Mismatch { .. })
        ));
        // Two of the ten cancelled before reaching a provider: released, not charged.
        let with_release = TaskCounts {
            succeeded: 5,
            released: 2,
            cancelled: 0,
            ..counts
        };
        assert_eq!(
            settle(Credits(49), Credits(490), with_release, back(98, 98))
                .map(|s| (s.charged, s.released)),
            Ok((Credits(294), Credits(98)))
        );
        assert!(matches!(
            settle(Credits(49), Credits(490), with_release, back(98, 49)),
            Err(ClosureError::Mismatch { .. })
        ));
        let open = TaskCounts {
            total: 10,
            succeeded: 9,
            ..Default::default()
        };
        assert_eq!(
            settle(Credits(49), Credits(490), open, GivenBack::default()),
            Err(ClosureError::Unfinished(1))
        );
    }

    #[test]
    fn shards_cover_the_batch() {
        assert_eq!(shard_count(10_000), 157);
        assert_eq!(shard_len(10_000, 156), 10_000 - 156 * 64);
        assert_eq!(shard_len(10, 0), 10);
        assert_eq!(shard_of(63), 0);
        assert_eq!(shard_of(64), 1);
        let s = ShardCounts {
            size: 10,
            started: 4,
            ended_unstarted: 1,
            succeeded: 2,
            cancelled: 1,
            ..Default::default()
        };
        let c = task_counts(&[s]);
        // 10 tasks: 4 started (2 succeeded, 2 running), 1 cancelled before starting, 5 queued.
        assert_eq!(
            (c.queued, c.running, c.succeeded, c.cancelled),
            (5, 2, 2, 1)
        );
    }

    #[test]
    fn retries_back_off_honour_retry_after_and_stop_at_the_deadline() {
        assert_eq!(retry_delay_secs(0, None, 1.0, 60_000), Some(2));
        assert_eq!(retry_delay_secs(10, None, 1.0, 600_000), Some(60));
        assert_eq!(retry_delay_secs(0, Some(30), 0.1, 600_000), Some(30));
        assert_eq!(retry_delay_secs(0, Some(3_600), 0.1, 600_000), Some(300));
        assert_eq!(retry_delay_secs(3, Some(30), 1.0, 20_000), None);
    }

    #[test]
    fn polls_slow_down_as_a_job_runs_long() {
        assert_eq!(poll_interval_secs(Model::Sora2, 0), 5);
        assert_eq!(poll_interval_secs(Model::Sora2, 60_000), 5);
        assert_eq!(poll_interval_secs(Model::VeoPro, 60_000), 10);
        assert_eq!(poll_interval_secs(Model::Sora2, 400_000), 20);
        assert_eq!(poll_interval_secs(Model::VeoPro, 30 * 60_000), 60);
        assert_eq!(poll_interval_secs(Model::Sora2, -5), 5);
        // Polls over a 30-minute job, each wait from the time already run.
        let polls = |model| {
            let (mut t, mut n) = (0i64, 0);
            while t < 30 * 60_000 {
                t += poll_interval_secs(model, t) as i64 * 1_000;
                n += 1;
            }
            n
        };
        assert!(polls(Model::Sora2) <= 85, "{}", polls(Model::Sora2));
        assert!(polls(Model::VeoPro) <= 70, "{}", polls(Model::VeoPro));
    }

    #[test]
    fn the_window_is_the_concurrency() {
        assert_eq!(dispatch_window(8, 10_000), 8);
        assert_eq!(dispatch_window(8, 5), 5);
        assert_eq!(dispatch_window(0, 10), 1);
    }
}
