//! Use cases over the in-memory twins of every port: the money paths (submission and replay,
//! grants and adjustments, refunds, settlement, cancel), reconciliation and statements, key
//! checks and rate windows. One test binary; each test runs in milliseconds.

mod world;

use serde_json::json;
use shared::domain::batch::BatchStatus;
use shared::domain::idempotency::fingerprint;
use shared::domain::ledger::EntryKind;
use shared::domain::money::Credits;
use shared::domain::task::Outcome;
use shared::ports::records::LedgerRecord;
use shared::ports::store::MoneyMove;
use shared::service::access::{authorize, AccessRequest};
use shared::service::credits::{adjust, grant, AdjustRequest, GrantRequest};
use shared::service::{batches, reconcile, statements, ErrorCode, ServiceError};
use world::{body, fail_at, steady, World};

fn code(e: &ServiceError) -> ErrorCode {
    e.code()
}

#[tokio::test]
async fn a_batch_takes_its_hold_once_and_a_replay_answers_the_same() {
    let w = World::new(steady());
    let c = w.account(1_000, 4).await;
    let first = w.submit(&c, "b-1", 10).await.expect("created");
    assert_eq!((first.status, first.replayed), (201, false));
    let again = w.submit(&c, "b-1", 10).await.expect("replayed");
    assert_eq!(
        (again.status, again.replayed, &again.body),
        (201, true, &first.body)
    );
    let other = w.submit(&c, "b-1", 11).await.expect_err("another body");
    assert_eq!(code(&other), ErrorCode::IdempotencyConflict);
    let a = w.read_account(&c.account.account_id).await;
    assert_eq!(
        (a.balance, a.held, a.ledger_seq),
        (Credits(510), Credits(490), 2)
    );
    // Too little left: 402, and nothing written (the same request_id may be used again).
    let poor = w.submit(&c, "b-2", 11).await.expect_err("insufficient");
    assert_eq!(code(&poor), ErrorCode::InsufficientCredits);
    assert_eq!(w.read_account(&c.account.account_id).await.ledger_seq, 2);
    w.grant(&c.account.account_id, 100).await;
    assert_eq!(
        w.submit(&c, "b-2", 11).await.expect("now it fits").status,
        201
    );
    w.assert_invariants(&c.account.account_id).await;
}

#[tokio::test]
async fn a_crash_after_the_hold_is_finished_by_the_retry_once_the_lease_runs_out() {
    let w = World::with_faults(steady(), fail_at("submit.after_hold", 1));
    let c = w.account(20_000, 4).await;
    assert!(w.submit(&c, "crash", 300).await.is_err(), "the crash");
    let (batches, _) = w
        .svc
        .batches
        .list(&c.account.account_id, None, 10, None)
        .await
        .expect("list");
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].status, BatchStatus::Accepted);
    // Within the lease a retry only replays; after it, the retry writes the task records.
    assert!(w.submit(&c, "crash", 300).await.expect("replay").replayed);
    assert!(w
        .svc
        .tasks
        .get(&batches[0].batch_id, 0)
        .await
        .expect("read")
        .is_none());
    w.clock.advance_ms(batches::MATERIALIZE_LEASE_MS + 1);
    assert!(w.submit(&c, "crash", 300).await.expect("replay").replayed);
    let b = w.batch(&c.account.account_id, &batches[0].batch_id).await;
    assert_eq!(b.status, BatchStatus::Queued);
    let (tasks, _) = w
        .svc
        .tasks
        .list(&b.batch_id, 200, Some(298))
        .await
        .expect("tasks");
    assert_eq!(tasks.len(), 1, "all 300 task records exist");
    w.assert_invariants(&c.account.account_id).await;
}

