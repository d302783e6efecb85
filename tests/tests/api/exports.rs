//! Exports: the export function's real handler fed by the SQS pump, files in the emulator's
//! S3, downloaded through their presigned links, parsed by Python's standard csv module.

use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use integration_tests::{tasks, Backend, TestApp};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use shared::domain::export::PART_BYTES;
use shared::domain::ledger::EntryKind;
use shared::domain::money::Credits;
use shared::ports::records::LedgerRecord;
use shared::ports::store::MoneyMove;

async fn export(app: &TestApp, key: &str, body: Value) -> Value {
    let r = app.post("/v1/exports", key, &body).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap_or_default().to_string();
    app.run_until_idle().await;
    let done = app.get(&format!("/v1/exports/{id}"), key).await;
    assert_eq!(done.body["status"], "completed", "{:?}", done.body);
    done.body
}

async fn download(app: &TestApp, e: &Value) -> Vec<u8> {
    let url = e["download_url"].as_str().unwrap_or_default();
    assert!(url.contains("X-Amz-Expires=3600"), "{url}");
    app.download(url).await
}

/// Rows of a CSV file as Python's csv module reads it (utf-8-sig drops the BOM).
fn python_csv(bytes: &[u8]) -> Vec<Vec<String>> {
    use std::io::Write;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = std::env::var("MOTO_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join("infra/.venv/bin/python"));
    let script = "import csv,io,json,sys\n\
        text = sys.stdin.buffer.read().decode('utf-8-sig')\n\
        print(json.dumps(list(csv.reader(io.StringIO(text, newline='')))))";
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(bytes)
        .expect("write");
    let out = child.wait_with_output().expect("output");
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).expect("rows")
}

/// The reason every seeded entry carries: a formula-looking, quoted cell, padded to make
/// rows `pad` characters longer.
fn seeded_reason(pad: usize) -> String {
    format!("=seeded, \"quoted\"{}", " ".repeat(pad))
}

