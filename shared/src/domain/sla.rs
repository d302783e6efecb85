//! Processing-time figures for contract 3.2 (sora-2: 95 % of tasks within 2 minutes; veo-pro:
//! 95 % within 10 minutes), kept as a histogram with bounded relative error so they cost one
//! atomic add per task end and no list of every task time.
//!
//! Buckets grow by [`GAMMA`]: bucket `i > 0` holds `(GAMMA^(i-1), GAMMA^i]` milliseconds,
//! bucket 0 holds `[0, 1]`. A bucket's figure is the point with equal relative distance to both
//! ends, `2 GAMMA^i / (GAMMA + 1)`, so it is within `(GAMMA - 1) / (GAMMA + 1)` of any value
//! in the bucket, relative to that value: [`RELATIVE_ERROR`], under 1 % (times under 1 ms count
//! as 1 ms). A quantile read from the
//! histogram is therefore within that bound of the exact quantile (nearest rank) of the times
//! that went in. One hour is about 760 buckets; the DynamoDB adapter spreads a month's
//! buckets over items of 16 each, so a task end's add stays one write of under 1 KB.

use crate::domain::pricing::Model;
use std::collections::BTreeMap;

/// The growth of one bucket over the previous.
pub const GAMMA: f64 = 1.02;
/// The most a figure read from the histogram differs from the exact one, relatively.
pub const RELATIVE_ERROR: f64 = (GAMMA - 1.0) / (GAMMA + 1.0);
// The bound the SLA report promises (issue: "bounded relative error, e.g. <= 1 %").
const _: () = assert!(RELATIVE_ERROR < 0.01);

/// Contract 3.2: the time within which 95 % of a model's tasks should end.
pub fn target_ms(model: Model) -> i64 {
    match model {
        Model::Sora2 => 2 * 60_000,
        Model::VeoPro => 10 * 60_000,
    }
}

/// The bucket a processing time (ms) falls in.
pub fn bucket_of(ms: i64) -> u32 {
    if ms <= 1 {
        return 0;
    }
    let v = ms as f64;
    let mut i = (v.ln() / GAMMA.ln()).ceil().max(1.0) as i32;
    // Floating point can land one off at an exact power: settle on the bucket whose bounds
    // really hold the value.
    while i > 1 && GAMMA.powi(i - 1) >= v {
        i -= 1;
    }
    while GAMMA.powi(i) < v {
        i += 1;
    }
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// The bounds of bucket `i` (ms): its values are `> low` and `<= high`.
pub fn bucket_bounds(i: u32) -> (f64, f64) {
    if i == 0 {
        return (0.0, 1.0);
    }
    let hi = GAMMA.powi(i32::try_from(i).unwrap_or(i32::MAX));
    (hi / GAMMA, hi)
}

/// The figure a bucket stands for (ms).
pub fn bucket_value(i: u32) -> f64 {
    if i == 0 {
        return 1.0;
    }
    let hi = GAMMA.powi(i32::try_from(i).unwrap_or(i32::MAX));
    2.0 * hi / (GAMMA + 1.0)
}

/// Counts per bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    pub counts: BTreeMap<u32, u64>,
}

/// A quantile read from a histogram, and the bounds its exact value lies within (those of the
/// bucket it was read from).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    pub ms: f64,
    pub low_ms: f64,
    pub high_ms: f64,
}

