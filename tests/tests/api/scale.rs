//! Scale: the largest batch we accept runs to settlement on the simulated provider.

use integration_tests::TestApp;
use serde_json::json;
use shared::adapters::providers::simulated::Simulated;
use shared::domain::access::WINDOW_MS;
use shared::ports::Clock;
use shared::service::access::WINDOW_SETTLES_MS;

pub async fn run_batch(n: usize, concurrency: u32) -> (TestApp, String, String, i64) {
    run_batch_on(TestApp::spawn_sim, n, concurrency).await
}

/// The same on the app `spawn` makes from a simulated provider.
pub async fn run_batch_on<F, Fut>(
    spawn: F,
    n: usize,
    concurrency: u32,
) -> (TestApp, String, String, i64)
where
    F: FnOnce(Simulated) -> Fut,
    Fut: std::future::Future<Output = TestApp>,
{
    let app = spawn(Simulated {
        seed: 11,
        latency_ms: 3_000,
        fail_rate: 0.02,
        reject_rate: 0.01,
        throttle_rate: 0.0,
        outage: false,
    })
    .await;
    let (acct, key) = app.account_with_concurrency(10_000_000, concurrency).await;
    // Through an input file, as a batch this size must come.
    let f = app
        .post("/v1/files", &key, &json!({"request_id": "big-file"}))
        .await;
    let lines: String = (0..n)
        .map(|i| {
            json!({"prompt": format!("Aerial shot of a coastline, take {i}")}).to_string() + "\n"
        })
        .collect();
    let status = app.upload(&f.body, lines.into_bytes()).await;
    assert_eq!(status, 200);
    let r = app
        .post(
            "/v1/batches",
            &key,
            &json!({"request_id": "big", "model": "sora-2", "input_file_id": f.body["id"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let batch = r.body["id"].as_str().unwrap_or_default().to_string();
    let simulated = app
        .drive_to_settlement(&acct, &batch, 5_000, 24 * 3_600_000)
        .await;
    (app, acct, batch, simulated)
}

/// The documented maximum, 10,000 tasks, on the twins in CI (the emulator serves ~160
/// requests/s, so 10,000 tasks would take it about half an hour; `scripts/bench.sh` runs that
/// on the emulator). `SCALE_TASKS` changes the size.
#[tokio::test]
async fn a_large_batch_completes_on_the_simulated_provider() {
    let n = std::env::var("SCALE_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let (app, acct, batch, _) = run_batch_on(TestApp::spawn_memory_sim, n, 100).await;
    let b = app
        .svc
        .batches
        .get(&acct, &batch)
        .await
        .ok()
        .flatten()
        .expect("batch");
    let st = b.settlement.expect("settled");
    assert_eq!(st.counts.total as usize, n);
    assert_eq!(
        st.counts.succeeded + st.counts.failed + st.counts.rejected,
        n as u32
    );
    assert_eq!(
        app.ledger_entries(&acct, "refund").await.len() as u32,
        st.counts.failed
    );
    app.assert_invariants().await;
}

/// The benchmark: N tasks through the whole path, counting every request each function
/// makes to the emulator (each signs with its own key; the harness's own reads are left out).
/// `scripts/bench.sh` runs it; figures and method are in docs/PERFORMANCE.md.
#[tokio::test]
#[ignore = "benchmark: run with scripts/bench.sh"]
async fn bench_pipeline() {
    let n: usize = std::env::var("BENCH_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let started = std::time::Instant::now();
    let (app, acct, batch, simulated_ms) = run_batch(n, 100).await;
    let wall = started.elapsed().as_secs_f64();
    // Per function and operation, what it did for this batch (set-up excluded: tables,
    // queues and the key are made once per deployment, not per task).
    let mut by_op: std::collections::BTreeMap<String, f64> = Default::default();
    let mut by_fn: Vec<(String, std::collections::BTreeMap<String, u64>)> = Vec::new();
    for (identity, function) in integration_tests::FUNCTION_IDENTITIES {
        let ops: std::collections::BTreeMap<String, u64> = app
            .emulator_operations_of(identity)
            .await
            .into_iter()
            .filter(|(op, _)| per_task(op))
            .collect();
        for (op, c) in &ops {
            *by_op.entry(op.clone()).or_default() += *c as f64;
        }
        if !ops.is_empty() {
            by_fn.push((function.to_string(), ops));
        }
    }
    // Lambda's SQS event sources receive and delete the messages the functions are fed
    // (here the test pump does, signing as the harness): we pay for those requests too.
    let pump: std::collections::BTreeMap<String, u64> = app
        .emulator_operations_of("TESTS")
        .await
        .into_iter()
        .filter(|(op, _)| {
            matches!(
                op.as_str(),
                "sqs.ReceiveMessage" | "sqs.DeleteMessage" | "sqs.DeleteMessageBatch"
            )
        })
        .collect();
    for (op, c) in &pump {
        *by_op.entry(op.clone()).or_default() += *c as f64;
    }
    by_fn.push(("event sources (receive, delete)".to_string(), pump));
    let b = app
        .svc
        .batches
        .get(&acct, &batch)
        .await
        .ok()
        .flatten()
        .expect("batch");
    let st = b.settlement.expect("settled");
    let invocations = app.invocations.load(std::sync::atomic::Ordering::Relaxed) as f64;
    let per = |x: f64| x / n as f64;
    let cost = Cost::of(&by_op, invocations);
    assert!(
        cost.wru > 0.0,
        "no capacity units measured: run with EMULATOR_MEASURE_UNITS=1 (scripts/bench.sh does)"
    );
    println!(
        "BENCH tasks={n} succeeded={} failed={} rejected={} wall_s={wall:.1} simulated_s={}",
        st.counts.succeeded,
        st.counts.failed,
        st.counts.rejected,
        simulated_ms / 1000
    );
    println!(
        "BENCH per_task: dynamodb_read_units={:.2} dynamodb_write_units={:.2} sqs_requests={:.2} lambda_invocations={:.3} s3_put={:.3} s3_get={:.3}",
        per(cost.rru),
        per(cost.wru),
        per(cost.sqs),
        per(invocations),
        per(cost.s3_put),
        per(cost.s3_get)
    );
    println!(
        "BENCH usd_per_1000_tasks={:.4} (dynamodb {:.4}, sqs {:.4}, lambda {:.4}, s3 {:.4})",
        cost.usd() * 1_000.0 / n as f64,
        cost.dynamodb_usd() * 1_000.0 / n as f64,
        cost.sqs_usd() * 1_000.0 / n as f64,
        cost.lambda_usd() * 1_000.0 / n as f64,
        cost.s3_usd() * 1_000.0 / n as f64,
    );
    for (op, c) in &by_op {
        let (op, c) = in_units(op, *c);
        println!("BENCH op {op} per_task={:.3}", per(c));
    }
    for (function, ops) in &by_fn {
        let line: Vec<String> = ops
            .iter()
            .map(|(op, c)| {
                let (op, c) = in_units(op, *c as f64);
                format!("{op}={:.3}", per(c))
            })
            .collect();
        println!("BENCH function {function} per_task: {}", line.join(" "));
    }
}

/// The launcher counts capacity in thousandths of a unit; print whole units.
fn in_units(op: &str, count: f64) -> (String, f64) {
    if op.contains("_milliunits") {
        (op.replace("_milliunits", "_units"), count / 1_000.0)
    } else {
        (op.to_string(), count)
    }
}

/// Operations that happen per task in AWS. Creating tables, queues and keys is set-up;
/// `ChangeMessageVisibility` is the test pump's stand-in for SQS delays (in AWS a delay is
/// `DelaySeconds` on the send, no request of its own).
fn per_task(op: &str) -> bool {
    !matches!(
        op,
        "sqs.ChangeMessageVisibility"
            | "sqs.CreateQueue"
            | "sqs.GetQueueAttributes"
            | "sqs.GetQueueUrl"
            | "kms.CreateKey"
    ) && !op.starts_with("dynamodb.CreateTable")
        && !op.starts_with("dynamodb.UpdateTimeToLive")
        && !op.starts_with("dynamodb.UpdateContinuousBackups")
        && !op.starts_with("dynamodb.Describe")
        && !op.starts_with("s3.CreateBucket")
}

/// What the counted requests cost at us-east-1 on-demand prices (capacity units as the
/// emulator launcher measured them; docs/PERFORMANCE.md says how).
struct Cost {
    rru: f64,
    wru: f64,
    sqs: f64,
    s3_put: f64,
    s3_get: f64,
    kms: f64,
    invocations: f64,
}

impl Cost {
    fn of(ops: &std::collections::BTreeMap<String, f64>, invocations: f64) -> Cost {
        let mut c = Cost {
            rru: 0.0,
            wru: 0.0,
            sqs: 0.0,
            s3_put: 0.0,
            s3_get: 0.0,
            kms: 0.0,
            invocations,
        };
        for (op, n) in ops {
            let n = *n;
            match op.as_str() {
                // Measured by the emulator launcher from the items' sizes.
                "dynamodb.read_milliunits" => c.rru += n / 1_000.0,
                "dynamodb.write_milliunits" => c.wru += n / 1_000.0,
                o if o.starts_with("sqs.") => c.sqs += n,
                "s3.PUT" | "s3.POST" => c.s3_put += n,
                "s3.GET" | "s3.HEAD" => c.s3_get += n,
                o if o.starts_with("kms.") => c.kms += n,
                _ => {}
            }
        }
        c
    }

    // DynamoDB $0.625 per million write units, $0.125 per million read units.
    fn dynamodb_usd(&self) -> f64 {
        self.wru * 0.625e-6 + self.rru * 0.125e-6
    }

    // SQS $0.40 per million requests; KMS $0.03 per 10,000 requests.
    fn sqs_usd(&self) -> f64 {
        self.sqs * 0.40e-6 + self.kms * 3e-6
    }

    // $0.20 per million invocations plus arm64 compute: 256 MB for 100 ms each.
    fn lambda_usd(&self) -> f64 {
        self.invocations * (0.20e-6 + 0.25 * 0.1 * 0.0000133334)
    }

    // S3 PUT $0.005 and GET $0.0004 per thousand.
    fn s3_usd(&self) -> f64 {
        self.s3_put * 0.005e-3 + self.s3_get * 0.0004e-3
    }

    fn usd(&self) -> f64 {
        self.dynamodb_usd() + self.sqs_usd() + self.lambda_usd() + self.s3_usd()
    }
}

/// A small batch's POST makes one write for the whole batch: the hold's transaction (which
/// also creates its task records and shard and claims its first window) and the window's
/// send, besides the access guard's reads and writes and the idempotency lookup. No input
/// object, no separate task writes, no `accepted -> queued` (docs/PERFORMANCE.md).
#[tokio::test]
async fn a_small_batch_is_created_by_one_transaction_and_one_send() {
    let app = TestApp::spawn().await;
    let (_, key) = app.account_with(10_000).await;
    let body =
        json!({"request_id": "calls", "model": "sora-2", "tasks": integration_tests::tasks(10)});
    let Some(_) = app.aws_side() else {
        return; // the counts are the emulator launcher's
    };
    // The first request of an instance also fills its caches (the key's account, the model's
    // status, the previous rate window): count a warm one. A finished rate window is kept
    // only once it is two seconds old (stragglers may still add to it), so in a minute's
    // first two seconds every request reads it again; the test's clock stands still, so
    // move it past them, or one run in thirty counts a seventh call.
    let into_window = app.clock.now_ms().rem_euclid(WINDOW_MS);
    if into_window < WINDOW_SETTLES_MS {
        app.clock.advance_ms(WINDOW_SETTLES_MS - into_window);
    }
    let warm =
        json!({"request_id": "warm", "model": "sora-2", "tasks": integration_tests::tasks(10)});
    assert_eq!(app.post("/v1/batches", &key, &warm).await.status, 201);
    let before = app.emulator_operations_of("API").await;
    let r = app.post("/v1/batches", &key, &body).await;
    assert_eq!((r.status, r.body["status"].as_str()), (201, Some("queued")));
    let after = app.emulator_operations_of("API").await;
    let made =
        |op: &str| after.get(op).copied().unwrap_or(0) - before.get(op).copied().unwrap_or(0);
    assert_eq!(made("dynamodb.TransactWriteItems"), 1, "{after:?}");
    assert_eq!(made("sqs.SendMessageBatch") + made("sqs.SendMessage"), 1);
    for none in ["s3.PUT", "dynamodb.BatchWriteItem"] {
        assert_eq!(made(none), 0, "{none}: {after:?}");
    }
    let total: u64 = after.values().sum::<u64>() - before.values().sum::<u64>();
    // The key and its account (one BatchGetItem), the rate window, the usage log, the
    // idempotency lookup, the transaction, the send: six, from eleven before.
    assert_eq!(total, 6, "{before:?} -> {after:?}");
}
