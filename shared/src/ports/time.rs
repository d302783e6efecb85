//! Time and chance as dependencies, so one manual clock and one seed can drive a whole run
//! (tests move time by hand; the simulator replays a seed exactly).

use async_trait::async_trait;

#[async_trait]
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
    /// Waits `ms` of this clock's time: every retry wait and backoff goes through here.
    async fn sleep_ms(&self, ms: u64);
}

pub trait Random: Send + Sync {
    /// Fills `buf` with random bytes (ids, secrets).
    fn fill(&self, buf: &mut [u8]);

    /// A uniform number in `0..=max`.
    fn up_to(&self, max: u64) -> u64 {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        let v = u64::from_le_bytes(b);
        match max.checked_add(1) {
            Some(n) => v % n,
            None => v,
        }
    }

    /// A uniform number in `[0, 1)`.
    fn unit(&self) -> f64 {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `N` random bytes.
    fn bytes<const N: usize>(&self) -> [u8; N]
    where
        Self: Sized,
    {
        let mut b = [0u8; N];
        self.fill(&mut b);
        b
    }
}

/// `N` random bytes from any `Random`, also behind `dyn`.
pub fn random_bytes<const N: usize>(r: &dyn Random) -> [u8; N] {
    let mut b = [0u8; N];
    r.fill(&mut b);
    b
}

/// Exponential backoff with full jitter, capped at 1 s: how long attempt `attempt` waits.
pub fn backoff_ms(random: &dyn Random, attempt: u32) -> u64 {
    let cap_ms = 1_000u64.min(20u64 << attempt.min(10));
    random.up_to(cap_ms)
}