impl Histogram {
    pub fn add(&mut self, ms: i64) {
        *self.counts.entry(bucket_of(ms)).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (b, n) in &other.counts {
            *self.counts.entry(*b).or_default() += n;
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// The `q` quantile (0 < q <= 1) by nearest rank: the value at rank `ceil(q n)`.
    pub fn quantile(&self, q: f64) -> Option<Estimate> {
        let n = self.total();
        if n == 0 || !(q > 0.0 && q <= 1.0) {
            return None;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (b, c) in &self.counts {
            seen += c;
            if seen >= rank {
                let (low_ms, high_ms) = bucket_bounds(*b);
                return Some(Estimate {
                    ms: bucket_value(*b),
                    low_ms,
                    high_ms,
                });
            }
        }
        None
    }

    /// The share of times at or under `ms`, counting whole buckets: the bucket that holds
    /// `ms` counts as within (its values are within [`RELATIVE_ERROR`] of `ms`).
    pub fn share_within(&self, ms: i64) -> Option<f64> {
        let n = self.total();
        if n == 0 {
            return None;
        }
        let limit = bucket_of(ms);
        let within: u64 = self.counts.range(..=limit).map(|(_, c)| c).sum();
        Some(within as f64 / n as f64)
    }
}

// ---------------------------------------------------------------------------------------
// Availability (contract 3.1) and compensation (3.5). docs/SLA.md states these rules for
// the customer's reader; this is the one place the code has them.

/// A minute is down for an account when at least this share (parts per million) of its valid
/// requests in that minute were answered with a 5xx.
pub const DOWN_SHARE_PPM: u64 = 50_000;
/// One minute, in milliseconds: availability is counted in whole UTC minutes.
pub const MINUTE_MS: i64 = 60_000;

/// The start of the UTC minute holding `ms`.
pub fn minute_of(ms: i64) -> i64 {
    ms.div_euclid(MINUTE_MS) * MINUTE_MS
}

/// One account's requests in one minute, as the rate window counted them: `admitted` got
/// past the key's and the account's limits, `client_errors` of those were answered 4xx (the
/// customer's own causes), `server_errors` 5xx.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MinuteCounts {
    pub admitted: u64,
    pub client_errors: u64,
    pub server_errors: u64,
}

impl MinuteCounts {
    /// Requests that count: admitted and not refused for the customer's own reasons. Never
    /// fewer than the 5xx among them (counts written by different calls may lag each other).
    pub fn valid(&self) -> u64 {
        self.admitted
            .saturating_sub(self.client_errors)
            .max(self.server_errors)
    }

    /// At least [`DOWN_SHARE_PPM`] of the valid requests got a 5xx.
    pub fn is_down(&self) -> bool {
        self.server_errors > 0
            && u128::from(self.server_errors) * 1_000_000
                >= u128::from(self.valid()) * u128::from(DOWN_SHARE_PPM)
    }
}

/// Why a minute counts as down.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum DownCause {
    /// The account's own requests: `server_errors` of `valid` got a 5xx.
    ServerErrors { server_errors: u64, valid: u64 },
    /// The synthetic probe could not get a correct answer from the public API (for every
    /// account: it measures what no account's own requests can show, such as a gateway or
    /// function that never answers).
    ProbeFailed { detail: String },
}

/// Availability over `minutes` measured minutes with `down` of them down, in parts per
/// million (rounded down); a period with no minute is fully available.
pub fn availability_ppm(minutes: u64, down: u64) -> u64 {
    if minutes == 0 {
        return 1_000_000;
    }
    let up = minutes.saturating_sub(down);
    (u128::from(up) * 1_000_000 / u128::from(minutes)) as u64
}

/// Whether availability (`down` of `minutes`) is below `target_ppm`, exactly (no rounding).
pub fn below(minutes: u64, down: u64, target_ppm: u64) -> bool {
    minutes > 0
        && u128::from(minutes.saturating_sub(down)) * 1_000_000
            < u128::from(minutes) * u128::from(target_ppm)
}

/// Contract 3.1: the availability target.
pub const TARGET_PPM: u64 = 999_000;

/// One step of the compensation schedule: availability below `below_ppm` earns `percent` of
/// the period's charged credits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub below_ppm: u64,
    pub percent: u32,
}

/// The optional latency step (contract 3.2 is "not a hard SLA", so it is off unless the
/// contract adds it): a model whose share of tasks within target is below `min_share_ppm`
/// earns `percent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyTier {
    pub min_share_ppm: u64,
    pub percent: u32,
}