#[tokio::test]
async fn grants_and_adjustments_are_entries_idempotent_by_request_id() {
    let w = World::new(steady());
    let c = w.account(0, 4).await;
    let id = c.account.account_id.clone();
    let pack = GrantRequest {
        request_id: "p1".into(),
        pack: Some(shared::domain::pricing::Pack::Pack2000),
        amount: None,
        reason: "pack bought".into(),
    };
    let fp = fingerprint(&json!({"p": 1}));
    let r = grant(&w.svc, &id, pack, &fp, "ops@example.com")
        .await
        .expect("grant");
    assert_eq!(body(&r)["credits"]["balance"], 227_620);
    let again = GrantRequest {
        request_id: "p1".into(),
        pack: Some(shared::domain::pricing::Pack::Pack2000),
        amount: None,
        reason: "pack bought".into(),
    };
    assert!(
        grant(&w.svc, &id, again, &fp, "ops@example.com")
            .await
            .expect("replay")
            .replayed
    );
    let adj = |rid: &str, amount: i64, kind: Option<&str>| AdjustRequest {
        request_id: rid.into(),
        amount,
        reason: "dispute settled".into(),
        kind: kind.map(str::to_string),
        refers_to: None,
    };
    let e = adjust(
        &w.svc,
        &id,
        adj("a1", -300_000, None),
        "f1",
        "finance@example.com",
    )
    .await
    .expect_err("overdraw");
    assert_eq!(code(&e), ErrorCode::InvalidAdjustment);
    let e = adjust(
        &w.svc,
        &id,
        adj("a2", -5, Some("compensation")),
        "f2",
        "finance@example.com",
    )
    .await
    .expect_err("neg");
    assert_eq!(code(&e), ErrorCode::InvalidAdjustment);
    adjust(
        &w.svc,
        &id,
        adj("a3", -620, None),
        "f3",
        "finance@example.com",
    )
    .await
    .expect("adjust");
    adjust(
        &w.svc,
        &id,
        adj("a4", 1_000, Some("compensation")),
        "f4",
        "finance@example.com",
    )
    .await
    .expect("comp");
    let a = w.read_account(&id).await;
    assert_eq!(
        (a.balance, a.lifetime_granted, a.ledger_seq),
        (Credits(228_000), Credits(227_620), 3)
    );
    // A dispute older than 30 days is refused.
    w.clock.advance_ms(31 * 86_400_000);
    let late = AdjustRequest {
        refers_to: Some(shared::domain::ledger::entry_id(1)),
        ..adj("a5", 10, None)
    };
    let e = adjust(&w.svc, &id, late, "f5", "finance@example.com")
        .await
        .expect_err("too late");
    assert_eq!(code(&e), ErrorCode::InvalidAdjustment);
    w.assert_invariants(&id).await;
}

#[tokio::test]
async fn a_transaction_conflict_is_retried_and_the_money_moves_once() {
    // DynamoDB's TransactionConflict (which the emulator never raises), three times running.
    let w = World::with_faults(steady(), fail_at("commit_money.conflict", 3));
    let c = w.account(0, 4).await;
    let id = c.account.account_id.clone();
    w.grant(&id, 700).await;
    let a = w.read_account(&id).await;
    assert_eq!((a.balance, a.ledger_seq), (Credits(700), 1));
    // Contention that never ends is answered as busy, and moves nothing.
    let w = World::with_faults(steady(), fail_at("commit_money.conflict", 1_000));
    let c = w.account(0, 4).await;
    let req = GrantRequest {
        request_id: "busy".into(),
        pack: None,
        amount: Some(5),
        reason: "r".into(),
    };
    let e = grant(&w.svc, &c.account.account_id, req, "fp", "ops@example.com")
        .await
        .expect_err("busy");
    assert_eq!(code(&e), ErrorCode::RequestInProgress);
    assert_eq!(w.read_account(&c.account.account_id).await.ledger_seq, 0);
}

