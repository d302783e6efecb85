//! The simulator in CI: a fixed range of seeds, split over a few tests so both cores work.
//! `scripts/sim.sh` runs any range, or one seed with its step trace.

use integration_tests::sim::{replay_command, run, Options};

/// Seeds 0 to `SIM_CI_SEEDS` (default 2,000), in `PARTS` slices.
const PARTS: u64 = 8;

async fn slice(part: u64) {
    let total: u64 = std::env::var("SIM_CI_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let mut failed = Vec::new();
    for seed in (0..total).filter(|s| s % PARTS == part) {
        let r = run(seed, Options::default()).await;
        if let Some(v) = r.violation {
            eprintln!("seed {seed}: {v}\n  replay: {}", replay_command(seed));
            for line in r.trace.iter().rev().take(12).rev() {
                eprintln!("    {line}");
            }
            failed.push(seed);
        }
    }
    assert!(failed.is_empty(), "seeds with violations: {failed:?}");
}

macro_rules! parts {
    ($($name:ident = $n:expr),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                slice($n).await;
            }
        )*
    };
}

parts!(
    seeds_0 = 0,
    seeds_1 = 1,
    seeds_2 = 2,
    seeds_3 = 3,
    seeds_4 = 4,
    seeds_5 = 5,
    seeds_6 = 6,
    seeds_7 = 7
);