/// The compensation period. Only monthly periods exist today; the field is there so a
/// contract's period is stated on the account, not assumed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    #[default]
    Monthly,
}

/// An account's SLA terms, as its contract sets them (operators enter them).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaTerms {
    #[serde(default)]
    pub period: Period,
    pub tiers: Vec<Tier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyTier>,
}

impl Default for SlaTerms {
    /// Below 99.9 %: 10 %; below 99.0 %: 25 %; below 95 %: 50 %. No latency step.
    fn default() -> Self {
        SlaTerms {
            period: Period::Monthly,
            tiers: vec![
                Tier {
                    below_ppm: 999_000,
                    percent: 10,
                },
                Tier {
                    below_ppm: 990_000,
                    percent: 25,
                },
                Tier {
                    below_ppm: 950_000,
                    percent: 50,
                },
            ],
            latency: None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TermsError {
    #[error("tiers: between 1 and 10, thresholds between 1 and 1000000 ppm, each threshold lower than the one before and its percent higher")]
    Tiers,
    #[error("percent must be between 1 and 100")]
    Percent,
    #[error("latency.min_share_ppm must be between 1 and 1000000")]
    LatencyShare,
}

impl SlaTerms {
    /// Checks terms an operator entered: a schedule that only gets more generous as
    /// availability falls, percents of at most 100.
    pub fn parse(t: SlaTerms) -> Result<SlaTerms, TermsError> {
        if t.tiers.is_empty() || t.tiers.len() > 10 {
            return Err(TermsError::Tiers);
        }
        for (i, tier) in t.tiers.iter().enumerate() {
            if !(1..=100).contains(&tier.percent) {
                return Err(TermsError::Percent);
            }
            if !(1..=1_000_000).contains(&tier.below_ppm) {
                return Err(TermsError::Tiers);
            }
            if i > 0 {
                let prev = t.tiers[i - 1];
                if tier.below_ppm >= prev.below_ppm || tier.percent <= prev.percent {
                    return Err(TermsError::Tiers);
                }
            }
        }
        if let Some(l) = t.latency {
            if !(1..=100).contains(&l.percent) {
                return Err(TermsError::Percent);
            }
            if !(1..=1_000_000).contains(&l.min_share_ppm) {
                return Err(TermsError::LatencyShare);
            }
        }
        Ok(t)
    }

    /// The percent availability earns: the most generous tier it falls below, or none.
    pub fn availability_percent(&self, minutes: u64, down: u64) -> u32 {
        self.tiers
            .iter()
            .filter(|t| below(minutes, down, t.below_ppm))
            .map(|t| t.percent)
            .max()
            .unwrap_or(0)
    }

    /// The percent the latency step earns for the models' shares within target (ppm).
    pub fn latency_percent(&self, shares_ppm: impl IntoIterator<Item = u64>) -> u32 {
        match self.latency {
            Some(l) if shares_ppm.into_iter().any(|s| s < l.min_share_ppm) => l.percent,
            _ => 0,
        }
    }
}

/// Compensation for a period: `percent` of the credits charged in it, rounded down. Never
/// cash (contract 3.5): credits on the account's balance.
pub fn compensation(charged: i64, percent: u32) -> i64 {
    if charged <= 0 || percent == 0 {
        return 0;
    }
    ((i128::from(charged) * i128::from(percent.min(100))) / 100) as i64
}

/// How an ended task counts for the processing-time figures (contract 3.2) and for platform
/// failures (3.5). Processing runs from the task getting its concurrency slot to its outcome;
/// the wait for the slot is queue time, reported beside it, since it follows from the
/// contract's concurrency and the customer's own load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskClass {
    /// In the figures. `platform_failure`: it failed for a cause of ours.
    Measured {
        processing_ms: i64,
        queue_ms: i64,
        platform_failure: bool,
    },
    /// Out of the figures, with the cause, so exclusions can be audited. `queue_ms` when the
    /// task got a slot.
    Excluded {
        cause: Exclusion,
        queue_ms: Option<i64>,
    },
}

/// One count an ended task adds to its month.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndCount {
    /// One in this processing-time bucket.
    Processing(u32),
    /// One in this queue-time bucket.
    Queue(u32),
    /// One platform-caused failure.
    PlatformFailure,
    /// One task left out, for this cause.
    Excluded(Exclusion),
}

impl TaskClass {
    /// What the task adds to its month's figures: its two times' buckets (and a platform
    /// failure) when measured; its exclusion (and its queue time, when it got a slot) when not.
    pub fn counts(&self) -> Vec<EndCount> {
        match self {
            TaskClass::Measured {
                processing_ms,
                queue_ms,
                platform_failure,
            } => {
                let mut c = vec![
                    EndCount::Processing(bucket_of(*processing_ms)),
                    EndCount::Queue(bucket_of(*queue_ms)),
                ];
                if *platform_failure {
                    c.push(EndCount::PlatformFailure);
                }
                c
            }
            TaskClass::Excluded { cause, queue_ms } => {
                let mut c = vec![EndCount::Excluded(*cause)];
                if let Some(q) = queue_ms {
                    c.push(EndCount::Queue(bucket_of(*q)));
                }
                c
            }
        }
    }
}

/// Why a task is out of the processing-time figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exclusion {
    /// The provider refused the prompt (contract 2.2: a policy rejection).
    PolicyRejected,
    /// The provider failed the job, or was unavailable until the deadline (contract 3.1:
    /// third-party outages are excluded).
    ProviderFailure,
    /// The customer cancelled it.
    Cancelled,
    /// It never got a concurrency slot before its end (queued past its deadline or cancelled
    /// while queued): no processing time exists.
    NeverStarted,
}