#[tokio::test]
async fn failures_are_refunded_as_they_happen_and_settlement_closes_the_batch() {
    let sim = shared::adapters::providers::simulated::Simulated {
        fail_rate: 0.3,
        reject_rate: 0.1,
        ..steady()
    };
    let w = World::new(sim);
    let c = w.account(10_000, 4).await;
    let r = w.submit(&c, "mixed", 40).await.expect("batch");
    let id = body(&r)["id"].as_str().expect("id").to_string();
    let acct = c.account.account_id.clone();
    w.settle(&acct, &id, 5_000, 3_600_000).await;
    let b = w.batch(&acct, &id).await;
    let st = b.settlement.expect("settled");
    let c_ = st.counts;
    assert_eq!(c_.succeeded + c_.failed + c_.rejected, 40);
    assert!(
        c_.failed > 0 && c_.rejected > 0 && c_.succeeded > 0,
        "{c_:?}"
    );
    assert_eq!(st.refunded, Credits(49 * i64::from(c_.failed)));
    assert_eq!(
        st.charged,
        Credits(49 * i64::from(c_.succeeded + c_.rejected))
    );
    let (refunds, _) = w
        .svc
        .ledger
        .list(&shared::ports::store::LedgerQuery {
            account_id: acct.clone(),
            range: shared::ports::TimeRange::ALL,
            kind: Some(EntryKind::Refund),
            limit: 200,
            after: None,
        })
        .await
        .expect("ledger");
    assert_eq!(
        refunds.len() as u32,
        c_.failed,
        "one refund entry per failed task"
    );
    assert!(refunds.iter().all(|e| e.task_id.is_some()));
    let a = w.read_account(&acct).await;
    assert_eq!((a.held, a.lifetime_charged), (Credits::ZERO, st.charged));
    // Each succeeded video is stored under the account, tagged for its retention.
    let videos = w.blobs.keys(&format!("accounts/{acct}/videos/{id}/"));
    assert_eq!(videos.len() as u32, c_.succeeded);
    let tags = w.blobs.object(&videos[0]).and_then(|o| o.tags);
    assert_eq!(tags.as_deref(), Some("retention-days=90"));
    // Settling again changes nothing.
    settle_again(&w, &acct, &id).await;
    assert_eq!(w.read_account(&acct).await.lifetime_charged, st.charged);
    w.assert_invariants(&acct).await;
}

async fn settle_again(w: &World, acct: &str, id: &str) {
    shared::service::pipeline::settle::settle_batch(&w.p, acct, id)
        .await
        .expect("settle");
}

#[tokio::test]
async fn every_message_twice_still_moves_money_once() {
    let sim = shared::adapters::providers::simulated::Simulated {
        fail_rate: 0.5,
        ..steady()
    };
    let w = World::new(sim);
    let c = w.account(10_000, 10).await;
    let r = w.submit(&c, "dup", 20).await.expect("batch");
    let id = body(&r)["id"].as_str().expect("id").to_string();
    let acct = c.account.account_id.clone();
    // Before each drain, every task message on the queue is sent a second time.
    for _ in 0..200 {
        let copies: Vec<(String, u64)> = w
            .queue
            .bodies(shared::ports::queue::QueueName::Tasks)
            .into_iter()
            .map(|b| (b, 0))
            .collect();
        w.svc
            .queue
            .send(shared::ports::queue::QueueName::Tasks, &copies)
            .await
            .expect("dup");
        w.drain().await;
        if w.batch(&acct, &id).await.status == BatchStatus::Completed {
            break;
        }
        w.clock.advance_ms(5_000);
    }
    let st = w.batch(&acct, &id).await.settlement.expect("settled");
    assert_eq!(st.refunded, Credits(49 * i64::from(st.counts.failed)));
    w.assert_invariants(&acct).await;
}

