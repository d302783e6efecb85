//! `scripts/sim.sh`: runs the deterministic simulator over a range of seeds, or one seed
//! with its step trace.
//!
//!   sim [--seeds N] [--from S] [--seed S] [--verbose] [--steps K] [--crash P] [--veo P]
//!       [--ignore reconcile,live-messages,upstream-jobs,polls]

use integration_tests::sim::{replay_command, run, Options};
use std::time::Instant;

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut opts = Options::default();
    if let Some(k) = arg(&args, "--steps") {
        opts.steps = k;
    }
    if let Some(p) = arg(&args, "--crash") {
        opts.crash_p = p;
    }
    if let Some(p) = arg(&args, "--veo") {
        opts.veo_share = p;
    }
    if let Some(list) = arg::<String>(&args, "--ignore") {
        opts.ignore = list.split(',').map(str::to_string).collect();
    }
    let verbose = args.iter().any(|a| a == "--verbose");
    let seeds: Vec<u64> = match arg::<u64>(&args, "--seed") {
        Some(s) => vec![s],
        None => {
            let from: u64 = arg(&args, "--from").unwrap_or(0);
            let n: u64 = arg(&args, "--seeds").unwrap_or(1_000);
            (from..from + n).collect()
        }
    };
    if verbose {
        opts.verbose = true;
        opts.trace_len = usize::MAX;
    }
    let started = Instant::now();
    let (mut failed, mut steps, mut tasks, mut virtual_ms) = (Vec::new(), 0usize, 0u64, 0i64);
    let mut worst_polls = 0;
    let mut worst_live = 0;
    let (mut kills, mut timeouts) = (0usize, 0usize);
    let (mut released, mut cancelled_charged) = (0usize, 0usize);
    for (k, seed) in seeds.iter().enumerate() {
        let one = Instant::now();
        let r = run(*seed, opts.clone()).await;
        let took = one.elapsed().as_secs_f64();
        if took > 2.0 {
            println!(
                "seed {seed} took {took:.1} s ({} steps, {} tasks, {} task messages, {:.1} simulated hours)",
                r.steps,
                r.tasks,
                r.task_messages_sent,
                r.virtual_ms as f64 / 3_600_000.0
            );
        }
        steps += r.steps;
        tasks += r.tasks;
        virtual_ms += r.virtual_ms;
        worst_polls = worst_polls.max(r.max_polls_per_minute);
        worst_live = worst_live.max(r.max_live_messages_per_task);
        kills += r.kills;
        timeouts += r.timeouts;
        released += r.released;
        cancelled_charged += r.cancelled_charged;
        if seeds.len() == 1 {
            println!("{r:#?}");
        }
        if let Some(v) = &r.violation {
            println!(
                "seed {seed}: {v}\n  replay: {}",
                replay_command(*seed, &opts)
            );
            failed.push(*seed);
        }
        if (k + 1) % 1_000 == 0 {
            println!(
                "{} seeds, {} with violations, {:.0} seeds/s",
                k + 1,
                failed.len(),
                (k + 1) as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sim: {} seeds, {} with violations, {steps} steps, {tasks} tasks, {:.1} simulated hours, \
         {kills} kills, {timeouts} time-outs, {released} cancels released, \
         {cancelled_charged} cancels charged, worst polls/min {worst_polls}, worst live messages/task {worst_live}, {secs:.1} s, {:.0} seeds/s",
        seeds.len(),
        failed.len(),
        virtual_ms as f64 / 3_600_000.0,
        seeds.len() as f64 / secs
    );
    if !failed.is_empty() {
        println!("failing seeds: {failed:?}");
        std::process::exit(1);
    }
}