impl Exclusion {
    pub const ALL: [Exclusion; 4] = [
        Exclusion::PolicyRejected,
        Exclusion::ProviderFailure,
        Exclusion::Cancelled,
        Exclusion::NeverStarted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Exclusion::PolicyRejected => "policy_rejected",
            Exclusion::ProviderFailure => "provider_failure",
            Exclusion::Cancelled => "cancelled",
            Exclusion::NeverStarted => "never_started",
        }
    }

    pub fn parse(s: &str) -> Option<Exclusion> {
        Exclusion::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// The rule for one ended task. `started_ms`: when it got its slot; `provider_job`: whether
/// a provider ever accepted it.
pub fn classify(
    outcome: crate::domain::task::Outcome,
    created_ms: i64,
    started_ms: Option<i64>,
    ended_ms: i64,
    provider_job: bool,
) -> TaskClass {
    use crate::domain::task::Outcome;
    let Some(started) = started_ms else {
        return TaskClass::Excluded {
            cause: Exclusion::NeverStarted,
            queue_ms: None,
        };
    };
    let queue_ms = (started - created_ms).max(0);
    let excluded = |cause| TaskClass::Excluded {
        cause,
        queue_ms: Some(queue_ms),
    };
    let measured = |platform_failure| TaskClass::Measured {
        processing_ms: (ended_ms - started).max(0),
        queue_ms,
        platform_failure,
    };
    match outcome {
        Outcome::Succeeded => measured(false),
        Outcome::Rejected => excluded(Exclusion::PolicyRejected),
        Outcome::Cancelled | Outcome::Released => excluded(Exclusion::Cancelled),
        // The worker fails a task only on a provider's answer (a failed job, an empty
        // video, a permanent refusal, or unavailability until the deadline): the provider's
        // failure, excluded (contract 3.1). Our own faults end in a time-out instead.
        Outcome::Failed => excluded(Exclusion::ProviderFailure),
        // Out of time with a provider job: late, in the figures as the time it took. Out of
        // time with a slot and no job: we never got it to a provider — ours.
        Outcome::TimedOut => measured(!provider_job),
    }
}

// ---------------------------------------------------------------------------------------
// Sustained platform failures (contract 3.5: "若因平台原因导致连续性大规模失败").

/// The window over which platform-caused task failures are counted.
pub const INCIDENT_WINDOW_MS: i64 = 15 * MINUTE_MS;
/// At least this many platform-caused task failures within the window open an incident.
pub const INCIDENT_MIN_FAILURES: u64 = 20;

/// What the incident watch does on one look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncidentStep {
    /// No incident is open and the window stays under the threshold.
    Quiet,
    /// Open one: the window reached the threshold.
    Open,
    /// The open incident goes on (failures within the window).
    Continue,
    /// Close the open incident: no platform failure for a whole window.
    Close,
}