#[tokio::test]
async fn cancel_ends_unfinished_tasks_and_keeps_finished_ones() {
    let w = World::new(steady());
    let c = w.account(10_000, 2).await;
    let acct = c.account.account_id.clone();
    let r = w.submit(&c, "c", 10).await.expect("batch");
    let id = body(&r)["id"].as_str().expect("id").to_string();
    // Two tasks run to the end; then the customer cancels.
    w.drain().await;
    w.clock.advance_ms(5_000);
    w.drain().await;
    let req = batches::CancelBatch {
        request_id: "cancel-1".into(),
    };
    let reply = batches::cancel(&w.svc, &acct, 30, &id, req, "fp")
        .await
        .expect("cancel");
    assert_eq!(reply.status, 202);
    w.settle(&acct, &id, 5_000, 600_000).await;
    let st = w.batch(&acct, &id).await.settlement.expect("settled");
    let c = st.counts;
    assert_eq!(c.succeeded + c.cancelled + c.released, 10);
    // Concurrency 2: the two at the provider are charged, the eight waiting are released.
    assert!(c.succeeded >= 2 && c.released > 0, "{c:?}");
    assert_eq!(st.released, Credits(49 * i64::from(c.released)));
    assert_eq!(
        st.charged,
        Credits(49 * i64::from(c.succeeded + c.cancelled))
    );
    let again = batches::CancelBatch {
        request_id: "cancel-2".into(),
    };
    let e = batches::cancel(&w.svc, &acct, 30, &id, again, "fp2")
        .await
        .expect_err("done");
    assert_eq!(code(&e), ErrorCode::BatchCompleted);
    w.assert_invariants(&acct).await;
}

#[tokio::test]
async fn a_task_past_its_deadline_times_out_refunded_even_with_every_worker_dead() {
    let sim = shared::adapters::providers::simulated::Simulated {
        latency_ms: 3_600_000,
        ..steady()
    };
    let w = World::new(sim);
    let c = w.account(10_000, 10).await;
    let acct = c.account.account_id.clone();
    let r = w.submit(&c, "slow", 10).await.expect("batch");
    let id = body(&r)["id"].as_str().expect("id").to_string();
    w.drain().await;
    // Every message is lost; only the sweeper runs.
    w.queue.purge(shared::ports::queue::QueueName::Tasks);
    w.clock.advance_ms(11 * 60_000);
    let report = shared::service::pipeline::sweeper::sweep(&w.p)
        .await
        .expect("sweep");
    assert_eq!(report.timed_out, 10);
    w.drain().await;
    let st = w.batch(&acct, &id).await.settlement.expect("settled");
    assert_eq!((st.counts.timed_out, st.refunded), (10, Credits(490)));
    w.assert_invariants(&acct).await;
}

#[tokio::test]
async fn reconcile_is_clean_after_settlement_and_names_a_wrong_balance_after() {
    let w = World::new(steady());
    let c = w.account(1_000, 4).await;
    let acct = c.account.account_id.clone();
    let r = w.submit(&c, "r", 10).await.expect("batch");
    let id = body(&r)["id"].as_str().expect("id").to_string();
    w.settle(&acct, &id, 5_000, 600_000).await;
    let a = w.read_account(&acct).await;
    let report = reconcile::account(&w.svc, &a).await.expect("report");
    assert!(report.ok, "{:?}", report.discrepancies);
    assert_eq!((report.ledger_entries, report.batches_checked), (2, 1));
    // An entry whose balance_after lies (written past the use cases, straight to the port).
    let mv = MoneyMove {
        account_id: acct.clone(),
        expected: a.book(),
        require_active: false,
        entry: LedgerRecord {
            account_id: acct.clone(),
            seq: a.ledger_seq + 1,
            created_ms: w.now(),
            kind: EntryKind::Adjustment,
            amount: Credits(10),
            balance_after: Credits(9_999),
            batch_id: None,
            task_id: None,
            request_id: None,
            reason: Some("injected".into()),
            actor: None,
            pack: None,
            price_paid_usd_cents: None,
            refers_to: None,
            invoice: None,
        },
        held_delta: Credits::ZERO,
        granted_delta: Credits::ZERO,
        charged_delta: Credits::ZERO,
        refunded_delta: Credits::ZERO,
        released_delta: Credits::ZERO,
        creates: vec![],
        changes: vec![],
    };
    w.svc.money.commit(mv).await.expect("inject");
    let a = w.read_account(&acct).await;
    let report = reconcile::account(&w.svc, &a).await.expect("report");
    assert!(!report.ok);
    assert_eq!(report.discrepancies[0].kind, "balance_after_mismatch");
    assert_eq!(
        report.discrepancies[0].entry_id.as_deref(),
        Some("le_000000000003")
    );
}

