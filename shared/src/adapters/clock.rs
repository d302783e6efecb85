//! Adapters of the `Clock` and `Random` ports: the system's, and the controllable ones that
//! tests and the simulator drive.

use crate::ports::{Clock, Random};
use async_trait::async_trait;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }

    async fn sleep_ms(&self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// A clock that moves only when told to advance.
///
/// Its sleeps (the backoffs between retries) either wait in real time without moving the
/// clock, which spaces out real contention against real I/O (the emulator), or move the
/// clock by the time slept and return at once, which keeps runs over the in-memory twins
/// fast and exactly repeatable.
#[derive(Clone)]
pub struct ManualClock {
    ms: Arc<AtomicI64>,
    sleeps_advance: bool,
}

impl ManualClock {
    pub fn starting_now() -> Self {
        Self::starting_at(SystemClock.now_ms())
    }

    pub fn starting_at(ms: i64) -> Self {
        ManualClock {
            ms: Arc::new(AtomicI64::new(ms)),
            sleeps_advance: false,
        }
    }

    /// The same clock, whose sleeps move it instead of waiting.
    pub fn with_sleeps_advancing(mut self) -> Self {
        self.sleeps_advance = true;
        self
    }

    pub fn advance_ms(&self, ms: i64) {
        self.ms.fetch_add(ms, Ordering::SeqCst);
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.ms.load(Ordering::SeqCst)
    }

    async fn sleep_ms(&self, ms: u64) {
        if self.sleeps_advance {
            self.advance_ms(i64::try_from(ms).unwrap_or(i64::MAX));
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
}

/// The operating system's randomness (ids, secrets, jitter in production).
pub struct OsRandom;

impl Random for OsRandom {
    fn fill(&self, buf: &mut [u8]) {
        rand::fill(buf);
    }
}

/// A seeded generator (SplitMix64): the same seed gives the same ids, secrets and jitter, so
/// a simulated run replays exactly.
pub struct SeededRandom(Mutex<u64>);

impl SeededRandom {
    pub fn new(seed: u64) -> Self {
        SeededRandom(Mutex::new(seed))
    }

    pub fn next_u64(&self) -> u64 {
        let mut s = match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Random for SeededRandom {
    fn fill(&self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}
