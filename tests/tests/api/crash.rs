//! A crash between any two writes of batch creation loses nothing and doubles nothing.

use integration_tests::{fail_once_at, tasks, TestApp};
use serde_json::json;
use shared::service::batches::{MATERIALIZE_LEASE_MS, WITH_HOLD_MAX_TASKS};
use shared::service::pipeline::sweeper::STALL_MS;

const POINTS: [&str; 4] = [
    "submit.after_input",
    "submit.after_hold",
    "submit.after_task_chunk",
    "submit.after_tasks",
];

#[tokio::test]
async fn a_crash_at_any_point_converges_to_one_batch_and_one_hold() {
    for point in POINTS {
        let app = TestApp::spawn_with(fail_once_at(point)).await;
        let (acct, key) = app.account_with(100_000).await;
        // 250 tasks: three chunks of task writes, so the crash can fall between two of them.
        let body = json!({"request_id": "crashy", "model": "sora-2", "tasks": tasks(250)});
        let hold = 250 * 49;

        let first = app.post("/v1/batches", &key, &body).await;
        assert_eq!(
            (first.status, first.code()),
            (500, "internal_error"),
            "{point}: {:?}",
            first.body
        );

        // Right after the crash: either nothing happened, or the whole hold did.
        let a = app.account(&acct).await;
        let batches = app.batches_of(&acct).await;
        let holds = app.ledger_entries(&acct, "pre_deduct").await;
        match batches.len() {
            0 => assert_eq!(
                (a.balance.value(), holds.len()),
                (100_000, 0),
                "{point}: no batch, no hold"
            ),
            1 => assert_eq!(
                (a.balance.value(), a.held.value(), holds.len()),
                (100_000 - hold, hold, 1),
                "{point}: batch with its hold"
            ),
            n => panic!("{point}: {n} batches"),
        }
        app.assert_invariants().await;

        // The client retries with the same request_id and converges on one batch.
        let retry = app.post("/v1/batches", &key, &body).await;
        assert_eq!(retry.status, 201, "{point}: {:?}", retry.body);
        // Once the dead writer's lease has run out, a retry also finishes its task records.
        app.clock.advance_ms(MATERIALIZE_LEASE_MS + 1);
        let again = app.post("/v1/batches", &key, &body).await;
        assert_eq!((again.status, again.replayed()), (201, true), "{point}");
        assert_eq!(again.body["id"], retry.body["id"], "{point}");

        let batches = app.batches_of(&acct).await;
        assert_eq!(batches.len(), 1, "{point}");
        assert_eq!(
            app.ledger_entries(&acct, "pre_deduct").await.len(),
            1,
            "{point}"
        );
        assert_eq!(
            app.account(&acct).await.balance.value(),
            100_000 - hold,
            "{point}"
        );
        let id = batches[0].batch_id.clone();
        let got = app.get(&format!("/v1/batches/{id}"), &key).await;
        assert_eq!(got.body["status"], "queued", "{point}");
        let mut count = 0;
        let mut path = format!("/v1/batches/{id}/tasks?limit=200");
        loop {
            let page = app.get(&path, &key).await;
            for (i, t) in page.body["data"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                assert_eq!(
                    t["index"],
                    count + i,
                    "{point}: tasks in order, none missing"
                );
            }
            count += page.body["data"].as_array().map(Vec::len).unwrap_or(0);
            match page.body["next_cursor"].as_str() {
                Some(c) => path = format!("/v1/batches/{id}/tasks?limit=200&cursor={c}"),
                None => break,
            }
        }
        assert_eq!(count, 250, "{point}: every task record exists once");
        app.assert_invariants().await;
    }
}

#[tokio::test]
async fn a_lost_race_on_the_account_is_retried_not_failed() {
    // Stands in for DynamoDB's TransactionConflict, which the emulator never raises.
    let app = TestApp::spawn_with(fail_once_at("commit_money.conflict")).await;
    let (acct, key) = app.account_with(10_000).await;
    let r = app
        .post(
            "/v1/batches",
            &key,
            &json!({"request_id": "conflict", "model": "sora-2", "tasks": tasks(10)}),
        )
        .await;
    assert_eq!((r.status, r.replayed()), (201, false), "{:?}", r.body);
    assert_eq!(app.ledger_entries(&acct, "pre_deduct").await.len(), 1);
    app.assert_invariants().await;
}