#[tokio::test]
async fn a_statement_closes_where_the_next_month_opens() {
    let w = World::new(steady());
    let c = w.account(5_000, 4).await;
    let acct = c.account.account_id.clone();
    let month = |ms: i64| shared::domain::time::rfc3339_ms(ms)[..7].to_string();
    let m1 = month(w.now());
    w.submit(&c, "s1", 10).await.expect("batch");
    w.clock.advance_ms(32 * 86_400_000);
    let m2 = month(w.now());
    w.grant(&acct, 100).await;
    let a = w.read_account(&acct).await;
    let s1 = statements::build(&w.svc, &a, &m1).await.expect("statement");
    let s2 = statements::build(&w.svc, &a, &m2).await.expect("statement");
    assert_eq!((s1.opening_balance, s1.closing_balance), (0, 4_510));
    assert_eq!(s1.movements.grants + s1.movements.pre_deducts, 4_510);
    assert_eq!(s2.opening_balance, s1.closing_balance);
    assert_eq!(s2.closing_balance, a.balance.value());
    assert!(statements::build(&w.svc, &a, "2026-13").await.is_err());
}

#[tokio::test]
async fn keys_are_checked_on_every_request_and_the_rate_window_admits_exactly_the_limit() {
    let w = World::new(steady());
    let c = w.account(0, 4).await;
    let acct = c.account.account_id.clone();
    let created = shared::service::keys::create(
        &w.svc,
        &acct,
        serde_json::from_value(
            json!({"name": "five", "rate_limit_per_min": 5, "scopes": ["read"]}),
        )
        .expect("request"),
        "fp",
        &[],
    )
    .await
    .expect("key");
    let v = body(&created);
    let secret = v["secret"].as_str().expect("secret").to_string();
    let header = format!("Bearer {secret}");
    let req = |method: &'static str, route: &'static str| AccessRequest {
        authorization: Some(&header),
        session_cookie: None,
        csrf: None,
        method,
        route,
        source_ip: Some("127.0.0.1".parse().expect("ip")),
    };
    // Start at the top of a minute, so the window is the fixed one.
    let now = w.now();
    w.clock.advance_ms(60_000 - now.rem_euclid(60_000));
    let mut admitted = 0;
    for _ in 0..8 {
        match authorize(&w.svc, req("GET", "/v1/credits")).await {
            Ok(g) => {
                admitted += 1;
                assert_eq!(g.caller.account.account_id, acct);
            }
            Err(r) => {
                assert_eq!(r.error.code(), ErrorCode::RateLimited);
                assert!(r.retry_after_secs.is_some());
            }
        }
    }
    assert_eq!(admitted, 5, "exactly the limit within one minute");
    // A refused scope never reaches the window.
    let e = authorize(&w.svc, req("POST", "/v1/batches"))
        .await
        .err()
        .expect("scope");
    assert_eq!(e.error.code(), ErrorCode::InsufficientScope);
    // The next minute, half of the last one still weighs: 5 - 5 x (1 - 0.5) = 2.5.
    w.clock.advance_ms(90_000);
    let mut later = 0;
    for _ in 0..5 {
        if authorize(&w.svc, req("GET", "/v1/credits")).await.is_ok() {
            later += 1;
        }
    }
    assert_eq!(later, 2);
    // Revoked, the key is refused at once.
    let key_id = v["id"].as_str().expect("id").to_string();
    shared::service::keys::revoke(&w.svc, &acct, &key_id)
        .await
        .expect("revoke");
    let e = authorize(&w.svc, req("GET", "/v1/credits"))
        .await
        .err()
        .expect("revoked");
    assert_eq!(e.error.code(), ErrorCode::KeyRevoked);
    let junk = AccessRequest {
        authorization: Some("Bearer vgk_nope"),
        session_cookie: None,
        csrf: None,
        method: "GET",
        route: "/v1/credits",
        source_ip: None,
    };
    let e = authorize(&w.svc, junk).await.err().expect("junk");
    assert_eq!(e.error.code(), ErrorCode::Unauthorized);
}

