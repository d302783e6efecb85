//! The task pipeline end to end: real handlers fed by the SQS pump, the simulated provider,
//! a manual clock. Every test ends with the invariants (conservation, closure, tallies).

use integration_tests::{fail_once_at, fail_once_at_seen, tasks, TestApp};
use serde_json::{json, Value};
use shared::adapters::providers::simulated::Simulated;
use shared::domain::batch::BatchStatus;
use shared::ports::queue::QueueName;
use shared::service::batches::WITH_HOLD_MAX_TASKS;
use std::sync::atomic::Ordering;

fn sim(fail: f64, reject: f64) -> Simulated {
    Simulated {
        seed: 7,
        latency_ms: 4_000,
        fail_rate: fail,
        reject_rate: reject,
        throttle_rate: 0.0,
        outage: false,
    }
}

async fn submit(app: &TestApp, key: &str, model: &str, n: usize) -> String {
    let r = app.post("/v1/batches", key, &json!({"request_id": format!("p-{}", rand::random::<u32>()), "model": model, "tasks": tasks(n)})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["id"].as_str().unwrap_or_default().to_string()
}

async fn all_tasks(app: &TestApp, key: &str, batch: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut path = format!("/v1/batches/{batch}/tasks?limit=200");
    loop {
        let page = app.get(&path, key).await;
        out.extend(page.body["data"].as_array().cloned().unwrap_or_default());
        match page.body["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/batches/{batch}/tasks?limit=200&cursor={c}"),
            None => return out,
        }
    }
}

#[tokio::test]
async fn a_batch_runs_to_settlement_and_refunds_each_failure_in_real_time() {
    let app = TestApp::spawn_sim(sim(0.3, 0.3)).await;
    let (acct, key) = app.account_with(100_000).await;
    let batch = submit(&app, &key, "sora-2", 30).await;
    app.drive_to_settlement(&acct, &batch, 2_000, 10 * 60_000)
        .await;

    let b = app.get(&format!("/v1/batches/{batch}"), &key).await.body;
    assert_eq!(b["status"], "completed");
    let c = &b["counts"];
    let (ok, failed, rejected) = (
        c["succeeded"].as_i64().unwrap_or(0),
        c["failed"].as_i64().unwrap_or(0),
        c["rejected"].as_i64().unwrap_or(0),
    );
    assert_eq!(ok + failed + rejected, 30);
    assert!(
        failed > 0 && rejected > 0 && ok > 0,
        "the seed gives a mix: {c}"
    );
    assert_eq!(b["settlement"]["charged"], 49 * (ok + rejected));
    assert_eq!(b["settlement"]["refunded"], 49 * failed);
    let refunds = app.ledger_entries(&acct, "refund").await;
    assert_eq!(refunds.len() as i64, failed, "one refund per failed task");
    let credits = app.get("/v1/credits", &key).await.body;
    assert_eq!(credits["balance"], 100_000 - 49 * (ok + rejected));
    assert_eq!(credits["held"], 0);
    assert_eq!(credits["lifetime_charged"], 49 * (ok + rejected));

    // Task details: errors for failures and rejections, a working link for successes.
    let tasks = all_tasks(&app, &key, &batch).await;
    let failed_task = tasks
        .iter()
        .find(|t| t["status"] == "failed")
        .cloned()
        .unwrap_or_default();
    assert_eq!(failed_task["error"]["code"], "model_error");
    let rejected_task = tasks
        .iter()
        .find(|t| t["status"] == "rejected")
        .cloned()
        .unwrap_or_default();
    assert_eq!(rejected_task["error"]["code"], "content_policy");
    let done = tasks
        .iter()
        .find(|t| t["status"] == "succeeded")
        .cloned()
        .unwrap_or_default();
    let one = app
        .get(
            &format!("/v1/tasks/{}", done["id"].as_str().unwrap_or("")),
            &key,
        )
        .await
        .body;
    let url = one["download_url"]
        .as_str()
        .expect("a download link")
        .to_string();
    assert!(
        url.contains("X-Amz-Expires=3600") && url.contains("/videos/"),
        "{url}"
    );
    let mp4 = app.download(&url).await;
    assert_eq!(&mp4[4..8], b"ftyp", "a real MP4 container");

    let events = app.events_of(&acct).await;
    // At least once, always with the same id (consumers deduplicate on it).
    let completed: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "batch.completed")
        .collect();
    assert!(!completed.is_empty());
    assert!(completed.iter().all(|e| e["id"] == completed[0]["id"]));
    assert_eq!(completed[0]["data"]["id"], batch.as_str());
    app.assert_invariants().await;
}