/// `n` ledger entries for `acct`: on the twins through the `Money` port (a real, gap-free
/// ledger, fast in memory); on the emulator written straight into the table (a transaction
/// per entry would take the emulator an hour). Returns their sum.
async fn seed_ledger(app: &TestApp, acct: &str, n: u64, pad: usize) -> i64 {
    let t0 = app.account(acct).await.created_ms;
    let amount = |i: u64| if i.is_multiple_of(3) { 500 } else { -49 };
    let record = |i: u64, seq: u64, balance_after: Credits| LedgerRecord {
        account_id: acct.to_string(),
        seq,
        created_ms: t0 + 1 + i as i64,
        kind: if amount(i) > 0 {
            EntryKind::Grant
        } else {
            EntryKind::PreDeduct
        },
        amount: Credits(amount(i)),
        balance_after,
        batch_id: None,
        task_id: None,
        request_id: Some(format!("seed-{i}")),
        reason: Some(seeded_reason(pad)),
        actor: None,
        pack: None,
        price_paid_usd_cents: None,
        refers_to: None,
        invoice: None,
    };
    let expected_sum: i64 = (0..n).map(amount).sum();
    if app.backend == Backend::Memory {
        let mut a = app.account(acct).await;
        for i in 0..n {
            let e = record(i, a.ledger_seq + 1, a.balance + Credits(amount(i)));
            let mv = MoneyMove {
                account_id: acct.to_string(),
                expected: a.book(),
                require_active: false,
                held_delta: Credits::ZERO,
                granted_delta: Credits::ZERO,
                charged_delta: Credits::ZERO,
                refunded_delta: Credits::ZERO,
                released_delta: Credits::ZERO,
                creates: vec![],
                changes: vec![],
                entry: e.clone(),
            };
            app.svc.money.commit(mv).await.expect("seed");
            a.balance = e.balance_after;
            a.ledger_seq = e.seq;
            a.last_entry_ms = e.created_ms;
        }
        return expected_sum;
    }
    let ddb = aws_sdk_dynamodb::Client::new(&app.aws().sdk);
    let table = app.aws().env["LEDGER_TABLE"].clone();
    let chunks: Vec<Vec<LedgerRecord>> = (0..n)
        .map(|i| record(i, 1_000 + i, Credits(0)))
        .collect::<Vec<_>>()
        .chunks(25)
        .map(<[LedgerRecord]>::to_vec)
        .collect();
    let mut writers = Vec::new();
    for part in chunks.chunks(chunks.len().div_ceil(8)) {
        let (ddb, table, part) = (ddb.clone(), table.clone(), part.to_vec());
        writers.push(tokio::spawn(async move {
            for c in part {
                let mut reqs: Vec<WriteRequest> = c
                    .iter()
                    .map(|e| {
                        let put = PutRequest::builder()
                            .set_item(Some(serde_dynamo::to_item(e).expect("item")))
                            .build()
                            .expect("put");
                        WriteRequest::builder().put_request(put).build()
                    })
                    .collect();
                while !reqs.is_empty() {
                    let out = ddb
                        .batch_write_item()
                        .request_items(&table, reqs)
                        .send()
                        .await
                        .expect("seed");
                    reqs = out
                        .unprocessed_items
                        .and_then(|mut m| m.remove(&table))
                        .unwrap_or_default();
                }
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    expected_sum
}

/// An export of `n` seeded entries: the manifest, the file behind the link (read by Python's
/// csv module), the sum, and the memory the run held.
async fn big_ledger_export(app: &TestApp, n: u64, pad: usize) -> Vec<u8> {
    let (acct, key) = app.account_with(0).await;
    let expected_sum = seed_ledger(app, &acct, n, pad).await;

    let e = export(
        app,
        &key,
        json!({"request_id": "big", "dataset": "ledger", "format": "csv"}),
    )
    .await;
    let m = &e["manifest"];
    assert_eq!(m["rows"], n);
    assert_eq!(e["rows_written"], n);
    let bytes = download(app, &e).await;
    assert_eq!(m["bytes"], bytes.len() as u64);
    assert_eq!(
        m["sha256"],
        hex::encode(Sha256::digest(&bytes)).as_str(),
        "the link serves the file the manifest describes"
    );
    let rows = python_csv(&bytes);
    assert_eq!(rows.len() as u64, n + 1, "a header and one row per entry");
    let amount_col = rows[0]
        .iter()
        .position(|c| c == "amount")
        .expect("amount column");
    let reason_col = rows[0]
        .iter()
        .position(|c| c == "reason")
        .expect("reason column");
    let sum: i64 = rows[1..]
        .iter()
        .map(|r| r[amount_col].parse::<i64>().unwrap_or(0))
        .sum();
    assert_eq!(sum, expected_sum, "the file adds up to the ledger");
    assert_eq!(rows[1][reason_col], format!("'{}", seeded_reason(pad)));
    // Memory: the export held at most one part (8 MiB) plus one row at a time.
    let rec = app
        .svc
        .exports
        .get(&acct, e["id"].as_str().unwrap_or(""))
        .await
        .expect("read")
        .expect("export");
    assert!(rec.peak_buffer_bytes > 0);
    assert!(
        rec.peak_buffer_bytes <= PART_BYTES as u64 + 64 * 1024,
        "peak buffer {} bytes",
        rec.peak_buffer_bytes
    );
    assert!(
        bytes.len() > PART_BYTES,
        "{} bytes: more than one part, so the upload really was in parts",
        bytes.len()
    );
    app.assert_usage_logged().await;
    bytes
}

/// 100,000 rows, on the twins: the emulator's queries walk the whole partition on every
/// page, which makes this size take it ten minutes (see docs/PERFORMANCE.md).
#[tokio::test]
async fn an_export_of_100000_ledger_rows_matches_the_ledger_with_bounded_memory() {
    let app = TestApp::spawn_memory_sim(Default::default()).await;
    big_ledger_export(&app, 100_000, 0).await;
}

/// The same on the emulator's S3 with fewer, longer rows: a real multipart upload of more
/// than one part, downloaded through its presigned link.
#[tokio::test]
async fn a_multipart_export_on_s3_matches_the_ledger_with_bounded_memory() {
    let app = TestApp::spawn_aws().await;
    big_ledger_export(&app, 15_000, 500).await;
}

#[tokio::test]
async fn csv_and_json_round_trip_with_unicode_and_formula_cells_neutralised() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(10_000).await;
    let prompts = [
        "=HYPERLINK(\"http://evil.example\",\"click\")",
        "+SUM(1,2)",
        "-2+3",
        "@cmd",
        "日本語の灯台、夕暮れ «quotes» \"double\", comma",
        "Ünïcödé emoji 🎬 plain",
    ];
    let mut t: Vec<Value> = prompts.iter().map(|p| json!({"prompt": p})).collect();
    t.extend(tasks(4).as_array().cloned().unwrap_or_default());
    let r = app
        .post(
            "/v1/batches",
            &key,
            &json!({"request_id": "csv", "model": "sora-2", "tasks": t}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);

    let e = export(
        &app,
        &key,
        json!({"request_id": "t-csv", "dataset": "tasks", "format": "csv"}),
    )
    .await;
    let bytes = download(&app, &e).await;
    assert!(
        bytes.starts_with("\u{feff}".as_bytes()),
        "BOM for spreadsheets"
    );
    let rows = python_csv(&bytes);
    assert_eq!(rows.len(), 11);
    let col = rows[0]
        .iter()
        .position(|c| c == "prompt")
        .expect("prompt column");
    let got: Vec<&str> = rows[1..].iter().map(|r| r[col].as_str()).collect();
    for p in &prompts[..4] {
        assert!(
            got.contains(&format!("'{p}").as_str()),
            "{p} neutralised: {got:?}"
        );
    }
    for p in &prompts[4..] {
        assert!(got.contains(p), "{p} intact");
    }

    let j = export(
        &app,
        &key,
        json!({"request_id": "t-json", "dataset": "tasks", "format": "json"}),
    )
    .await;
    let text = String::from_utf8(download(&app, &j).await).expect("utf-8");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 10);
    assert!(
        lines.iter().any(|l| l["prompt"] == prompts[0]),
        "JSON keeps values as they are"
    );

    let l = export(
        &app,
        &key,
        json!({"request_id": "l-csv", "dataset": "ledger", "format": "csv"}),
    )
    .await;
    let rows = python_csv(&download(&app, &l).await);
    let amount = rows[0].iter().position(|c| c == "amount").expect("amount");
    let usd = rows[0]
        .iter()
        .position(|c| c == "amount_usd")
        .expect("amount_usd");
    let hold = rows
        .iter()
        .find(|r| r[amount] == "-490")
        .expect("the hold, a plain negative number");
    assert_eq!(hold[usd], "-4.90");

    // The same request_id: the same export, with a fresh link.
    let again = app
        .post(
            "/v1/exports",
            &key,
            &json!({"request_id": "l-csv", "dataset": "ledger", "format": "csv"}),
        )
        .await;
    assert!(again.replayed());
    assert_eq!(again.body["id"], l["id"]);
    let bad = app
        .post(
            "/v1/exports",
            &key,
            &json!({"request_id": "x", "dataset": "account_archive", "format": "csv"}),
        )
        .await;
    assert_eq!((bad.status, bad.code()), (422, "invalid_export"));
    let _ = acct;
}

#[tokio::test]
async fn no_export_holds_another_accounts_rows_and_the_archive_holds_everything_of_ours() {
    let app = TestApp::spawn().await;
    let (acct_a, key_a) = app.account_with(10_000).await;
    let (_, key_b) = app.account_with(10_000).await;
    for (key, rid) in [(&key_a, "a"), (&key_b, "b")] {
        let r = app
            .post(
                "/v1/batches",
                key,
                &json!({"request_id": rid, "model": "sora-2", "tasks": tasks(10)}),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    let ep = app
        .post(
            "/v1/webhook-endpoints",
            &key_a,
            &json!({"request_id": "w", "url": "http://127.0.0.1:9/h"}),
        )
        .await;
    assert_eq!(ep.status, 201);
    let theirs = app.get("/v1/batches", &key_b).await.body["data"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ours = app.get("/v1/batches", &key_a).await.body["data"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for dataset in ["ledger", "batches", "tasks", "usage"] {
        let e = export(
            &app,
            &key_a,
            json!({"request_id": format!("x-{dataset}"), "dataset": dataset, "format": "json"}),
        )
        .await;
        let text = String::from_utf8(download(&app, &e).await).unwrap_or_default();
        assert!(!text.is_empty(), "{dataset}");
        assert!(
            !text.contains(&theirs),
            "{dataset} export leaks another account's batch"
        );
    }
    let e = export(
        &app,
        &key_a,
        json!({"request_id": "gdpr", "dataset": "account_archive", "format": "json"}),
    )
    .await;
    let text = String::from_utf8(download(&app, &e).await).unwrap_or_default();
    let lines: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let kinds: std::collections::BTreeSet<&str> =
        lines.iter().filter_map(|l| l["record"].as_str()).collect();
    for k in [
        "account",
        "api_key",
        "webhook_endpoint",
        "ledger_entry",
        "batch",
        "task",
        "api_usage",
    ] {
        assert!(kinds.contains(k), "the archive has {k}: {kinds:?}");
    }
    assert!(
        !text.contains("whsec_") && !text.contains("\"secret\""),
        "no secrets in the archive"
    );
    assert!(text.contains(&ours) && !text.contains(&theirs));
    assert_eq!(
        lines
            .iter()
            .find(|l| l["record"] == "account")
            .map(|l| l["id"].clone()),
        Some(json!(acct_a))
    );
    // Another account's export id is not found, exactly like a missing one.
    let id = e["id"].as_str().unwrap_or_default();
    let r = app.get(&format!("/v1/exports/{id}"), &key_b).await;
    let missing = app
        .get("/v1/exports/exp_01M87QK0NREPX2ZHGKMMS7YBB3", &key_b)
        .await;
    assert_eq!((r.status, &r.body), (404, &missing.body));
    app.assert_invariants().await;
}

#[tokio::test]
async fn an_export_that_dies_before_it_completes_is_run_again_and_completes_once() {
    let app = TestApp::spawn_with(integration_tests::fail_once_at("export.before_complete")).await;
    let (acct, key) = app.account_with(10_000).await;
    app.grant(&acct, 5).await;
    let e = export(
        &app,
        &key,
        json!({"request_id": "crash", "dataset": "ledger", "format": "csv"}),
    )
    .await;
    assert_eq!(e["rows_written"], 2);
    let rec = app
        .svc
        .exports
        .get(&acct, e["id"].as_str().unwrap_or(""))
        .await
        .expect("read")
        .expect("export");
    assert_eq!(rec.run, 2, "the first run died, the second finished");
    let rows = python_csv(&download(&app, &e).await);
    assert_eq!(rows.len(), 3);
    app.assert_invariants().await;
}

/// Benchmark (scripts/bench.sh with BENCH=export): export throughput and the memory held,
/// for EXPORT_ROWS ledger rows (default 1,000,000).
#[tokio::test]
#[ignore = "benchmark: run with BENCH=export scripts/bench.sh"]
async fn bench_export() {
    let n: u64 = std::env::var("EXPORT_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    // The emulator by default; TEST_BACKEND=memory measures the export's own cost.
    let app = TestApp::spawn_on(
        integration_tests::Backend::from_env(),
        Default::default(),
        |_| std::sync::Arc::new(shared::adapters::providers::simulated::Simulated::default()) as _,
        true,
    )
    .await;
    let (acct, key) = app.account_with(0).await;
    let seeded = std::time::Instant::now();
    seed_ledger(&app, &acct, n, 0).await;
    println!(
        "BENCH seeded {n} rows in {:.1} s",
        seeded.elapsed().as_secs_f64()
    );
    let started = std::time::Instant::now();
    let e = export(
        &app,
        &key,
        json!({"request_id": "bench", "dataset": "ledger", "format": "csv"}),
    )
    .await;
    let secs = started.elapsed().as_secs_f64();
    let rec = app
        .svc
        .exports
        .get(&acct, e["id"].as_str().unwrap_or(""))
        .await
        .expect("read")
        .expect("export");
    assert_eq!(rec.rows_written, n);
    let hwm = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("")
        .to_string();
    println!(
        "BENCH export rows={n} bytes={} seconds={secs:.1} rows_per_s={:.0}",
        rec.bytes,
        n as f64 / secs
    );
    println!(
        "BENCH peak_buffer_bytes={} (one part) process {hwm}",
        rec.peak_buffer_bytes
    );
}

/// Exports follow the scopes of the routes that show the same data: a read key exports the
/// ledger, batches and tasks, but not usage, webhook deliveries or the archive (addresses,
/// user agents, endpoint URLs, allowlists), and cannot fetch such an export an admin made.
#[tokio::test]
async fn a_read_key_exports_money_and_work_but_not_admin_data() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.account_with(1_000).await;
    let r = app
        .post(
            "/v1/api-keys",
            &admin,
            &json!({"request_id": "reader", "name": "finance", "scopes": ["read"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let reader = r.body["secret"].as_str().unwrap_or_default().to_string();
    for dataset in ["usage", "webhook_deliveries", "account_archive"] {
        let body =
            json!({"request_id": format!("r-{dataset}"), "dataset": dataset, "format": "json"});
        let r = app.post("/v1/exports", &reader, &body).await;
        assert_eq!(
            (r.status, r.code()),
            (403, "insufficient_scope"),
            "{dataset}"
        );
        assert_eq!(r.body["error"]["details"]["required_scope"], "admin");
    }
    for dataset in ["ledger", "batches", "tasks"] {
        let body =
            json!({"request_id": format!("r-{dataset}"), "dataset": dataset, "format": "csv"});
        export(&app, &reader, body).await;
    }
    // An admin's usage export: the admin downloads it; the reader may not, and its list
    // shows the export without link or manifest.
    let body = json!({"request_id": "a-usage", "dataset": "usage", "format": "json"});
    let e = export(&app, &admin, body.clone()).await;
    let id = e["id"].as_str().unwrap_or_default();
    assert!(e["download_url"].is_string());
    let r = app.get(&format!("/v1/exports/{id}"), &reader).await;
    assert_eq!((r.status, r.code()), (403, "insufficient_scope"));
    // Replaying the admin's request_id with the reader's key is refused as well.
    let r = app.post("/v1/exports", &reader, &body).await;
    assert_eq!((r.status, r.code()), (403, "insufficient_scope"));
    let listed = app.get("/v1/exports", &reader).await.body;
    let usage = listed["data"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["id"] == id)
        .cloned()
        .unwrap_or_default();
    assert_eq!(usage["status"], "completed", "{listed}");
    assert!(
        usage["download_url"].is_null() && usage["manifest"].is_null(),
        "{usage}"
    );
}

/// A queued export whose message was lost is sent again when it is read, but once a minute
/// however often it is read: each message starts a run, and a reader may poll every second.
#[tokio::test]
async fn reading_a_stuck_export_sends_it_again_once_a_minute_not_once_a_read() {
    use shared::ports::queue::QueueName;
    let app = TestApp::spawn().await;
    let (_, key) = app.account_with(1_000).await;
    let body = json!({"request_id": "stuck", "dataset": "ledger", "format": "csv"});
    let r = app.post("/v1/exports", &key, &body).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap_or_default().to_string();
    // The message is lost.
    let queue = app.svc.queue.clone();
    let lost: Vec<String> = queue
        .receive(QueueName::Exports, 0)
        .await
        .expect("receive")
        .into_iter()
        .map(|m| m.receipt)
        .collect();
    queue
        .delete(QueueName::Exports, &lost)
        .await
        .expect("delete");
    app.clock.advance_ms(61_000);
    for _ in 0..30 {
        let r = app.get(&format!("/v1/exports/{id}"), &key).await;
        assert_eq!((r.status, r.body["status"].as_str()), (200, Some("queued")));
    }
    let sent = queue.receive(QueueName::Exports, 0).await.expect("receive");
    assert_eq!(sent.len(), 1, "one message for thirty reads");
    for m in &sent {
        queue
            .release(QueueName::Exports, &m.receipt, 0)
            .await
            .expect("release");
    }
    app.run_until_idle().await;
    let done = app.get(&format!("/v1/exports/{id}"), &key).await;
    assert_eq!(done.body["status"], "completed", "{:?}", done.body);
}

/// A second message for an export whose run may still be alive does not take over (the
/// displaced run would fail half-way); once the function's timeout has passed since the run
/// started, the run is dead and the next message runs it again, once.
#[tokio::test]
async fn a_duplicate_message_leaves_a_live_run_alone_and_a_dead_one_is_taken_over() {
    use shared::service::exports::{run, EXPORT_RUN_LIFETIME_MS};
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(1_000).await;
    let body = json!({"request_id": "dup", "dataset": "ledger", "format": "csv"});
    let r = app.post("/v1/exports", &key, &body).await;
    let id = r.body["id"].as_str().unwrap_or_default().to_string();
    // A run started (its worker is busy with the file) and never reported back.
    let rec = app
        .svc
        .exports
        .get(&acct, &id)
        .await
        .expect("read")
        .expect("export");
    let started = app.svc.now_ms();
    assert!(app
        .svc
        .exports
        .start_run(&rec, 1, "upload-of-the-live-run", started)
        .await
        .expect("start"));
    // A duplicate message meanwhile: the live run keeps its export.
    app.clock.advance_ms(EXPORT_RUN_LIFETIME_MS - 1_000);
    run(&app.svc, &acct, &id).await.expect("duplicate");
    let still = app
        .svc
        .exports
        .get(&acct, &id)
        .await
        .expect("read")
        .expect("export");
    assert_eq!((still.status.as_str(), still.run), ("running", 1));
    // Past the function's timeout the run is dead: the redelivered message takes over.
    app.clock.advance_ms(2_000);
    run(&app.svc, &acct, &id).await.expect("takeover");
    let done = app.get(&format!("/v1/exports/{id}"), &key).await.body;
    assert_eq!(done["status"], "completed", "{done}");
    let rec = app
        .svc
        .exports
        .get(&acct, &id)
        .await
        .expect("read")
        .expect("export");
    assert_eq!(rec.run, 2);
}

/// One account's exports take at most `RUNNING_PER_ACCOUNT` of the export function's workers:
/// the next one waits its turn on the queue, and another account's export is not held up.
#[tokio::test]
async fn an_account_runs_its_share_of_exports_and_another_account_is_not_held_up() {
    use shared::service::exports::{EXPORT_RUN_LIFETIME_MS, RUNNING_PER_ACCOUNT, SHARE_WAIT_SECS};
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(1_000).await;
    let (_, other_key) = app.account_with(1_000).await;
    let mut ids = Vec::new();
    for i in 0..=RUNNING_PER_ACCOUNT {
        let body =
            json!({"request_id": format!("share-{i}"), "dataset": "ledger", "format": "csv"});
        let r = app.post("/v1/exports", &key, &body).await;
        assert_eq!(r.status, 202, "{:?}", r.body);
        ids.push(r.body["id"].as_str().unwrap_or_default().to_string());
    }
    // The first ones are running: their workers are busy with large files.
    for id in &ids[..RUNNING_PER_ACCOUNT] {
        let rec = app
            .svc
            .exports
            .get(&acct, id)
            .await
            .expect("read")
            .expect("export");
        let now = app.svc.now_ms();
        assert!(app
            .svc
            .exports
            .start_run(&rec, 1, "upload-in-progress", now)
            .await
            .expect("start"));
    }
    let other = app
        .post(
            "/v1/exports",
            &other_key,
            &json!({"request_id": "other", "dataset": "ledger", "format": "csv"}),
        )
        .await;
    let other_id = other.body["id"].as_str().unwrap_or_default().to_string();
    let status = |k: String, id: String| {
        let app = &app;
        async move {
            app.get(&format!("/v1/exports/{id}"), &k).await.body["status"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        }
    };
    app.run_until_idle().await;
    let waiting = ids[RUNNING_PER_ACCOUNT].clone();
    assert_eq!(status(other_key.clone(), other_id).await, "completed");
    assert_eq!(status(key.clone(), waiting.clone()).await, "queued");
    // It looks again when its wait is over; the others still run, so it waits again.
    app.clock
        .advance_ms(i64::try_from(SHARE_WAIT_SECS).unwrap_or(30) * 1_000);
    app.run_until_idle().await;
    assert_eq!(status(key.clone(), waiting.clone()).await, "queued");
    // Those runs end (here: die, past the function's lifetime); its turn comes.
    app.clock.advance_ms(EXPORT_RUN_LIFETIME_MS);
    app.run_until_idle().await;
    assert_eq!(status(key.clone(), waiting).await, "completed");
}