#[tokio::test]
async fn the_end_mark_lands_once_whatever_the_order_of_two_workers() {
    // Two workers race to end the same task with different outcomes: one mark, one outcome.
    let w = World::new(steady());
    let c = w.account(1_000, 4).await;
    let acct = c.account.account_id.clone();
    let r = w.submit(&c, "race", 10).await.expect("batch");
    let id = body(&r)["id"].as_str().expect("id").to_string();
    let b = w.batch(&acct, &id).await;
    let t = w.svc.tasks.get(&id, 0).await.expect("read").expect("task");
    let (x, y) = tokio::join!(
        shared::service::pipeline::worker::end(&w.p, &b, t.clone(), Outcome::Failed, None, None),
        shared::service::pipeline::worker::end(&w.p, &b, t, Outcome::Cancelled, None, None),
    );
    assert!(x.is_ok() || y.is_ok());
    let shard = w
        .svc
        .progress
        .shard(&id, 0)
        .await
        .expect("read")
        .expect("shard");
    assert_eq!(shard.counts().ended(), 1);
    let refunded = w.batch(&acct, &id).await.credits.refunded;
    let outcome = shard.ended["0"];
    assert_eq!(
        refunded,
        if outcome == Outcome::Failed {
            Credits(49)
        } else {
            Credits::ZERO
        }
    );
    w.assert_invariants(&acct).await;
}

#[tokio::test]
async fn faults_make_no_partial_writes() {
    // A crash right after the end mark (before the task record): the redelivery finishes it.
    let w = World::with_faults(
        shared::adapters::providers::simulated::Simulated {
            fail_rate: 1.0,
            ..steady()
        },
        fail_at("end.after_mark", 3),
    );
    let c = w.account(1_000, 4).await;
    let acct = c.account.account_id.clone();
    let r = w.submit(&c, "f", 10).await.expect("batch");
    let id = body(&r)["id"].as_str().expect("id").to_string();
    w.settle(&acct, &id, 5_000, 600_000).await;
    let st = w.batch(&acct, &id).await.settlement.expect("settled");
    assert_eq!((st.counts.failed, st.refunded), (10, Credits(490)));
    w.assert_invariants(&acct).await;
}

/// Dead letters stay where the alarm can see them and an operator can read them: the sweep
/// re-drives the work from the batch records and leaves the dead-letter queues alone.
#[tokio::test]
async fn the_sweep_leaves_dead_letters_for_the_alarm_and_the_operator() {
    use shared::ports::queue::{Queue, QueueName};
    let w = World::new(steady());
    for q in [QueueName::TasksDlq, QueueName::SettleDlq] {
        w.queue
            .send(q, &[(r#"{"kind":"dead"}"#.to_string(), 0)])
            .await
            .expect("send");
    }
    shared::service::pipeline::sweeper::sweep(&w.p)
        .await
        .expect("sweep");
    for q in [QueueName::TasksDlq, QueueName::SettleDlq] {
        let mut left = 0;
        w.queue.for_each_pending(q, |_| left += 1);
        assert_eq!(left, 1, "{q:?}");
    }
}
