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
//! that went in. One hour is about 760 buckets; a month's histogram per account and model
//! stays a small item.

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
}