#[tokio::test]
async fn every_message_twice_and_out_of_order_moves_money_once() {
    let app = TestApp::spawn_sim(sim(0.4, 0.1)).await;
    let (acct, key) = app.account_with(100_000).await;
    let batch = submit(&app, &key, "sora-2", 24).await;
    for _ in 0..200 {
        app.run_until_idle_with(true).await;
        let b = app
            .svc
            .batches
            .get(&acct, &batch)
            .await
            .ok()
            .flatten()
            .expect("batch");
        if b.status == BatchStatus::Completed {
            break;
        }
        app.clock.advance_ms(2_000);
    }
    let b = app.get(&format!("/v1/batches/{batch}"), &key).await.body;
    assert_eq!(b["status"], "completed", "{b}");
    let failed = b["counts"]["failed"].as_u64().unwrap_or(0);
    assert!(failed > 0);
    assert_eq!(
        app.ledger_entries(&acct, "refund").await.len() as u64,
        failed,
        "no double refund"
    );
    let succeeded = all_tasks(&app, &key, &batch)
        .await
        .iter()
        .filter(|t| t["status"] == "succeeded")
        .count() as u64;
    assert_eq!(
        succeeded,
        b["counts"]["succeeded"].as_u64().unwrap_or(0),
        "no double success"
    );
    assert_eq!(
        app.events_of(&acct)
            .await
            .iter()
            .filter(|e| e["type"] == "batch.completed")
            .map(|e| e["id"].clone())
            .collect::<std::collections::HashSet<_>>()
            .len(),
        1
    );
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_worker_dying_between_the_provider_and_our_write_loses_nothing() {
    for point in [
        "worker.after_video",
        "end.after_mark",
        "worker.after_slot",
        "worker.after_claim",
        "worker.after_submit",
        "dispatch.after_claim",
        "end.after_hand_over",
    ] {
        let (faults, fired) = fail_once_at_seen(point);
        let app = TestApp::spawn_full(faults, sim(0.0, 0.0)).await;
        let (acct, key) = app.account_with(10_000).await;
        // More tasks than a batch created with its hold may have, so that the submission's
        // own first dispatch passes `dispatch.after_claim` too.
        let n = WITH_HOLD_MAX_TASKS + 4;
        let batch = submit(&app, &key, "sora-2", n).await;
        // A lost dispatch is only found by the sweeper.
        for _ in 0..100 {
            app.run_until_idle().await;
            if app
                .svc
                .batches
                .get(&acct, &batch)
                .await
                .ok()
                .flatten()
                .is_some_and(|b| b.status == BatchStatus::Completed)
            {
                break;
            }
            app.clock.advance_ms(60_000);
            app.sweep().await;
        }
        let b = app.get(&format!("/v1/batches/{batch}"), &key).await.body;
        assert!(fired.load(Ordering::SeqCst), "{point}: the crash happened");
        assert_eq!(b["status"], "completed", "{point}: {b}");
        assert_eq!(b["counts"]["succeeded"], n, "{point}");
        assert_eq!(
            app.account(&acct).await.balance.value(),
            10_000 - 49 * n as i64,
            "{point}"
        );
        app.assert_invariants().await;
    }
}

#[tokio::test]
async fn an_end_that_dies_after_handing_its_slot_over_sends_it_again_and_leaks_no_slot() {
    let app = TestApp::spawn_full(fail_once_at("end.after_hand_over"), sim(0.0, 0.0)).await;
    let (acct, key) = app.account_with(10_000).await;
    let batch = submit(&app, &key, "sora-2", 10).await;
    // No sweep: the redelivered end alone must send the hand-over it died before sending
    // (without it the task it was for never runs and the batch never completes).
    app.drive_to_settlement(&acct, &batch, 1_000, 10 * 60_000)
        .await;
    let b = app.get(&format!("/v1/batches/{batch}"), &key).await.body;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["counts"]["succeeded"], 10);
    let a = app.account(&acct).await;
    assert_eq!(
        a.running, 0,
        "every slot back: none leaked, none given back twice"
    );
    assert_eq!(a.balance.value(), 10_000 - 490);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_provider_outage_fails_the_whole_batch_and_refunds_every_task() {
    let app = TestApp::spawn_sim(Simulated {
        outage: true,
        ..sim(0.0, 0.0)
    })
    .await;
    let (acct, key) = app.account_with(10_000).await;
    let batch = submit(&app, &key, "sora-2", 10).await;
    app.drive_to_settlement(&acct, &batch, 30_000, 90 * 60_000)
        .await;
    let b = app.get(&format!("/v1/batches/{batch}"), &key).await.body;
    // A task that held a slot retries until its deadline and fails provider_unavailable,
    // unless the sweeper's deadline check reaches it before its next (randomly backed-off)
    // retry does: then it, like the tasks waiting behind it, times out. Which one depends on
    // the jitter; both end refunded, and that is what the outage promise is.
    let failed = b["counts"]["failed"].as_u64().unwrap_or(0);
    assert_eq!(
        failed + b["counts"]["timed_out"].as_u64().unwrap_or(0),
        10,
        "{b}"
    );
    assert_eq!(b["settlement"]["refunded"], 490);
    assert_eq!(
        app.account(&acct).await.balance.value(),
        10_000,
        "balance fully restored"
    );
    let tasks = all_tasks(&app, &key, &batch).await;
    for t in tasks.iter().filter(|t| t["status"] == "failed") {
        assert_eq!(t["error"]["code"], "provider_unavailable", "{t}");
    }
    assert_eq!(app.ledger_entries(&acct, "refund").await.len(), 10);
    app.assert_invariants().await;
}

#[tokio::test]
async fn past_the_deadline_a_task_times_out_refunded_and_a_late_success_changes_nothing() {
    // The provider would take two hours; the sora-2 deadline is ten minutes.
    let app = TestApp::spawn_sim(Simulated {
        latency_ms: 2 * 3_600_000,
        ..sim(0.0, 0.0)
    })
    .await;
    let (acct, key) = app.account_with(10_000).await;
    let batch = submit(&app, &key, "sora-2", 10).await;
    app.run_until_idle().await;
    let running = app.get(&format!("/v1/batches/{batch}"), &key).await.body;
    assert_eq!(
        running["counts"]["running"], 4,
        "the account's concurrency: {running}"
    );
    // Past the deadline the sweeper times tasks out (workers may all be gone); waiting tasks
    // then start, and time out in their turn.
    let mut swept = 0;
    for _ in 0..10 {
        app.clock.advance_ms(11 * 60_000);
        swept += app.sweep().await.timed_out;
        app.run_until_idle().await;
        if app
            .svc
            .batches
            .get(&acct, &batch)
            .await
            .ok()
            .flatten()
            .is_some_and(|b| b.status == BatchStatus::Completed)
        {
            break;
        }
    }
    assert!(swept >= 4, "the sweeper enforced deadlines: {swept}");
    let b = app.get(&format!("/v1/batches/{batch}"), &key).await.body;
    assert_eq!(
        (b["status"].clone(), b["counts"]["timed_out"].clone()),
        (json!("completed"), json!(10)),
        "{b}"
    );
    assert_eq!(app.account(&acct).await.balance.value(), 10_000);
    // The provider finishes long after: nothing moves.
    app.clock.advance_ms(3 * 3_600_000);
    app.run_until_idle().await;
    app.sweep().await;
    app.run_until_idle().await;
    assert_eq!(app.ledger_entries(&acct, "refund").await.len(), 10);
    assert_eq!(
        all_tasks(&app, &key, &batch)
            .await
            .iter()
            .filter(|t| t["status"] == "timed_out")
            .count(),
        10
    );
    app.assert_invariants().await;
}

#[tokio::test]
async fn cancel_in_the_middle_charges_started_work_releases_the_rest_and_keeps_finished_ones() {
    let app = TestApp::spawn_sim(Simulated {
        latency_ms: 20_000,
        ..sim(0.0, 0.0)
    })
    .await;
    let (acct, key) = app.account_with(10_000).await;
    let batch = submit(&app, &key, "sora-2", 20).await;
    // Concurrency 4 -> 8 in flight: run until some have finished.
    for _ in 0..20 {
        app.run_until_idle().await;
        let b = app.get(&format!("/v1/batches/{batch}"), &key).await.body;
        if b["counts"]["succeeded"].as_u64().unwrap_or(0) >= 4 {
            break;
        }
        app.clock.advance_ms(5_000);
    }
    let body = json!({"request_id": "stop-it"});
    let r = app
        .post(&format!("/v1/batches/{batch}/cancel"), &key, &body)
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let note = r.body["note"].as_str().unwrap_or("");
    assert!(note.contains("2.2") && note.contains("released"), "{note}");
    assert_eq!(r.body["batch"]["cancel_requested"], true);
    let again = app
        .post(&format!("/v1/batches/{batch}/cancel"), &key, &body)
        .await;
    assert_eq!((again.status, again.replayed()), (202, true));
    app.drive_to_settlement(&acct, &batch, 5_000, 10 * 60_000)
        .await;
    let b = app.get(&format!("/v1/batches/{batch}"), &key).await.body;
    let count = |k: &str| b["counts"][k].as_i64().unwrap_or(-1);
    let (ok, cancelled, released) = (count("succeeded"), count("cancelled"), count("released"));
    // Concurrency 4: the tasks at the provider when the cancel landed are charged; the
    // ones still waiting for a slot never reached it and are released.
    assert!(ok >= 4 && cancelled > 0 && released > 0, "{b}");
    assert_eq!(ok + cancelled + released, 20, "{b}");
    assert_eq!(b["settlement"]["charged"], 49 * (ok + cancelled), "{b}");
    assert_eq!(b["settlement"]["released"], 49 * released, "{b}");
    assert_eq!(b["settlement"]["refunded"], 0);
    assert_eq!(b["credits"]["released"], 49 * released, "{b}");
    assert!(app.ledger_entries(&acct, "refund").await.is_empty());
    let releases = app.ledger_entries(&acct, "release").await;
    assert_eq!(releases.len() as i64, released);
    assert!(releases.iter().all(|e| e["amount"] == 49));
    assert_eq!(
        app.account(&acct).await.balance.value(),
        10_000 - 49 * (ok + cancelled)
    );
    // Every cancelled task says whether it was charged; both kinds read `cancelled`.
    let tasks = all_tasks(&app, &key, &batch).await;
    let of = |charged: bool| {
        tasks
            .iter()
            .filter(|t| t["status"] == "cancelled" && t["charged"] == charged)
            .count() as i64
    };
    assert_eq!((of(true), of(false)), (cancelled, released));
    let late = app
        .post(
            &format!("/v1/batches/{batch}/cancel"),
            &key,
            &json!({"request_id": "too-late"}),
        )
        .await;
    assert_eq!((late.status, late.code()), (409, "batch_completed"));
    app.assert_invariants().await;
}

/// The case the cancel rule is for: a batch cancelled before any of it reached a provider
/// costs nothing, and says so in its ledger, its settlement and its events.
#[tokio::test]
async fn a_batch_cancelled_before_any_task_started_is_released_whole() {
    let app = TestApp::spawn_sim(sim(0.0, 0.0)).await;
    let (acct, key) = app.account_with(10_000).await;
    let batch = submit(&app, &key, "veo-pro", 10).await;
    let held = app.account(&acct).await;
    assert_eq!(
        (held.balance.value(), held.held.value()),
        (10_000 - 5_990, 5_990)
    );
    let r = app
        .post(
            &format!("/v1/batches/{batch}/cancel"),
            &key,
            &json!({"request_id": "never-mind"}),
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    app.drive_to_settlement(&acct, &batch, 5_000, 10 * 60_000)
        .await;
    let b = app.get(&format!("/v1/batches/{batch}"), &key).await.body;
    assert_eq!(
        (
            b["counts"]["released"].as_i64(),
            b["counts"]["cancelled"].as_i64()
        ),
        (Some(10), Some(0)),
        "{b}"
    );
    assert_eq!(
        (
            b["settlement"]["charged"].as_i64(),
            b["settlement"]["released"].as_i64()
        ),
        (Some(0), Some(5_990))
    );
    let a = app.account(&acct).await;
    assert_eq!(
        (
            a.balance.value(),
            a.held.value(),
            a.lifetime_charged.value(),
            a.lifetime_released.value()
        ),
        (10_000, 0, 0, 5_990)
    );
    assert_eq!(app.ledger_entries(&acct, "release").await.len(), 10);
    let summary = app.get("/v1/credits", &key).await.body;
    assert_eq!(summary["lifetime_released"], 5_990, "{summary}");
    app.assert_invariants().await;
}

#[tokio::test]
async fn the_accounts_concurrency_cap_is_never_exceeded() {
    let app = TestApp::spawn_sim(Simulated {
        latency_ms: 10_000,
        ..sim(0.0, 0.0)
    })
    .await;
    let (acct, key) = app.account_with(100_000).await; // max_concurrency 4
    let a = submit(&app, &key, "sora-2", 12).await;
    let b = submit(&app, &key, "sora-2", 12).await;
    let mut peak = 0;
    for _ in 0..200 {
        app.run_until_idle().await;
        let mut running = 0;
        for batch in [&a, &b] {
            running += all_tasks(&app, &key, batch)
                .await
                .iter()
                .filter(|t| t["status"] == "running")
                .count();
        }
        assert!(
            running <= 4,
            "{running} tasks running at the provider at once"
        );
        assert!(app.account(&acct).await.running <= 4);
        peak = peak.max(running);
        let done = app
            .svc
            .batches
            .get(&acct, &a)
            .await
            .ok()
            .flatten()
            .is_some_and(|x| x.status == BatchStatus::Completed)
            && app
                .svc
                .batches
                .get(&acct, &b)
                .await
                .ok()
                .flatten()
                .is_some_and(|x| x.status == BatchStatus::Completed);
        if done {
            break;
        }
        app.clock.advance_ms(5_000);
    }
    assert_eq!(peak, 4, "the cap is reached, not just respected");
    assert_eq!(app.account(&acct).await.running, 0, "every slot released");
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_lowered_cap_holds_once_the_tasks_above_it_have_ended() {
    let app = TestApp::spawn_sim(Simulated {
        latency_ms: 10_000,
        ..sim(0.0, 0.0)
    })
    .await;
    let (acct, key) = app.account_with(100_000).await; // max_concurrency 4
    let batch = submit(&app, &key, "sora-2", 12).await;
    app.run_until_idle().await;
    assert_eq!(app.account(&acct).await.running, 4);
    let lower = serde_json::from_value(json!({"max_concurrency": 2})).expect("terms");
    shared::service::accounts::change_terms(&app.svc, &acct, lower)
        .await
        .expect("lower the cap");
    // The four already running end within their 10 s job and a poll; the ends above the new
    // cap give their slots back instead of handing them on.
    let mut elapsed = 0;
    for _ in 0..200 {
        app.clock.advance_ms(5_000);
        elapsed += 5_000;
        app.run_until_idle().await;
        if elapsed >= 30_000 {
            let running = all_tasks(&app, &key, &batch)
                .await
                .iter()
                .filter(|t| t["status"] == "running")
                .count();
            assert!(running <= 2, "{running} running under a cap of 2");
            assert!(app.account(&acct).await.running <= 2);
        }
        let b = app.get(&format!("/v1/batches/{batch}"), &key).await.body;
        if b["status"] == "completed" {
            assert_eq!(b["counts"]["succeeded"], 12, "{b}");
            assert_eq!(app.account(&acct).await.running, 0, "every slot back");
            // Lowered by two, the cap takes two slots back: of the four tasks that ran when
            // it changed, two gave theirs back and two handed theirs to the next task, though
            // all four ended together and each saw four slots in use.
            let mut handed = 0;
            for idx in 0..4 {
                let t = app.svc.tasks.get(&batch, idx).await.expect("read");
                handed += usize::from(t.expect("task").slot_to.is_some());
            }
            assert_eq!(
                handed, 2,
                "slots handed on by the four above the lowered cap"
            );
            app.assert_invariants().await;
            return;
        }
    }
    panic!("the batch did not complete under the lowered cap");
}

#[tokio::test]
async fn after_an_outage_every_unfinished_batch_settles() {
    let app = TestApp::spawn_sim(Simulated {
        latency_ms: 30_000,
        ..sim(0.1, 0.0)
    })
    .await;
    let (acct, key) = app.account_with(100_000).await;
    let a = submit(&app, &key, "sora-2", 12).await;
    let b = submit(&app, &key, "veo-pro", 10).await;
    app.run_until_idle().await;
    // Every worker stops; their messages are lost; an hour passes.
    purge(&app, QueueName::Tasks).await;
    app.clock.advance_ms(3_600_000);
    // Restart: the sweeper re-drives everything.
    for _ in 0..100 {
        app.sweep().await;
        app.run_until_idle().await;
        let mut settled = true;
        for id in [&a, &b] {
            settled &= app
                .svc
                .batches
                .get(&acct, id)
                .await
                .ok()
                .flatten()
                .is_some_and(|x| x.status == BatchStatus::Completed);
        }
        if settled {
            break;
        }
        app.clock.advance_ms(60_000);
    }
    for id in [&a, &b] {
        let v = app.get(&format!("/v1/batches/{id}"), &key).await.body;
        assert_eq!(v["status"], "completed", "{v}");
    }
    app.assert_invariants().await;
}

async fn purge(app: &TestApp, q: QueueName) {
    loop {
        let msgs = app.svc.queue.receive(q, 0).await.expect("receive");
        if msgs.is_empty() {
            return;
        }
        let receipts: Vec<String> = msgs.into_iter().map(|m| m.receipt).collect();
        app.svc.queue.delete(q, &receipts).await.expect("delete");
    }
}

#[tokio::test]
async fn an_unavailable_model_is_refused_before_any_charge() {
    let app = TestApp::spawn().await;
    let (acct, key) = app.account_with(10_000).await;
    let r = app
        .send(
            "PUT",
            "/admin/v1/models/veo-pro",
            Some(&app.operator),
            Some(
                json!({"status": "unavailable", "reason": "upstream retired"})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let models = app.get("/v1/models", &key).await.body;
    let veo = models["data"]
        .as_array()
        .and_then(|m| m.iter().find(|x| x["id"] == "veo-pro"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (veo["status"].clone(), veo["unit_price"].clone()),
        (json!("unavailable"), json!(599))
    );
    let refused = app
        .post(
            "/v1/batches",
            &key,
            &json!({"request_id": "v", "model": "veo-pro", "tasks": tasks(10)}),
        )
        .await;
    assert_eq!((refused.status, refused.code()), (503, "model_unavailable"));
    assert_eq!(app.account(&acct).await.balance.value(), 10_000);
    let ok = app
        .post(
            "/v1/batches",
            &key,
            &json!({"request_id": "s", "model": "sora-2", "tasks": tasks(10)}),
        )
        .await;
    assert_eq!(ok.status, 201);
    app.assert_invariants().await;
}

/// A provider whose every job fails with the kind of body real providers send: our project
/// id and number, a console link, an operator's address.
struct Leaky;

const LEAKY_MESSAGE: &str = "Internal error in projects/acme-video-prod/locations/us-central1/publishers/google \
     (project number 998877665544); details: https://console.cloud.google.com/logs?project=acme-video-prod \
     contact video-ops@acme-internal.example";

#[async_trait::async_trait]
impl shared::ports::Provider for Leaky {
    fn name(&self) -> &'static str {
        "simulated"
    }
    async fn submit(
        &self,
        req: &shared::ports::provider::JobRequest,
    ) -> Result<String, shared::ports::provider::ProviderError> {
        Ok(format!("job-{}", req.task_id))
    }
    async fn poll(
        &self,
        _job_id: &str,
        _now_ms: i64,
    ) -> Result<shared::ports::provider::JobState, shared::ports::provider::ProviderError> {
        Ok(shared::ports::provider::JobState::Failed {
            code: "model_error".into(),
            message: LEAKY_MESSAGE.into(),
        })
    }
    async fn download(
        &self,
        _job_id: &str,
        _video: &shared::ports::provider::Video,
    ) -> Result<Box<dyn shared::ports::provider::VideoStream>, shared::ports::provider::ProviderError>
    {
        Err(shared::ports::provider::ProviderError::Permanent {
            code: "no_video".into(),
            message: "no video".into(),
        })
    }
    async fn cancel(&self, _job_id: &str) -> Result<(), shared::ports::provider::ProviderError> {
        Ok(())
    }
}

/// Our identifiers in a provider's error body stay ours: the task, its event and the task
/// export show the provider's words without them.
#[tokio::test]
async fn provider_error_bodies_reach_customers_without_our_identifiers() {
    let app = TestApp::spawn_on(
        integration_tests::Backend::Memory,
        shared::ports::Faults::none(),
        |_| std::sync::Arc::new(Leaky) as std::sync::Arc<dyn shared::ports::Provider>,
        true,
    )
    .await;
    let (acct, key) = app.account_with(10_000).await;
    let batch = submit(&app, &key, "sora-2", 10).await;
    app.drive_to_settlement(&acct, &batch, 5_000, 10 * 60_000)
        .await;
    let all = all_tasks(&app, &key, &batch).await;
    assert_eq!(all.len(), 10);
    let events = app.events_of(&acct).await;
    let failed_event = events
        .iter()
        .find(|e| e["type"] == "task.failed")
        .cloned()
        .unwrap_or_default();
    for shown in all
        .iter()
        .map(|t| t["error"]["message"].to_string())
        .chain([failed_event["data"]["error"]["message"].to_string()])
    {
        assert!(shown.contains("Internal error in"), "{shown}");
        for ours in [
            "acme-video-prod",
            "998877665544",
            "console.cloud",
            "video-ops@",
        ] {
            assert!(!shown.contains(ours), "{ours} reached a customer: {shown}");
        }
    }
    app.assert_invariants().await;
}

/// An invocation's start marks, end marks and next-task claims each go in one write per
/// shard or batch, not one per task (`adapters::held_starts`, `worker::end_held`). Twenty
/// tasks at concurrency 10, all one shard: the first ten start in one invocation and end in
/// the next (the provider answers within the first poll), handing their slots to the last
/// ten, which do the same. Counted on the emulator (its launcher counts each function's
/// requests).
#[tokio::test]
async fn an_invocations_marks_and_claims_go_in_one_write_per_shard_and_batch() {
    let app = TestApp::spawn_sim(Simulated {
        latency_ms: 1_000,
        ..sim(0.0, 0.0)
    })
    .await;
    let Some(_) = app.aws_side() else {
        return; // the counts are the emulator launcher's
    };
    let (acct, key) = app.account_with_concurrency(100_000, 10).await;
    let before = app.emulator_operations_of("WORKER").await;
    let batch = submit(&app, &key, "sora-2", 20).await;
    app.drive_to_settlement(&acct, &batch, 1_000, 5 * 60_000)
        .await;
    let b = app.get(&format!("/v1/batches/{batch}"), &key).await.body;
    assert_eq!(b["counts"]["succeeded"], 20, "{b}");
    let after = app.emulator_operations_of("WORKER").await;
    let updates = after.get("dynamodb.UpdateItem").copied().unwrap_or(0)
        - before.get("dynamodb.UpdateItem").copied().unwrap_or(0);
    // Ten slots taken and ten given back (one write each), two waves of start marks and two
    // of end marks (a write each), one claim of the second wave, the SLA adds (a write per
    // stored item an invocation's ends fall in, a few): 27 when written. A write per mark
    // and per claim makes it 72.
    assert!(updates <= 36, "{updates} UpdateItem requests: {after:?}");
    app.assert_invariants().await;
}