/// The rule: `in_window` platform failures in the last window; `open` whether an incident
/// is open.
pub fn incident_step(in_window: u64, open: bool) -> IncidentStep {
    match (open, in_window) {
        (false, n) if n >= INCIDENT_MIN_FAILURES => IncidentStep::Open,
        (false, _) => IncidentStep::Quiet,
        (true, 0) => IncidentStep::Close,
        (true, _) => IncidentStep::Continue,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small seeded generator (xorshift), so the test is the same every run.
    fn times(seed: u64, n: usize) -> Vec<i64> {
        let mut x = seed.max(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Mostly 20 s to 3 min, with a long tail to an hour.
                let u = (x % 1_000_000) as f64 / 1_000_000.0;
                if u < 0.9 {
                    20_000 + (u * 180_000.0) as i64
                } else {
                    (u * 3_600_000.0) as i64
                }
            })
            .collect()
    }

    fn exact(sorted: &[i64], q: f64) -> f64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1] as f64
    }

    #[test]
    fn every_value_is_within_the_bound_of_its_bucket_figure() {
        for ms in (0..5_000).chain((5_000..4_000_000).step_by(997)) {
            let b = bucket_of(ms);
            let v = bucket_value(b);
            let x = ms.max(1) as f64;
            let err = (x - v).abs() / x;
            assert!(
                err <= RELATIVE_ERROR + 1e-12,
                "{ms} ms in bucket {b} ({v}): {err}"
            );
        }
    }

    #[test]
    fn quantiles_agree_with_the_exact_ones_within_the_bound() {
        for seed in 1..=20 {
            let ts = times(seed, 5_000);
            let mut h = Histogram::default();
            ts.iter().for_each(|t| h.add(*t));
            let mut sorted = ts.clone();
            sorted.sort_unstable();
            for q in [0.5, 0.95, 0.99, 1.0] {
                let e = h.quantile(q).expect("data");
                let x = exact(&sorted, q);
                assert!(
                    e.low_ms < x && x <= e.high_ms * (1.0 + 1e-12),
                    "seed {seed} q {q}: exact {x}, estimate {e:?}"
                );
                assert!(
                    (x - e.ms).abs() / x <= RELATIVE_ERROR + 1e-12,
                    "seed {seed} q {q}"
                );
            }
        }
    }

    #[test]
    fn merged_histograms_read_as_one() {
        let ts = times(7, 2_000);
        let (a, b) = ts.split_at(700);
        let (mut ha, mut hb, mut all) = (
            Histogram::default(),
            Histogram::default(),
            Histogram::default(),
        );
        a.iter().for_each(|t| ha.add(*t));
        b.iter().for_each(|t| hb.add(*t));
        ts.iter().for_each(|t| all.add(*t));
        ha.merge(&hb);
        assert_eq!(ha, all);
        assert_eq!(Histogram::default().quantile(0.95), None);
    }

    #[test]
    fn the_share_within_target_counts_the_target_bucket() {
        let mut h = Histogram::default();
        for ms in [60_000, 119_000, 120_000, 130_000] {
            h.add(ms);
        }
        assert_eq!(h.share_within(target_ms(Model::Sora2)), Some(0.75));
        assert_eq!(target_ms(Model::VeoPro), 600_000);
    }

    #[test]
    fn a_minute_is_down_from_five_percent_of_valid_requests() {
        let m = |admitted, client_errors, server_errors| MinuteCounts {
            admitted,
            client_errors,
            server_errors,
        };
        assert!(m(20, 0, 1).is_down());
        assert!(!m(21, 0, 1).is_down());
        // The customer's own 4xx are not valid requests: 1 of 20 valid.
        assert!(m(120, 100, 1).is_down());
        assert!(!m(100, 99, 0).is_down());
        assert!(m(0, 0, 3).is_down());
    }

    #[test]
    fn availability_and_tiers_are_exact_at_the_edges() {
        let month = 30 * 24 * 60;
        // 43 minutes of 43,200 is 99.9005 %: not below; 44 is 99.898 %: below.
        assert!(!below(month, 43, TARGET_PPM));
        assert!(below(month, 44, TARGET_PPM));
        let terms = SlaTerms::default();
        assert_eq!(terms.availability_percent(month, 43), 0);
        assert_eq!(terms.availability_percent(month, 44), 10);
        assert_eq!(terms.availability_percent(month, 500), 25);
        assert_eq!(terms.availability_percent(month, 3_000), 50);
        assert_eq!(availability_ppm(month, 44), 998_981);
        assert_eq!(compensation(12_345, 10), 1_234);
        assert_eq!(compensation(-5, 10), 0);
        assert_eq!(terms.latency_percent([900_000]), 0);
    }

    #[test]
    fn terms_only_get_more_generous_as_availability_falls() {
        let t = |tiers: Vec<(u64, u32)>| {
            SlaTerms::parse(SlaTerms {
                period: Period::Monthly,
                tiers: tiers
                    .into_iter()
                    .map(|(below_ppm, percent)| Tier { below_ppm, percent })
                    .collect(),
                latency: None,
            })
        };
        assert!(t(vec![(999_000, 10), (990_000, 25)]).is_ok());
        assert_eq!(
            t(vec![(990_000, 25), (999_000, 10)]),
            Err(TermsError::Tiers)
        );
        assert_eq!(
            t(vec![(999_000, 10), (990_000, 10)]),
            Err(TermsError::Tiers)
        );
        assert_eq!(t(vec![(999_000, 101)]), Err(TermsError::Percent));
        assert_eq!(t(vec![]), Err(TermsError::Tiers));
        assert!(SlaTerms::parse(SlaTerms::default()).is_ok());
    }

    #[test]
    fn tasks_are_classed_by_outcome_and_how_far_they_got() {
        use crate::domain::task::Outcome;
        assert_eq!(
            classify(Outcome::Succeeded, 0, Some(5_000), 65_000, true),
            TaskClass::Measured {
                processing_ms: 60_000,
                queue_ms: 5_000,
                platform_failure: false
            }
        );
        assert_eq!(
            classify(Outcome::TimedOut, 0, Some(1), 600_001, false),
            TaskClass::Measured {
                processing_ms: 600_000,
                queue_ms: 1,
                platform_failure: true
            }
        );
        assert!(matches!(
            classify(Outcome::Failed, 0, Some(1), 2, true),
            TaskClass::Excluded {
                cause: Exclusion::ProviderFailure,
                ..
            }
        ));
        assert!(matches!(
            classify(Outcome::TimedOut, 0, None, 2, false),
            TaskClass::Excluded {
                cause: Exclusion::NeverStarted,
                queue_ms: None
            }
        ));
        assert_eq!(minute_of(119_999), 60_000);
        assert_eq!(minute_of(-1), -60_000);
    }

    #[test]
    fn incidents_open_at_the_threshold_and_close_after_a_quiet_window() {
        assert_eq!(incident_step(19, false), IncidentStep::Quiet);
        assert_eq!(incident_step(20, false), IncidentStep::Open);
        assert_eq!(incident_step(1, true), IncidentStep::Continue);
        assert_eq!(incident_step(0, true), IncidentStep::Close);
    }
}