#[tokio::test]
async fn recovery_waits_for_the_lease_so_it_never_races_a_live_writer() {
    let app = TestApp::spawn_with(fail_once_at("submit.after_hold")).await;
    let (acct, key) = app.account_with(10_000).await;
    // A batch too large to come whole out of its hold.
    let n = WITH_HOLD_MAX_TASKS + 4;
    let body = json!({"request_id": "lease", "model": "sora-2", "tasks": tasks(n)});
    assert_eq!(app.post("/v1/batches", &key, &body).await.status, 500);
    // Within the lease a retry replays but does not write tasks: the writer may be alive.
    let r = app.post("/v1/batches", &key, &body).await;
    assert_eq!((r.status, r.replayed()), (201, true));
    let batch = &app.batches_of(&acct).await[0];
    assert_eq!(batch.status, shared::domain::batch::BatchStatus::Accepted);
    let (tasks_now, _) = app
        .svc
        .tasks
        .list(&batch.batch_id, 100, None)
        .await
        .unwrap_or_default();
    assert!(tasks_now.is_empty());
    // After it, the sweeper's recovery writes them (as the sweeper function: what it needs
    // its role to allow is recorded for the roles check).
    app.clock.advance_ms(MATERIALIZE_LEASE_MS + 1);
    app.sweep().await;
    let (tasks_now, _) = app
        .svc
        .tasks
        .list(&batch.batch_id, 100, None)
        .await
        .unwrap_or_default();
    assert_eq!(tasks_now.len(), n);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_small_batch_comes_whole_out_of_its_hold_and_a_lost_first_window_is_sent_again() {
    let app = TestApp::spawn_with(fail_once_at("submit.after_hold")).await;
    let (acct, key) = app.account_with(10_000).await;
    let n = WITH_HOLD_MAX_TASKS;
    let body = json!({"request_id": "small", "model": "sora-2", "tasks": tasks(n)});
    // The crash falls after the one transaction and before the first window is sent.
    assert_eq!(app.post("/v1/batches", &key, &body).await.status, 500);
    let batches = app.batches_of(&acct).await;
    assert_eq!(batches.len(), 1);
    let batch = &batches[0];
    // Already whole: queued, its window claimed, every task record and its shard written.
    assert_eq!(batch.status, shared::domain::batch::BatchStatus::Queued);
    let window = app.account(&acct).await.max_concurrency.min(n as u32);
    assert_eq!(batch.next_dispatch, window);
    assert!(
        batch.input_key.is_empty(),
        "no input stored to recover from"
    );
    let (records, more) = app
        .svc
        .tasks
        .list(&batch.batch_id, 100, None)
        .await
        .unwrap_or_default();
    assert_eq!((records.len(), more), (n, false));
    let shards = app
        .svc
        .progress
        .all(&batch.batch_id)
        .await
        .unwrap_or_default();
    assert_eq!(shards.len(), 1);
    app.assert_invariants().await;

    // The retry replays the same batch and writes nothing more.
    let retry = app.post("/v1/batches", &key, &body).await;
    assert_eq!((retry.status, retry.replayed()), (201, true));
    assert_eq!(retry.body["id"], batch.batch_id.as_str());
    assert_eq!(retry.body["status"], "queued");

    // Nothing was sent: the tasks stand still until the sweeper finds the lost window.
    app.run_until_idle().await;
    let (records, _) = app
        .svc
        .tasks
        .list(&batch.batch_id, 100, None)
        .await
        .unwrap_or_default();
    assert!(records
        .iter()
        .all(|t| t.status == shared::domain::batch::TaskStatus::Queued));
    app.clock.advance_ms(STALL_MS);
    app.sweep().await;
    app.drive_to_settlement(&acct, &batch.batch_id, 1_000, 10 * 60_000)
        .await;
    let b = app
        .get(&format!("/v1/batches/{}", batch.batch_id), &key)
        .await
        .body;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["counts"]["succeeded"], n);
    assert_eq!(app.ledger_entries(&acct, "pre_deduct").await.len(), 1);
    app.assert_invariants().await;
}
