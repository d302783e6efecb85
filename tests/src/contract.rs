//! The contract of every port, as one suite of cases that runs against both implementations:
//! the DynamoDB / SQS / S3 adapters on the emulator and the in-memory twins
//! (`tests/tests/contract.rs` runs each case twice). If a twin drifts from its adapter, one
//! of the two runs fails.
//!
//! Two behaviours the emulator cannot produce are covered on the twin only, and say so:
//! stale reads of global indexes (`stale_index_reads_miss_recent_writes`) and DynamoDB's
//! `TransactionConflict` (a fault point in the money loop, tested in the use-case suite).

use serde_json::json;
use shared::domain::access::KeyMinute;
use shared::domain::account::{AccountStatus, Plan};
use shared::domain::batch::{BatchCredits, BatchStatus, TaskCounts, TaskSpec, TaskStatus};
use shared::domain::ledger::EntryKind;
use shared::domain::money::Credits;
use shared::domain::pricing::Model;
use shared::domain::task::{shard_of, Outcome, Settlement, SHARD_SIZE};
use shared::domain::webhook::SigningSecret;
use shared::ports::access::{Admission, BlockExemption, Caps, KeyPatch, UsageFilter, WindowCounts};
use shared::ports::queue::QueueName;
use shared::ports::records::*;
use shared::ports::store::{
    Change, CommitError, EndMark, ExportFinish, LedgerPos, LedgerQuery, ModelSetting, MoneyMove,
    NewRecord, TermsPatch,
};
use shared::ports::webhooks::EndpointPatch;
use shared::ports::{PageToken, Ports, StoreError, TimeRange};

const T0: i64 = 1_780_000_000_000;

fn id(prefix: &str, n: u64) -> String {
    shared::domain::ids::compose(prefix, T0 as u64 + n, [n as u8; 10])
}

pub fn account(id: &str) -> AccountRecord {
    AccountRecord {
        account_id: id.to_string(),
        name: "Contract Co".into(),
        plan: Plan::Payg,
        status: AccountStatus::Active,
        retention_days: 90,
        max_concurrency: 2,
        min_batch_size: 10,
        balance: Credits::ZERO,
        held: Credits::ZERO,
        lifetime_granted: Credits::ZERO,
        lifetime_charged: Credits::ZERO,
        lifetime_refunded: Credits::ZERO,
        lifetime_released: Credits::ZERO,
        ledger_seq: 0,
        last_entry_ms: 0,
        created_ms: T0,
        running: 0,
        low_balance_threshold: None,
        request_budget_per_min: None,
        throttle: None,
        slot_audit: None,
        sla_terms: None,
        billing_profile: None,
        payment_issue: None,
    }
}

fn entry(a: &AccountRecord, kind: EntryKind, amount: i64, at: i64) -> LedgerRecord {
    LedgerRecord {
        account_id: a.account_id.clone(),
        seq: a.ledger_seq + 1,
        created_ms: at,
        kind,
        amount: Credits(amount),
        balance_after: a.balance + Credits(amount),
        batch_id: None,
        task_id: None,
        request_id: None,
        reason: None,
        actor: None,
        pack: None,
        price_paid_usd_cents: None,
        refers_to: None,
        invoice: None,
    }
}

/// A movement of `amount` on the account as read, creating `creates`.
fn movement(a: &AccountRecord, kind: EntryKind, amount: i64, at: i64) -> MoneyMove {
    MoneyMove {
        account_id: a.account_id.clone(),
        expected: a.book(),
        require_active: false,
        entry: entry(a, kind, amount, at),
        held_delta: Credits::ZERO,
        granted_delta: if kind == EntryKind::Grant {
            Credits(amount)
        } else {
            Credits::ZERO
        },
        charged_delta: Credits::ZERO,
        refunded_delta: Credits::ZERO,
        released_delta: Credits::ZERO,
        creates: vec![],
        changes: vec![],
    }
}

fn request(owner: &str, key: &str) -> RequestRecord {
    RequestRecord {
        account_id: owner.to_string(),
        request_key: key.to_string(),
        fingerprint: "f".into(),
        status_code: 201,
        response: Some("{}".into()),
        resource_id: "r".into(),
        created_ms: T0,
        response_expires_ms: T0 + 30 * 86_400_000,
    }
}

fn batch(account_id: &str, batch_id: &str, tasks: u32) -> BatchRecord {
    BatchRecord {
        account_id: account_id.to_string(),
        batch_id: batch_id.to_string(),
        request_id: format!("req-{batch_id}"),
        status: BatchStatus::Accepted,
        model: Model::Sora2,
        unit_price: Credits(49),
        price_version: "test".into(),
        task_count: tasks,
        counts: TaskCounts::all_queued(tasks),
        credits: BatchCredits {
            held: Credits(49 * i64::from(tasks)),
            ..Default::default()
        },
        metadata: Default::default(),
        input_key: "accounts/x/input.jsonl".into(),
        lease_until_ms: T0 + 60_000,
        created_ms: T0,
        next_dispatch: 0,
        dispatched_ms: 0,
        cancel_requested: false,
        open_shard: Some("open".into()),
        settlement: None,
        completed_ms: None,
        retention_days: 90,
    }
}

fn task(b: &BatchRecord, idx: u32) -> TaskRecord {
    TaskRecord {
        batch_id: b.batch_id.clone(),
        idx,
        task_id: shared::domain::batch::task_id(&b.batch_id, idx),
        account_id: b.account_id.clone(),
        status: TaskStatus::Queued,
        model: b.model,
        spec: TaskSpec {
            prompt: format!("prompt {idx}"),
            duration_seconds: 4,
            aspect_ratio: "16:9".into(),
            resolution: "720p".into(),
            client_ref: None,
        },
        created_ms: T0,
        updated_ms: T0,
        provider: None,
        provider_model: None,
        provider_job_id: None,
        attempts: 0,
        slot: false,
        slot_to: None,
        started_ms: None,
        ended_ms: None,
        deadline_ms: T0 + 86_400_000,
        error_code: None,
        error_message: None,
        video_key: None,
        expires_at: Some(T0 / 1_000 + 97 * 86_400),
        version: 0,
        next_check_ms: 0,
        submit_claim_until_ms: None,
        charged: None,
    }
}

/// Creates an account and grants it `credits`; returns it as now stored.
async fn funded(p: &Ports, n: u64, credits: i64) -> AccountRecord {
    let a = account(&id("acct", n));
    p.requests
        .create_all(vec![NewRecord::Account(a.clone())])
        .await
        .expect("create account");
    if credits > 0 {
        p.money
            .commit(movement(&a, EntryKind::Grant, credits, T0))
            .await
            .expect("grant");
    }
    p.accounts
        .get(&a.account_id)
        .await
        .expect("read")
        .expect("account")
}

async fn all_pages<T, F, Fut>(mut fetch: F) -> Vec<T>
where
    F: FnMut(Option<PageToken>) -> Fut,
    Fut: std::future::Future<Output = shared::ports::PortResult<shared::ports::Slice<T>>>,
{
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let s = fetch(after.take()).await.expect("page");
        out.extend(s.items);
        match s.next {
            Some(t) => after = Some(t),
            None => return out,
        }
    }
}

fn dup(r: Result<(), CommitError>) -> Option<usize> {
    match r {
        Err(CommitError::Duplicate(i)) => Some(i),
        _ => None,
    }
}

fn stale(r: Result<(), CommitError>) -> bool {
    matches!(r, Err(CommitError::Stale))
}

/// Money: the conditional commit lands whole or not at all, and settlement once.
pub async fn money(p: &Ports) {
    let a = funded(p, 1, 1_000).await;
    assert_eq!(
        (a.balance, a.lifetime_granted, a.ledger_seq, a.last_entry_ms),
        (Credits(1_000), Credits(1_000), 1, T0)
    );

    // A movement against a book that has moved is refused, and changes nothing.
    let mut old = a.clone();
    old.ledger_seq = 0;
    old.balance = Credits::ZERO;
    assert!(stale(
        p.money
            .commit(movement(&old, EntryKind::Adjustment, 5, T0 + 1))
            .await
    ));

    // A create that exists refuses the whole transaction: no entry, no balance change.
    let rec = request(&a.account_id, "batch#r1");
    p.requests
        .create_all(vec![NewRecord::Request(rec.clone())])
        .await
        .expect("record");
    let mut mv = movement(&a, EntryKind::PreDeduct, -490, T0 + 2);
    mv.held_delta = Credits(490);
    mv.creates = vec![
        NewRecord::Batch(batch(&a.account_id, &id("bat", 1), 10)),
        NewRecord::Request(rec),
    ];
    assert_eq!(dup(p.money.commit(mv.clone()).await), Some(1));
    let after = p
        .accounts
        .get(&a.account_id)
        .await
        .expect("read")
        .expect("a");
    assert_eq!(
        (after.balance, after.held, after.ledger_seq),
        (a.balance, a.held, 1)
    );
    assert!(p
        .ledger
        .get(&a.account_id, 2)
        .await
        .expect("read")
        .is_none());
    assert!(p
        .batches
        .get(&a.account_id, &id("bat", 1))
        .await
        .expect("read")
        .is_none());

    // Without the clash it lands whole: balance, held, entry, batch and request record.
    mv.creates[1] = NewRecord::Request(request(&a.account_id, "batch#r2"));
    p.money.commit(mv).await.expect("hold");
    let held = p
        .accounts
        .get(&a.account_id)
        .await
        .expect("read")
        .expect("a");
    assert_eq!(
        (held.balance, held.held, held.ledger_seq),
        (Credits(510), Credits(490), 2)
    );
    let e = p
        .ledger
        .get(&a.account_id, 2)
        .await
        .expect("read")
        .expect("entry");
    assert_eq!(
        (e.amount, e.balance_after, e.kind),
        (Credits(-490), Credits(510), EntryKind::PreDeduct)
    );
    assert!(p
        .requests
        .get(&a.account_id, "batch#r2")
        .await
        .expect("read")
        .is_some());

    // A spending movement on a terminated account is refused.
    p.accounts
        .set_status(&a.account_id, AccountStatus::Terminated)
        .await
        .expect("terminate");
    let t = p
        .accounts
        .get(&a.account_id)
        .await
        .expect("read")
        .expect("a");
    let mut spend = movement(&t, EntryKind::PreDeduct, -49, T0 + 3);
    spend.require_active = true;
    assert!(stale(p.money.commit(spend.clone()).await));
    spend.require_active = false;
    p.money
        .commit(spend)
        .await
        .expect("refunds need no active account");

    // A change whose condition fails is Duplicate(creates + index), and nothing lands.
    let b = batch(&a.account_id, &id("bat", 1), 10);
    p.progress.init(&b.batch_id, 10).await.expect("shards");
    let now = p
        .accounts
        .get(&a.account_id)
        .await
        .expect("read")
        .expect("a");
    let mark = EndMark {
        batch_id: b.batch_id.clone(),
        idx: 3,
        was_started: true,
        outcome: Outcome::Failed,
    };
    let mut refund = movement(&now, EntryKind::Refund, 49, T0 + 4);
    refund.held_delta = Credits(-49);
    refund.refunded_delta = Credits(49);
    refund.changes = vec![
        Change::BatchRefund {
            account_id: a.account_id.clone(),
            batch_id: b.batch_id.clone(),
            amount: Credits(49),
        },
        Change::EndMark(mark.clone()),
    ];
    // The task never started, so a mark that says it did fails: index 1 of the changes.
    assert_eq!(dup(p.money.commit(refund.clone()).await), Some(1));
    let unchanged = p
        .batches
        .get(&a.account_id, &b.batch_id)
        .await
        .expect("read")
        .expect("b");
    assert_eq!(unchanged.credits.refunded, Credits::ZERO);
    refund.changes[1] = Change::EndMark(EndMark {
        was_started: false,
        ..mark
    });
    p.money.commit(refund).await.expect("refund");
    let b2 = p
        .batches
        .get(&a.account_id, &b.batch_id)
        .await
        .expect("read")
        .expect("b");
    assert_eq!(b2.credits.refunded, Credits(49));
    let shard = p
        .progress
        .shard(&b.batch_id, 0)
        .await
        .expect("read")
        .expect("shard");
    assert_eq!(shard.ended.get("3"), Some(&Outcome::Failed));
    assert_eq!((shard.n_failed, shard.n_ended_unstarted), (1, 1));

    // Settlement: once, and only while the refund tally is what it was computed from.
    let counts = TaskCounts {
        total: 10,
        succeeded: 9,
        failed: 1,
        ..Default::default()
    };
    let st = Settlement {
        held: Credits(490),
        charged: Credits(441),
        refunded: Credits(49),
        released: Credits::ZERO,
        counts,
    };
    let wrong = Settlement {
        refunded: Credits(0),
        ..st
    };
    assert!(!p.money.settle(&b2, &wrong, T0 + 5).await.expect("settle"));
    assert!(p.money.settle(&b2, &st, T0 + 5).await.expect("settle"));
    assert!(!p.money.settle(&b2, &st, T0 + 6).await.expect("settle"));
    let done = p
        .batches
        .get(&a.account_id, &b.batch_id)
        .await
        .expect("read")
        .expect("b");
    assert_eq!(
        (
            done.status,
            done.settlement,
            done.completed_ms,
            done.credits.charged,
            done.open_shard
        ),
        (
            BatchStatus::Completed,
            Some(st),
            Some(T0 + 5),
            Credits(441),
            None
        )
    );
    let acct = p
        .accounts
        .get(&a.account_id)
        .await
        .expect("read")
        .expect("a");
    assert_eq!(
        (acct.held, acct.lifetime_charged),
        (Credits::ZERO, Credits(441))
    );
}

/// Releases (a cancel that landed before the task reached a provider): the entry, the
/// account's lifetime total, the batch's own tally and the end mark land together, and
/// settlement closes only against the release tally it was computed from.
pub async fn releases(p: &Ports) {
    let a = funded(p, 40, 1_000).await;
    let b = batch(&a.account_id, &id("bat", 40), 10);
    let mut hold = movement(&a, EntryKind::PreDeduct, -490, T0 + 1);
    hold.held_delta = Credits(490);
    hold.creates = vec![NewRecord::Batch(b.clone())];
    p.money.commit(hold).await.expect("hold");
    p.progress.init(&b.batch_id, 10).await.expect("shards");
    let now = p
        .accounts
        .get(&a.account_id)
        .await
        .expect("read")
        .expect("a");
    let mut release = movement(&now, EntryKind::Release, 49, T0 + 2);
    release.held_delta = Credits(-49);
    release.released_delta = Credits(49);
    release.changes = vec![
        Change::EndMark(EndMark {
            batch_id: b.batch_id.clone(),
            idx: 7,
            was_started: false,
            outcome: Outcome::Released,
        }),
        Change::BatchRelease {
            account_id: a.account_id.clone(),
            batch_id: b.batch_id.clone(),
            amount: Credits(49),
        },
    ];
    p.money.commit(release.clone()).await.expect("release");
    // The same end again: the mark's condition fails, nothing lands twice.
    let again = p
        .accounts
        .get(&a.account_id)
        .await
        .expect("read")
        .expect("a");
    release.expected = again.book();
    release.entry = entry(&again, EntryKind::Release, 49, T0 + 3);
    assert_eq!(dup(p.money.commit(release).await), Some(0));
    let acct = p
        .accounts
        .get(&a.account_id)
        .await
        .expect("read")
        .expect("a");
    assert_eq!(
        (
            acct.balance,
            acct.held,
            acct.lifetime_released,
            acct.lifetime_refunded
        ),
        (Credits(559), Credits(441), Credits(49), Credits::ZERO)
    );
    let b2 = p
        .batches
        .get(&a.account_id, &b.batch_id)
        .await
        .expect("read")
        .expect("b");
    assert_eq!(
        (b2.credits.released, b2.credits.refunded),
        (Credits(49), Credits::ZERO)
    );
    let shard = p
        .progress
        .shard(&b.batch_id, 0)
        .await
        .expect("read")
        .expect("shard");
    assert_eq!(shard.ended.get("7"), Some(&Outcome::Released));
    assert_eq!((shard.n_released, shard.n_cancelled), (1, 0));
    assert_eq!(shard.counts().released, 1);

    let st = Settlement {
        held: Credits(490),
        charged: Credits(441),
        refunded: Credits::ZERO,
        released: Credits(49),
        counts: TaskCounts {
            total: 10,
            succeeded: 9,
            released: 1,
            ..Default::default()
        },
    };
    let wrong = Settlement {
        released: Credits::ZERO,
        charged: Credits(490),
        ..st
    };
    assert!(!p.money.settle(&b2, &wrong, T0 + 4).await.expect("settle"));
    assert!(p.money.settle(&b2, &st, T0 + 4).await.expect("settle"));
    let acct = p
        .accounts
        .get(&a.account_id)
        .await
        .expect("read")
        .expect("a");
    assert_eq!(
        (acct.held, acct.lifetime_charged, acct.balance),
        (Credits::ZERO, Credits(441), Credits(559))
    );
}

/// The ledger's reads: newest-first lists with filters and cursors, pages, point reads.
pub async fn ledger(p: &Ports) {
    let mut a = funded(p, 2, 10_000).await;
    for i in 0..29u32 {
        let kind = if i.is_multiple_of(3) {
            EntryKind::Refund
        } else {
            EntryKind::PreDeduct
        };
        let amount = if kind == EntryKind::Refund { 49 } else { -49 };
        p.money
            .commit(movement(&a, kind, amount, T0 + 10 * i64::from(i + 1)))
            .await
            .expect("entry");
        a = p
            .accounts
            .get(&a.account_id)
            .await
            .expect("read")
            .expect("a");
    }
    assert_eq!(a.ledger_seq, 30);
    let q = |limit, after, kind, range| LedgerQuery {
        account_id: a.account_id.clone(),
        range,
        kind,
        limit,
        after,
    };
    let (first, more) = p
        .ledger
        .list(&q(7, None, None, TimeRange::ALL))
        .await
        .expect("list");
    assert!(more);
    assert_eq!(
        first.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (24..=30).rev().collect::<Vec<_>>()
    );
    let last = first.last().expect("entries");
    let pos = LedgerPos {
        seq: last.seq,
        created_ms: last.created_ms,
    };
    let (next, _) = p
        .ledger
        .list(&q(3, Some(pos), None, TimeRange::ALL))
        .await
        .expect("list");
    assert_eq!(
        next.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![23, 22, 21]
    );
    let (refunds, more) = p
        .ledger
        .list(&q(50, None, Some(EntryKind::Refund), TimeRange::ALL))
        .await
        .expect("list");
    assert!(!more);
    assert_eq!(refunds.len(), 10);
    assert!(refunds.iter().all(|e| e.kind == EntryKind::Refund));
    let window = TimeRange {
        from_ms: T0 + 50,
        to_ms: T0 + 100,
    };
    let (in_window, _) = p
        .ledger
        .list(&q(50, None, None, window))
        .await
        .expect("list");
    assert_eq!(
        in_window.iter().map(|e| e.created_ms).collect::<Vec<_>>(),
        (5..=10).rev().map(|i| T0 + 10 * i).collect::<Vec<_>>()
    );
    let before = p
        .ledger
        .last_before(&a.account_id, T0 + 55)
        .await
        .expect("read")
        .expect("entry");
    assert_eq!(before.created_ms, T0 + 50);
    assert!(p
        .ledger
        .last_before(&a.account_id, T0)
        .await
        .expect("read")
        .is_none());
    let all = all_pages(|t| p.ledger.page(&a.account_id, TimeRange::ALL, t)).await;
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=30).collect::<Vec<_>>()
    );
    let sum: Credits = all.iter().map(|e| e.amount).sum();
    assert_eq!(sum, a.balance);
    let part = all_pages(|t| p.ledger.page(&a.account_id, window, t)).await;
    assert_eq!(part.len(), 6);
    assert!(p
        .ledger
        .list(&q(5, None, None, TimeRange::ALL))
        .await
        .is_ok());
    let other = p
        .ledger
        .list(&LedgerQuery {
            account_id: id("acct", 999),
            range: TimeRange::ALL,
            kind: None,
            limit: 5,
            after: None,
        })
        .await
        .expect("list");
    assert!(other.0.is_empty() && !other.1);
}

/// Accounts: terms, status, threshold, concurrency slots; absent accounts answer `None`/false.
pub async fn accounts(p: &Ports) {
    let a = funded(p, 3, 0).await;
    let ghost = id("acct", 998);
    assert_eq!(
        dup(p
            .requests
            .create_all(vec![NewRecord::Account(a.clone())])
            .await),
        Some(0)
    );
    let changed = p
        .accounts
        .change_terms(
            &a.account_id,
            &TermsPatch {
                retention_days: Some(180),
                request_budget_per_min: Some(120),
                ..Default::default()
            },
        )
        .await
        .expect("terms")
        .expect("account");
    assert_eq!(
        (
            changed.retention_days,
            changed.max_concurrency,
            changed.request_budget_per_min
        ),
        (180, 2, Some(120))
    );
    let t = Throttle {
        limit: 12,
        since_ms: 1_000,
        until_ms: 901_000,
        reason: "error_rate".into(),
    };
    assert!(p
        .accounts
        .throttle(&a.account_id, &t)
        .await
        .expect("throttle"));
    let later = Throttle {
        since_ms: 2_000,
        ..t.clone()
    };
    assert!(
        !p.accounts
            .throttle(&a.account_id, &later)
            .await
            .expect("throttle"),
        "one in force"
    );
    let stored = p
        .accounts
        .get(&a.account_id)
        .await
        .expect("get")
        .expect("account");
    assert_eq!(stored.throttle, Some(t.clone()));
    assert!(!p.accounts.throttle(&ghost, &t).await.expect("throttle"));
    assert!(p.accounts.lift_throttle(&a.account_id).await.expect("lift"));
    assert!(!p.accounts.lift_throttle(&a.account_id).await.expect("lift"));
    assert!(p
        .accounts
        .change_terms(
            &ghost,
            &TermsPatch {
                retention_days: Some(30),
                ..Default::default()
            },
        )
        .await
        .expect("terms")
        .is_none());
    assert!(!p
        .accounts
        .set_status(&a.account_id, AccountStatus::Active)
        .await
        .expect("status"));
    assert!(p
        .accounts
        .set_status(&a.account_id, AccountStatus::Terminated)
        .await
        .expect("status"));
    assert!(!p
        .accounts
        .set_status(&ghost, AccountStatus::Terminated)
        .await
        .expect("status"));
    let t = p
        .accounts
        .set_low_balance_threshold(&a.account_id, Some(Credits(500)))
        .await
        .expect("threshold")
        .expect("account");
    assert_eq!(t.low_balance_threshold, Some(Credits(500)));
    let t = p
        .accounts
        .set_low_balance_threshold(&a.account_id, None)
        .await
        .expect("threshold")
        .expect("account");
    assert_eq!(t.low_balance_threshold, None);
    assert!(p
        .accounts
        .set_low_balance_threshold(&ghost, None)
        .await
        .expect("threshold")
        .is_none());

    // Slots: at most `max`, never below zero, reset only from what was observed.
    assert!(p
        .accounts
        .acquire_slot(&a.account_id, 2)
        .await
        .expect("slot"));
    assert!(p
        .accounts
        .acquire_slot(&a.account_id, 2)
        .await
        .expect("slot"));
    assert!(!p
        .accounts
        .acquire_slot(&a.account_id, 2)
        .await
        .expect("slot"));
    assert!(!p.accounts.acquire_slot(&ghost, 2).await.expect("slot"));
    assert!(
        p.accounts.get(&ghost).await.expect("read").is_none(),
        "no item appeared"
    );
    p.accounts
        .release_slot(&a.account_id)
        .await
        .expect("release");
    assert!(!p
        .accounts
        .reset_slots(&a.account_id, 2, 0)
        .await
        .expect("reset"));
    assert!(p
        .accounts
        .reset_slots(&a.account_id, 1, 0)
        .await
        .expect("reset"));
    p.accounts
        .release_slot(&a.account_id)
        .await
        .expect("release at zero");
    p.accounts
        .note_slot_audit(&a.account_id, "3:1")
        .await
        .expect("audit");
    let now = p
        .accounts
        .get(&a.account_id)
        .await
        .expect("read")
        .expect("a");
    assert_eq!((now.running, now.slot_audit.as_deref()), (0, Some("3:1")));
    p.accounts
        .note_slot_audit(&ghost, "1:0")
        .await
        .expect("audit");
    assert!(p.accounts.get(&ghost).await.expect("read").is_none());

    let b = funded(p, 4, 0).await;
    let all = all_pages(|t| p.accounts.scan(t)).await;
    let ids: Vec<&str> = all.iter().map(|x| x.account_id.as_str()).collect();
    assert!(ids.contains(&a.account_id.as_str()) && ids.contains(&b.account_id.as_str()));
}

/// Idempotency records, creation all-or-nothing, files and models.
pub async fn requests(p: &Ports) {
    let owner = id("acct", 5);
    let r1 = request(&owner, "file#a");
    assert!(p
        .requests
        .get(&owner, "file#a")
        .await
        .expect("read")
        .is_none());
    let file = FileRecord {
        account_id: owner.clone(),
        file_id: id("file", 1),
        request_id: "a".into(),
        purpose: "batch_input".into(),
        s3_key: "accounts/x/files/f.jsonl".into(),
        created_ms: T0,
        upload_expires_ms: T0 + 3_600_000,
        expires_at: T0 / 1_000 + 90 * 86_400,
    };
    p.requests
        .create_all(vec![
            NewRecord::File(file.clone()),
            NewRecord::Request(r1.clone()),
        ])
        .await
        .expect("create");
    let got = p
        .requests
        .get(&owner, "file#a")
        .await
        .expect("read")
        .expect("record");
    assert_eq!((got.fingerprint.as_str(), got.status_code), ("f", 201));
    let stored = p
        .files
        .get(&owner, &file.file_id)
        .await
        .expect("read")
        .expect("file");
    assert_eq!(stored.s3_key, file.s3_key);
    assert!(p
        .files
        .get(&id("acct", 6), &file.file_id)
        .await
        .expect("read")
        .is_none());
    // The second record exists: Duplicate(1), and the first is not created either.
    let other = FileRecord {
        file_id: id("file", 2),
        ..file
    };
    assert_eq!(
        dup(p
            .requests
            .create_all(vec![NewRecord::File(other.clone()), NewRecord::Request(r1)])
            .await),
        Some(1)
    );
    assert!(p
        .files
        .get(&owner, &other.file_id)
        .await
        .expect("read")
        .is_none());

    assert!(p.models.get("veo-pro").await.expect("read").is_none());
    let m = ModelSetting {
        status: "unavailable".into(),
        reason: "upstream retired".into(),
        updated_ms: T0,
    };
    p.models.set("veo-pro", &m).await.expect("set");
    assert_eq!(p.models.get("veo-pro").await.expect("read"), Some(m));
}

/// Batches: list order and filters, the lease, dispatch claims, cancel, the open index.
pub async fn batches(p: &Ports) {
    let a = funded(p, 7, 100_000).await;
    let mut cur = a.clone();
    for n in 1..=5u64 {
        let mut mv = movement(&cur, EntryKind::PreDeduct, -490, T0 + n as i64);
        mv.held_delta = Credits(490);
        mv.creates = vec![NewRecord::Batch(batch(&a.account_id, &id("bat", n), 10))];
        p.money.commit(mv).await.expect("batch");
        cur = p
            .accounts
            .get(&a.account_id)
            .await
            .expect("read")
            .expect("a");
    }
    let (newest, more) = p
        .batches
        .list(&a.account_id, None, 2, None)
        .await
        .expect("list");
    assert!(more);
    assert_eq!(
        newest
            .iter()
            .map(|b| b.batch_id.clone())
            .collect::<Vec<_>>(),
        vec![id("bat", 5), id("bat", 4)]
    );
    let (rest, more) = p
        .batches
        .list(&a.account_id, None, 10, Some(id("bat", 4)))
        .await
        .expect("list");
    assert!(!more);
    assert_eq!(rest.len(), 3);
    let b1 = id("bat", 1);
    let queued = p
        .batches
        .mark_queued(&a.account_id, &b1)
        .await
        .expect("queued")
        .expect("the batch as written");
    assert_eq!(
        (queued.batch_id.as_str(), queued.status),
        (b1.as_str(), BatchStatus::Queued)
    );
    assert!(
        p.batches
            .mark_queued(&a.account_id, &b1)
            .await
            .expect("queued again is fine")
            .is_none(),
        "only the write that queued it gets it back"
    );
    assert!(p
        .batches
        .mark_queued(&a.account_id, &id("bat", 77))
        .await
        .expect("absent is fine")
        .is_none());
    let (queued, _) = p
        .batches
        .list(&a.account_id, Some(BatchStatus::Queued), 10, None)
        .await
        .expect("list");
    assert_eq!(
        queued
            .iter()
            .map(|b| b.batch_id.clone())
            .collect::<Vec<_>>(),
        vec![b1.clone()]
    );

    // The lease: only on an accepted batch whose lease ran out.
    let b2 = id("bat", 2);
    assert!(!p
        .batches
        .take_lease(&a.account_id, &b2, T0 + 60_000, T0 + 120_000)
        .await
        .expect("lease"));
    assert!(p
        .batches
        .take_lease(&a.account_id, &b2, T0 + 60_001, T0 + 120_001)
        .await
        .expect("lease"));
    assert!(!p
        .batches
        .take_lease(&a.account_id, &b2, T0 + 60_002, T0 + 120_002)
        .await
        .expect("lease"));
    assert!(!p
        .batches
        .take_lease(&a.account_id, &b1, T0 + 999_999, T0 + 999_999)
        .await
        .expect("lease"));

    // Dispatch claims move `next_dispatch` from what the claimer read.
    assert!(p
        .batches
        .advance_dispatch(&a.account_id, &b1, 0, 4, T0 + 8)
        .await
        .expect("claim"));
    assert!(!p
        .batches
        .advance_dispatch(&a.account_id, &b1, 0, 4, T0 + 8)
        .await
        .expect("claim"));
    assert!(p
        .batches
        .advance_dispatch(&a.account_id, &b1, 4, 10, T0 + 8)
        .await
        .expect("claim"));
    // The tail is claimed by the compare above; an atomic claim of more than is left, or of
    // an absent batch, claims nothing.
    assert_eq!(
        p.batches
            .claim_next(&a.account_id, &b1, 1, 10, T0 + 9)
            .await
            .expect("claim"),
        None
    );
    assert_eq!(
        p.batches
            .claim_next(&a.account_id, &id("bat", 77), 1, 10, T0 + 9)
            .await
            .expect("claim absent"),
        None
    );
    // Racing atomic claims (every task end claims one) hand out each task exactly once.
    let b3 = id("bat", 3);
    assert_eq!(
        p.batches
            .claim_next(&a.account_id, &b3, 3, 10, T0 + 9)
            .await
            .expect("claim"),
        Some((0, 3))
    );
    let claims = futures_util::future::join_all(
        (0..12).map(|_| p.batches.claim_next(&a.account_id, &b3, 1, 10, T0 + 9)),
    )
    .await;
    let mut got: Vec<(u32, u32)> = claims
        .into_iter()
        .filter_map(|c| c.expect("claim"))
        .collect();
    got.sort();
    assert_eq!(got, (3..10).map(|i| (i, i + 1)).collect::<Vec<_>>());
    assert!(p
        .batches
        .get(&a.account_id, &id("bat", 77))
        .await
        .expect("read")
        .is_none());
    let got = p
        .batches
        .get(&a.account_id, &b1)
        .await
        .expect("read")
        .expect("b");
    assert_eq!((got.next_dispatch, got.dispatched_ms), (10, T0 + 8));

    assert!(p
        .batches
        .request_cancel(&a.account_id, &b1)
        .await
        .expect("cancel"));
    assert!(!p
        .batches
        .request_cancel(&a.account_id, &id("bat", 77))
        .await
        .expect("cancel"));
    let open = p.batches.open().await.expect("open");
    assert_eq!(
        open.iter()
            .filter(|(acct, _)| acct == &a.account_id)
            .count(),
        5
    );
    // A settled batch leaves the open index and can no longer be cancelled.
    let st = Settlement {
        held: Credits(490),
        charged: Credits(490),
        refunded: Credits::ZERO,
        released: Credits::ZERO,
        counts: TaskCounts {
            total: 10,
            succeeded: 10,
            ..Default::default()
        },
    };
    let b3 = p
        .batches
        .get(&a.account_id, &id("bat", 3))
        .await
        .expect("read")
        .expect("b");
    assert!(p.money.settle(&b3, &st, T0 + 10).await.expect("settle"));
    assert!(!p
        .batches
        .request_cancel(&a.account_id, &b3.batch_id)
        .await
        .expect("cancel"));
    let open = p.batches.open().await.expect("open");
    assert!(!open.iter().any(|(_, b)| b == &b3.batch_id));
    let all = all_pages(|t| p.batches.page(&a.account_id, t)).await;
    assert_eq!(
        all.iter().map(|b| b.batch_id.clone()).collect::<Vec<_>>(),
        (1..=5).map(|n| id("bat", n)).collect::<Vec<_>>()
    );
}

/// Task records and progress shards, with the exactly-once marks.
pub async fn tasks(p: &Ports) {
    let b = batch(&id("acct", 8), &id("bat", 8), 300);
    let records: Vec<TaskRecord> = (0..300).map(|i| task(&b, i)).collect();
    p.tasks.put_all(&records).await.expect("put");
    p.tasks.put_all(&records[..10]).await.expect("idempotent");
    let t5 = p
        .tasks
        .get(&b.batch_id, 5)
        .await
        .expect("read")
        .expect("task");
    assert_eq!(t5.task_id, records[5].task_id);
    assert!(p.tasks.get(&b.batch_id, 300).await.expect("read").is_none());
    let some = p
        .tasks
        .get_many(&b.batch_id, &[1, 299, 300, 150])
        .await
        .expect("many");
    let mut idxs: Vec<u32> = some.iter().map(|t| t.idx).collect();
    idxs.sort();
    assert_eq!(idxs, vec![1, 150, 299]);
    let (first, more) = p.tasks.list(&b.batch_id, 4, None).await.expect("list");
    assert!(more);
    assert_eq!(
        first.iter().map(|t| t.idx).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    let (next, _) = p.tasks.list(&b.batch_id, 2, Some(3)).await.expect("list");
    assert_eq!(next.iter().map(|t| t.idx).collect::<Vec<_>>(), vec![4, 5]);
    let (tail, more) = p
        .tasks
        .list(&b.batch_id, 10, Some(297))
        .await
        .expect("list");
    assert_eq!((tail.len(), more), (2, false));
    let all = all_pages(|t| p.tasks.page(&b.batch_id, t)).await;
    assert_eq!(all.len(), 300);

    // The worker's read: a task and its batch in one request, each found or not on its own.
    let neither = p
        .tasks
        .get_with_batch(&b.account_id, &b.batch_id, 5)
        .await
        .expect("read both");
    assert!(neither.0.is_none(), "no batch stored yet");
    assert_eq!(neither.1.map(|t| t.idx), Some(5));
    let a = funded(p, 8, 100_000).await;
    let mut mv = movement(&a, EntryKind::PreDeduct, -490, T0 + 1);
    mv.held_delta = Credits(490);
    mv.creates = vec![NewRecord::Batch(b.clone())];
    p.money.commit(mv).await.expect("batch");
    let (batch_read, task_read) = p
        .tasks
        .get_with_batch(&b.account_id, &b.batch_id, 5)
        .await
        .expect("read both");
    assert_eq!(
        (
            batch_read.map(|x| x.task_count),
            task_read.map(|t| t.task_id)
        ),
        (Some(300), Some(records[5].task_id.clone()))
    );
    let (batch_read, task_read) = p
        .tasks
        .get_with_batch(&b.account_id, &b.batch_id, 300)
        .await
        .expect("read both");
    assert!(batch_read.is_some() && task_read.is_none());
    let (batch_read, _) = p
        .tasks
        .get_with_batch(&id("acct", 99), &b.batch_id, 5)
        .await
        .expect("read both");
    assert!(
        batch_read.is_none(),
        "a batch is found under its own account only"
    );

    // `save` lands only on the version the writer read: a stale copy never overwrites.
    let mut running = t5.clone();
    running.status = TaskStatus::Running;
    running.version = 1;
    assert!(!p.tasks.save(&running, 1).await.expect("save"));
    assert!(p.tasks.save(&running, 0).await.expect("save"));
    let mut stale = t5.clone();
    stale.provider_job_id = Some("job-from-a-stale-copy".into());
    stale.version = 1;
    assert!(!p.tasks.save(&stale, 0).await.expect("stale copy"));
    let now = p
        .tasks
        .get(&b.batch_id, 5)
        .await
        .expect("read")
        .expect("task");
    assert_eq!(
        (now.status, now.version, now.provider_job_id),
        (TaskStatus::Running, 1, None)
    );
    let mut ghost = running.clone();
    ghost.idx = 999;
    assert!(!p.tasks.save(&ghost, 0).await.expect("save absent"));
    // A recovery writes only what is missing: the task that moved on stays as it is.
    let mut fresh = records.clone();
    fresh.push(task(&b, 300));
    assert_eq!(p.tasks.put_missing(&fresh).await.expect("put"), 1);
    let still = p
        .tasks
        .get(&b.batch_id, 5)
        .await
        .expect("read")
        .expect("task");
    assert_eq!(still.status, TaskStatus::Running);

    p.progress.init(&b.batch_id, 300).await.expect("init");
    let shards = p.progress.all(&b.batch_id).await.expect("all");
    let sizes: Vec<u32> = shards.iter().map(|s| s.size).collect();
    assert_eq!(sizes.len() as u32, 300u32.div_ceil(SHARD_SIZE));
    assert_eq!(sizes.iter().sum::<u32>(), 300);
    assert_eq!(sizes.last(), Some(&(300 - 300 / SHARD_SIZE * SHARD_SIZE)));
    assert!(p
        .progress
        .mark_started(&b.batch_id, &[260])
        .await
        .expect("start"));
    assert!(!p
        .progress
        .mark_started(&b.batch_id, &[260])
        .await
        .expect("start twice"));
    assert!(!p
        .progress
        .mark_started(&id("bat", 77), &[1])
        .await
        .expect("absent shard"));
    // Marks of one shard go in one write, all or none.
    assert!(p
        .progress
        .mark_started(&b.batch_id, &[200, 201, 202])
        .await
        .expect("three at once"));
    assert!(!p
        .progress
        .mark_started(&b.batch_id, &[203, 202])
        .await
        .expect("one started already"));
    assert!(p
        .progress
        .mark_started(&b.batch_id, &[])
        .await
        .expect("none"));
    for (idxs, why) in [
        (&[203u32, 7][..], "two shards"),
        (&[203, 203][..], "repeated"),
    ] {
        assert!(
            matches!(
                p.progress.mark_started(&b.batch_id, idxs).await,
                Err(StoreError::Refused { .. })
            ),
            "{why}"
        );
    }
    let three = p
        .progress
        .shard(&b.batch_id, 200 / SHARD_SIZE)
        .await
        .expect("read")
        .expect("shard");
    assert_eq!(
        (three.n_started, three.started.contains_key("203")),
        (3, false)
    );
    let ended = |idx, was_started, outcome| EndMark {
        batch_id: b.batch_id.clone(),
        idx,
        was_started,
        outcome,
    };
    assert!(p
        .progress
        .end_mark(&[ended(260, false, Outcome::Succeeded)])
        .await
        .expect("mark")
        .is_none());
    // The mark that lands brings its shard back as written.
    let written = p
        .progress
        .end_mark(&[ended(260, true, Outcome::Succeeded)])
        .await
        .expect("mark")
        .expect("landed");
    assert_eq!(
        (
            written.ended.get("260").copied(),
            written.counts().ended(),
            written.size
        ),
        (Some(Outcome::Succeeded), 1, 44)
    );
    // The end takes the started mark's place (it keeps a full shard small); the counts,
    // and every condition, still know the task started and ended.
    assert_eq!(written.started.get("260"), None);
    assert_eq!(written.counts().started, 1);
    assert!(!p
        .progress
        .mark_started(&b.batch_id, &[260])
        .await
        .expect("ended"));
    // A second end is refused, whichever way its writer saw the start.
    for was_started in [true, false] {
        assert!(p
            .progress
            .end_mark(&[ended(260, was_started, Outcome::Failed)])
            .await
            .expect("twice")
            .is_none());
    }
    assert!(p
        .progress
        .end_mark(&[ended(7, false, Outcome::Cancelled)])
        .await
        .expect("mark")
        .is_some());
    assert!(!p
        .progress
        .mark_started(&b.batch_id, &[7])
        .await
        .expect("ended first"));
    assert!(p
        .progress
        .end_mark(&[EndMark {
            batch_id: id("bat", 77),
            ..ended(1, false, Outcome::Cancelled)
        }])
        .await
        .expect("absent shard")
        .is_none());
    // End marks of one shard go in one write, all or none: 200..=202 started above.
    assert!(p
        .progress
        .end_mark(&[
            ended(200, true, Outcome::Succeeded),
            ended(201, false, Outcome::Rejected),
        ])
        .await
        .expect("one not as its writer saw it")
        .is_none());
    let together = p
        .progress
        .end_mark(&[
            ended(200, true, Outcome::Succeeded),
            ended(201, true, Outcome::Rejected),
            ended(210, false, Outcome::Cancelled),
            ended(202, true, Outcome::Succeeded),
        ])
        .await
        .expect("four at once")
        .expect("landed");
    assert_eq!(
        (
            together.n_succeeded,
            together.n_rejected,
            together.n_cancelled,
            together.n_ended_unstarted,
            together.n_started,
            together.started.len(),
            together.ended.len(),
        ),
        (2, 1, 1, 1, 3, 0, 4)
    );
    for (marks, why) in [
        (
            vec![
                ended(211, false, Outcome::Succeeded),
                ended(7, false, Outcome::Succeeded),
            ],
            "two shards",
        ),
        (
            vec![
                ended(211, false, Outcome::Succeeded),
                ended(211, false, Outcome::Failed),
            ],
            "repeated",
        ),
        (vec![], "none"),
    ] {
        assert!(
            matches!(
                p.progress.end_mark(&marks).await,
                Err(StoreError::Refused { .. })
            ),
            "{why}"
        );
    }
    // Initialising again (a recovery) leaves the shards, and their marks, as they are.
    p.progress.init(&b.batch_id, 300).await.expect("init again");
    let s0 = p
        .progress
        .shard(&b.batch_id, 0)
        .await
        .expect("read")
        .expect("shard");
    assert_eq!(s0.ended.get("7"), Some(&Outcome::Cancelled));
    let s1 = p
        .progress
        .shard(&b.batch_id, shard_of(260))
        .await
        .expect("read")
        .expect("shard");
    assert_eq!(
        (s1.n_started, s1.n_succeeded, s1.counts().ended()),
        (1, 1, 1)
    );
    let s0 = p
        .progress
        .shard(&b.batch_id, 0)
        .await
        .expect("read")
        .expect("shard");
    assert_eq!((s0.n_cancelled, s0.n_ended_unstarted), (1, 1));
    assert_eq!(s0.ended.get("7"), Some(&Outcome::Cancelled));
}

fn key(account_id: &str, n: u64) -> ApiKeyRecord {
    ApiKeyRecord {
        key_hash: format!("{:064x}", n),
        key_id: id("key", n),
        account_id: account_id.to_string(),
        name: format!("key {n}"),
        prefix: "vgk_abcdefgh".into(),
        last4: "wxyz".into(),
        enabled: true,
        created_ms: T0,
        scopes: vec!["read".into()],
        rate_limit_per_min: None,
        ip_allowlist: vec![],
        expires_ms: None,
        revoked_ms: None,
        disabled_reason: None,
        throttle: None,
        updated_ms: T0,
    }
}

/// Keys: the rules of who may change what, throttles, termination toggles.
pub async fn keys(p: &Ports) {
    let acct = id("acct", 9);
    let k1 = key(&acct, 1);
    let k2 = key(&acct, 2);
    p.keys.put(&k1).await.expect("put");
    p.keys.put(&k2).await.expect("put");
    assert!(p.keys.put(&k1).await.is_err(), "a hash is never reused");
    p.keys
        .put(&key(&id("acct", 10), 3))
        .await
        .expect("other account");

    // The key and its account in one round trip; either may be missing.
    let a = funded(p, 11, 700).await;
    let k4 = key(&a.account_id, 4);
    p.keys.put(&k4).await.expect("put");
    let (k, acc) = p
        .keys
        .get_with_account(&k4.key_hash, &a.account_id)
        .await
        .expect("read both");
    assert_eq!(k.map(|k| k.key_id), Some(k4.key_id.clone()));
    let acc = acc.expect("the account");
    assert_eq!(
        (acc.account_id, acc.balance),
        (a.account_id.clone(), a.balance)
    );
    let (k, acc) = p
        .keys
        .get_with_account("no-such-hash", &id("acct", 999))
        .await
        .expect("read neither");
    assert!(k.is_none() && acc.is_none());
    let (k, acc) = p
        .keys
        .get_with_account(&k1.key_hash, &a.account_id)
        .await
        .expect("read both");
    assert_eq!(
        (k.map(|k| k.account_id), acc.map(|a| a.account_id)),
        (Some(acct.clone()), Some(a.account_id.clone())),
        "each item as stored, whichever account was asked for"
    );
    assert_eq!(
        p.keys
            .get(&k1.key_hash)
            .await
            .expect("read")
            .map(|k| k.key_id),
        Some(k1.key_id.clone())
    );
    let mine = p.keys.list(&acct).await.expect("list");
    assert_eq!(mine.len(), 2);
    assert!(p
        .keys
        .find(&acct, &key(&acct, 3).key_id)
        .await
        .expect("find")
        .is_none());
    assert!(p
        .keys
        .find(&id("acct", 10), &k1.key_id)
        .await
        .expect("find")
        .is_none());

    let patch = KeyPatch {
        name: Some("renamed".into()),
        rate_limit_per_min: Some(60),
        ip_allowlist: Some(vec!["10.0.0.0/8".into()]),
        ..Default::default()
    };
    let k = p
        .keys
        .patch(&k1.key_hash, &patch, T0 + 1)
        .await
        .expect("patch")
        .expect("key");
    assert_eq!(
        (
            k.name.as_str(),
            k.rate_limit_per_min,
            k.ip_allowlist.len(),
            k.updated_ms
        ),
        ("renamed", Some(60), 1, T0 + 1)
    );
    let clear = KeyPatch {
        ip_allowlist: Some(vec![]),
        ..Default::default()
    };
    let k = p
        .keys
        .patch(&k1.key_hash, &clear, T0 + 2)
        .await
        .expect("patch")
        .expect("key");
    assert!(k.ip_allowlist.is_empty());
    // An operator's disable binds the customer; the operator may lift it.
    let by_op = KeyPatch {
        enabled: Some(false),
        by_operator: true,
        ..Default::default()
    };
    let k = p
        .keys
        .patch(&k1.key_hash, &by_op, T0 + 3)
        .await
        .expect("patch")
        .expect("key");
    assert_eq!(
        (k.enabled, k.disabled_reason.as_deref()),
        (false, Some("operator"))
    );
    let enable = KeyPatch {
        enabled: Some(true),
        ..Default::default()
    };
    assert!(p
        .keys
        .patch(&k1.key_hash, &enable, T0 + 4)
        .await
        .expect("patch")
        .is_none());
    let k = p
        .keys
        .patch(
            &k1.key_hash,
            &KeyPatch {
                by_operator: true,
                ..enable.clone()
            },
            T0 + 5,
        )
        .await
        .expect("patch")
        .expect("key");
    assert_eq!((k.enabled, k.disabled_reason), (true, None));

    // Throttles: one at a time until it runs out; lifted early by an operator.
    let t = Throttle {
        limit: 6,
        since_ms: T0 + 10,
        until_ms: T0 + 910,
        reason: "error_rate".into(),
    };
    assert!(p.keys.throttle(&k1.key_hash, &t).await.expect("throttle"));
    let again = Throttle {
        since_ms: T0 + 500,
        ..t.clone()
    };
    assert!(!p
        .keys
        .throttle(&k1.key_hash, &again)
        .await
        .expect("throttle"));
    let later = Throttle {
        since_ms: T0 + 911,
        until_ms: T0 + 2_000,
        ..t.clone()
    };
    assert!(p
        .keys
        .throttle(&k1.key_hash, &later)
        .await
        .expect("throttle"));
    assert!(p.keys.lift_throttle(&k1.key_hash).await.expect("lift"));
    assert!(!p.keys.lift_throttle(&k1.key_hash).await.expect("lift"));
    assert!(!p.keys.throttle(&"0".repeat(64), &t).await.expect("absent"));

    // Termination disables every enabled key; reinstatement re-enables only those.
    p.keys
        .patch(
            &k2.key_hash,
            &KeyPatch {
                enabled: Some(false),
                ..Default::default()
            },
            T0 + 20,
        )
        .await
        .expect("patch");
    assert_eq!(
        p.keys
            .set_all_for_account(&acct, false, "account_terminated", T0 + 21)
            .await
            .expect("off"),
        1
    );
    let k = p.keys.get(&k1.key_hash).await.expect("read").expect("key");
    assert_eq!(
        (k.enabled, k.disabled_reason.as_deref()),
        (false, Some("account_terminated"))
    );
    assert!(p
        .keys
        .patch(&k1.key_hash, &enable, T0 + 22)
        .await
        .expect("patch")
        .is_none());
    assert_eq!(
        p.keys
            .set_all_for_account(&acct, true, "account_terminated", T0 + 23)
            .await
            .expect("on"),
        1
    );
    let k2_now = p.keys.get(&k2.key_hash).await.expect("read").expect("key");
    assert_eq!(
        (k2_now.enabled, k2_now.disabled_reason.as_deref()),
        (false, Some("manual"))
    );

    // Revocation is final.
    let k = p
        .keys
        .revoke(&k1.key_hash, T0 + 30)
        .await
        .expect("revoke")
        .expect("key");
    assert_eq!((k.enabled, k.revoked_ms), (false, Some(T0 + 30)));
    assert!(p
        .keys
        .revoke(&k1.key_hash, T0 + 31)
        .await
        .expect("revoke")
        .is_none());
    let by_op_enable = KeyPatch {
        enabled: Some(true),
        by_operator: true,
        ..Default::default()
    };
    assert!(p
        .keys
        .patch(&k1.key_hash, &by_op_enable, T0 + 32)
        .await
        .expect("patch")
        .is_none());
    let found = p
        .keys
        .find(&acct, &k1.key_id)
        .await
        .expect("find")
        .expect("key");
    assert_eq!(found.revoked_ms, Some(T0 + 30));
}

/// Rate windows, failed-authentication counts and address blocks.
pub async fn rate_windows(p: &Ports) {
    let w = 1_800_000_000_000 / 60_000 * 60_000;
    let caps = |key, account| Caps { key, account };
    let admitted = |key, account| Admission::Admitted(WindowCounts { key, account });
    for n in 1..=3 {
        assert_eq!(
            p.rates
                .admit("acct_a", "key_a", w, caps(3, 10))
                .await
                .expect("admit"),
            admitted(n, n)
        );
    }
    assert_eq!(
        p.rates
            .admit("acct_a", "key_a", w, caps(3, 10))
            .await
            .expect("admit"),
        Admission::KeyFull(Some(WindowCounts { key: 3, account: 3 })),
        "the refusal brings the counts that stood"
    );
    assert_eq!(
        p.rates
            .admit("acct_a", "key_a", w, caps(0, 10))
            .await
            .expect("admit"),
        Admission::KeyFull(None)
    );
    assert_eq!(
        p.rates
            .admit("acct_a", "key_a", w, caps(5, 10))
            .await
            .expect("admit"),
        admitted(4, 4)
    );
    // Another key of the same account shares the account's count, and its budget.
    assert_eq!(
        p.rates
            .admit("acct_a", "key_c", w, caps(5, 5))
            .await
            .expect("admit"),
        admitted(1, 5)
    );
    assert_eq!(
        p.rates
            .admit("acct_a", "key_c", w, caps(5, 5))
            .await
            .expect("admit"),
        Admission::AccountFull(Some(WindowCounts { key: 1, account: 5 }))
    );
    assert_eq!(
        p.rates.count("acct_a", "key_a", w).await.expect("count"),
        WindowCounts { key: 4, account: 5 }
    );
    assert_eq!(
        p.rates
            .count("acct_a", "key_a", w - 60_000)
            .await
            .expect("count"),
        WindowCounts::default()
    );
    let m = p
        .rates
        .count_errors("acct_a", "key_a", w, true, false)
        .await
        .expect("errors");
    assert_eq!(
        m.key,
        KeyMinute {
            requests: 4,
            client_errors: 1,
            payment_required: 0
        }
    );
    assert_eq!(m.account.requests, 5);
    let m = p
        .rates
        .count_errors("acct_a", "key_c", w, true, true)
        .await
        .expect("errors");
    assert_eq!((m.key.client_errors, m.key.payment_required), (1, 1));
    assert_eq!(
        (m.account.client_errors, m.account.payment_required),
        (2, 1)
    );
    // Errors counted first, then a request admitted into the same window.
    let m = p
        .rates
        .count_errors("acct_b", "key_b", w, true, false)
        .await
        .expect("errors");
    assert_eq!(m.key.requests, 0);
    assert_eq!(
        p.rates
            .admit("acct_b", "key_b", w, caps(1, 1))
            .await
            .expect("admit"),
        admitted(1, 1)
    );
    // The operator's exemptions: one list, replaced only at the version it was read.
    let none = p.rates.exemptions().await.expect("exemptions");
    assert_eq!((none.version, none.list.len()), (0, 0));
    let one = vec![BlockExemption {
        cidr: "10.0.0.0/8".into(),
        reason: "fuzzer".into(),
        created_ms: w,
    }];
    assert!(p.rates.set_exemptions(0, &one).await.expect("set"));
    assert!(!p.rates.set_exemptions(0, &[]).await.expect("stale"));
    let read = p.rates.exemptions().await.expect("exemptions");
    assert_eq!((read.version, read.list), (1, one));
    assert!(p.rates.set_exemptions(1, &[]).await.expect("set"));
    assert!(p.rates.exemptions().await.expect("read").list.is_empty());
    assert!(p
        .rates
        .ip_block("10.1.2.3", w)
        .await
        .expect("block")
        .is_none());
    assert!(p
        .rates
        .block_ip("10.1.2.3", "auth_failures", w, w + 900_000)
        .await
        .expect("block"));
    assert!(!p
        .rates
        .block_ip("10.1.2.3", "auth_failures", w + 1, w + 900_001)
        .await
        .expect("block"));
    let b = p
        .rates
        .ip_block("10.1.2.3", w + 10)
        .await
        .expect("block")
        .expect("in force");
    assert_eq!(
        (b.until_ms, b.reason.as_str()),
        (w + 900_000, "auth_failures")
    );
    assert!(p
        .rates
        .ip_block("10.1.2.3", w + 900_000)
        .await
        .expect("block")
        .is_none());
    assert!(p
        .rates
        .block_ip("10.1.2.3", "auth_failures", w + 900_001, w + 1_800_000)
        .await
        .expect("block"));
    assert!(p.rates.unblock_ip("10.1.2.3").await.expect("unblock"));
    assert!(!p.rates.unblock_ip("10.1.2.3").await.expect("unblock"));
    assert!(p
        .rates
        .ip_block("10.1.2.3", w + 900_002)
        .await
        .expect("block")
        .is_none());
}

fn usage_rec(account_id: &str, at: i64, n: u32, kind: &str) -> UsageRecord {
    UsageRecord {
        account_id: account_id.to_string(),
        usage_id: format!("{at:013}#use_{n:04}"),
        at_ms: at,
        kind: kind.into(),
        key_id: Some(
            if n.is_multiple_of(2) {
                "key_even"
            } else {
                "key_odd"
            }
            .into(),
        ),
        method: "GET".into(),
        route: if n.is_multiple_of(3) {
            "/v1/credits"
        } else {
            "/v1/batches"
        }
        .into(),
        status: if n.is_multiple_of(5) { 404 } else { 200 },
        latency_ms: 3,
        source_ip: Some("127.0.0.1".into()),
        request_id: format!("req_{n}"),
        user_agent: None,
        code: None,
        expires_at: at / 1_000 + 90 * 86_400,
        count: None,
    }
}

/// The usage log: one record per call, filters, ranges, pages.
pub async fn usage(p: &Ports) {
    let acct = id("acct", 11);
    for n in 0..30u32 {
        p.usage
            .put(&usage_rec(&acct, T0 + i64::from(n) * 1_000, n, "request"))
            .await
            .expect("put");
    }
    assert!(
        p.usage
            .put(&usage_rec(&acct, T0, 0, "request"))
            .await
            .is_err(),
        "written once"
    );
    let anomaly = usage_rec(&acct, T0 + 500, 99, "anomaly");
    p.usage.put(&anomaly).await.expect("anomaly");
    p.usage
        .put(&anomaly)
        .await
        .expect("an anomaly may be written again");
    let all = UsageFilter::default();
    let (newest, more) = p
        .usage
        .list(&acct, TimeRange::ALL, &all, 5, None)
        .await
        .expect("list");
    assert!(more);
    assert_eq!(newest[0].request_id, "req_29");
    let (next, _) = p
        .usage
        .list(
            &acct,
            TimeRange::ALL,
            &all,
            2,
            Some(newest[4].usage_id.clone()),
        )
        .await
        .expect("list");
    assert_eq!(
        next.iter()
            .map(|u| u.request_id.as_str())
            .collect::<Vec<_>>(),
        vec!["req_24", "req_23"]
    );
    let filter = UsageFilter {
        key_id: Some("key_even".into()),
        route: Some("/v1/credits".into()),
        status: Some(200),
        kind: Some("request".into()),
    };
    let (hits, more) = p
        .usage
        .list(&acct, TimeRange::ALL, &filter, 50, None)
        .await
        .expect("list");
    assert!(!more);
    assert_eq!(
        hits.iter()
            .map(|u| u.request_id.as_str())
            .collect::<Vec<_>>(),
        // req_0 answered 404 (every fifth does).
        vec!["req_24", "req_18", "req_12", "req_6"]
    );
    let range = TimeRange {
        from_ms: T0 + 10_000,
        to_ms: T0 + 12_000,
    };
    let (window, _) = p
        .usage
        .list(&acct, range, &all, 50, None)
        .await
        .expect("list");
    assert_eq!(window.len(), 3);
    let anomalies = UsageFilter {
        kind: Some("anomaly".into()),
        ..Default::default()
    };
    let (a, _) = p
        .usage
        .list(&acct, TimeRange::ALL, &anomalies, 50, None)
        .await
        .expect("list");
    assert_eq!(a.len(), 1);
    let paged = all_pages(|t| p.usage.page(&acct, TimeRange::ALL, t)).await;
    assert_eq!(paged.len(), 31);
    assert!(paged.windows(2).all(|w| w[0].usage_id < w[1].usage_id));
    let in_range = all_pages(|t| p.usage.page(&acct, range, t)).await;
    assert_eq!(in_range.len(), 3);
    let (none, _) = p
        .usage
        .list(&id("acct", 12), TimeRange::ALL, &all, 5, None)
        .await
        .expect("list");
    assert!(none.is_empty());
}

fn endpoint(account_id: &str, n: u64) -> EndpointRecord {
    EndpointRecord {
        account_id: account_id.to_string(),
        endpoint_id: id("we", n),
        url: format!("https://hooks.example.com/{n}"),
        description: Some("d".into()),
        event_types: None,
        enabled: true,
        disabled_reason: None,
        disabled_ms: None,
        secrets: vec![SigningSecret {
            sealed: format!("mem1:fixture-{n}"),
            created_ms: T0,
            retires_ms: None,
        }],
        secrets_version: 0,
        failing_since_ms: None,
        last_success_ms: None,
        created_ms: T0,
        updated_ms: T0,
    }
}

/// Endpoints: changes, the failure clock, disabling once, rotation by version.
pub async fn endpoints(p: &Ports) {
    let acct = id("acct", 13);
    let (e1, e2) = (endpoint(&acct, 1), endpoint(&acct, 2));
    p.requests
        .create_all(vec![
            NewRecord::Endpoint(e1.clone()),
            NewRecord::Endpoint(e2.clone()),
        ])
        .await
        .expect("create");
    assert_eq!(
        p.endpoints
            .list(&acct)
            .await
            .expect("list")
            .iter()
            .map(|e| e.endpoint_id.clone())
            .collect::<Vec<_>>(),
        vec![e1.endpoint_id.clone(), e2.endpoint_id.clone()]
    );
    assert!(p
        .endpoints
        .get(&id("acct", 14), &e1.endpoint_id)
        .await
        .expect("read")
        .is_none());
    let patch = EndpointPatch {
        url: Some("https://hooks.example.com/new".into()),
        description: Some(None),
        event_types: Some(Some(vec!["task.failed".into()])),
        enabled: None,
    };
    let e = p
        .endpoints
        .patch(&acct, &e1.endpoint_id, &patch, T0 + 1)
        .await
        .expect("patch")
        .expect("e");
    assert_eq!(
        (
            e.url.as_str(),
            e.description.clone(),
            e.event_types.clone(),
            e.updated_ms
        ),
        (
            "https://hooks.example.com/new",
            None,
            Some(vec!["task.failed".to_string()]),
            T0 + 1
        )
    );
    assert!(p
        .endpoints
        .patch(&acct, &id("we", 77), &patch, T0)
        .await
        .expect("patch")
        .is_none());

    p.endpoints
        .mark_failing(&acct, &e1.endpoint_id, T0 + 2)
        .await
        .expect("failing");
    p.endpoints
        .mark_failing(&acct, &e1.endpoint_id, T0 + 3)
        .await
        .expect("failing again");
    assert_eq!(
        p.endpoints
            .get(&acct, &e1.endpoint_id)
            .await
            .expect("read")
            .expect("e")
            .failing_since_ms,
        Some(T0 + 2)
    );
    p.endpoints
        .mark_healthy(&acct, &e1.endpoint_id, T0 + 4)
        .await
        .expect("healthy");
    let e = p
        .endpoints
        .get(&acct, &e1.endpoint_id)
        .await
        .expect("read")
        .expect("e");
    assert_eq!(
        (e.failing_since_ms, e.last_success_ms),
        (None, Some(T0 + 4))
    );
    p.endpoints
        .mark_failing(&acct, &id("we", 77), T0)
        .await
        .expect("absent is fine");
    p.endpoints
        .mark_healthy(&acct, &id("we", 77), T0)
        .await
        .expect("absent is fine");
    assert!(p
        .endpoints
        .get(&acct, &id("we", 77))
        .await
        .expect("read")
        .is_none());

    let d = p
        .endpoints
        .disable(&acct, &e1.endpoint_id, "gone", T0 + 5)
        .await
        .expect("disable")
        .expect("e");
    assert_eq!(
        (d.enabled, d.disabled_reason.as_deref(), d.disabled_ms),
        (false, Some("gone"), Some(T0 + 5))
    );
    assert!(p
        .endpoints
        .disable(&acct, &e1.endpoint_id, "gone", T0 + 6)
        .await
        .expect("disable")
        .is_none());
    p.endpoints
        .mark_failing(&acct, &e1.endpoint_id, T0 + 7)
        .await
        .expect("failing");
    let on = EndpointPatch {
        enabled: Some(true),
        ..Default::default()
    };
    let e = p
        .endpoints
        .patch(&acct, &e1.endpoint_id, &on, T0 + 8)
        .await
        .expect("patch")
        .expect("e");
    assert_eq!(
        (
            e.enabled,
            e.disabled_reason,
            e.disabled_ms,
            e.failing_since_ms
        ),
        (true, None, None, None)
    );

    assert_eq!(
        p.endpoints
            .set_all_for_account(&acct, false, "account_terminated", T0 + 9)
            .await
            .expect("off"),
        2
    );
    assert_eq!(
        p.endpoints
            .set_all_for_account(&acct, false, "account_terminated", T0 + 9)
            .await
            .expect("off"),
        0
    );
    assert_eq!(
        p.endpoints
            .set_all_for_account(&acct, true, "account_terminated", T0 + 10)
            .await
            .expect("on"),
        2
    );

    // Rotation: the change lands with its request record, from the version read.
    let rotate = |version| Change::RotateSecrets {
        account_id: acct.clone(),
        endpoint_id: e2.endpoint_id.clone(),
        version,
        secrets: vec![],
        now_ms: T0 + 11,
    };
    assert!(stale(
        p.requests
            .change_and_create(
                rotate(5),
                vec![NewRecord::Request(request(&acct, "rotate#1"))]
            )
            .await
    ));
    assert!(p
        .requests
        .get(&acct, "rotate#1")
        .await
        .expect("read")
        .is_none());
    p.requests
        .change_and_create(
            rotate(0),
            vec![NewRecord::Request(request(&acct, "rotate#1"))],
        )
        .await
        .expect("rotate");
    let e = p
        .endpoints
        .get(&acct, &e2.endpoint_id)
        .await
        .expect("read")
        .expect("e");
    assert_eq!(
        (e.secrets_version, e.secrets.len(), e.updated_ms),
        (1, 0, T0 + 11)
    );
    assert_eq!(
        dup(p
            .requests
            .change_and_create(
                rotate(1),
                vec![NewRecord::Request(request(&acct, "rotate#1"))]
            )
            .await),
        Some(0)
    );
    assert_eq!(
        p.endpoints
            .get(&acct, &e2.endpoint_id)
            .await
            .expect("read")
            .expect("e")
            .secrets_version,
        1
    );

    assert!(p
        .endpoints
        .delete(&acct, &e2.endpoint_id)
        .await
        .expect("delete"));
    assert!(!p
        .endpoints
        .delete(&acct, &e2.endpoint_id)
        .await
        .expect("delete"));
}

fn event(account_id: &str, n: u64, kind: &str) -> EventRecord {
    EventRecord {
        account_id: account_id.to_string(),
        event_id: format!("evt_{n:04}"),
        event_type: kind.into(),
        created_ms: T0 + (n as i64) * 10,
        body: json!({ "n": n }).to_string(),
        expires_at: T0 / 1_000 + 90 * 86_400,
    }
}

/// The event log: the first body wins; newest-first lists by type.
pub async fn events(p: &Ports) {
    let acct = id("acct", 15);
    for n in 0..12u64 {
        let kind = if n.is_multiple_of(2) {
            "task.failed"
        } else {
            "task.succeeded"
        };
        p.events
            .put_once(&event(&acct, n, kind))
            .await
            .expect("put");
    }
    let mut second = event(&acct, 3, "task.succeeded");
    second.body = "{\"changed\":true}".into();
    let kept = p.events.put_once(&second).await.expect("put");
    assert_eq!(kept.body, event(&acct, 3, "").body);
    assert_eq!(
        p.events
            .get(&acct, "evt_0003")
            .await
            .expect("read")
            .expect("e")
            .body,
        kept.body
    );
    let (page, more) = p.events.list(&acct, None, 5, None).await.expect("list");
    assert!(more);
    assert_eq!(page[0].event_id, "evt_0011");
    let last = page.last().expect("events");
    let (next, _) = p
        .events
        .list(
            &acct,
            None,
            3,
            Some((last.created_ms, last.event_id.clone())),
        )
        .await
        .expect("list");
    assert_eq!(
        next.iter().map(|e| e.event_id.as_str()).collect::<Vec<_>>(),
        vec!["evt_0006", "evt_0005", "evt_0004"]
    );
    let (failed, more) = p
        .events
        .list(&acct, Some("task.failed"), 50, None)
        .await
        .expect("list");
    assert_eq!((failed.len(), more), (6, false));
    assert!(p
        .events
        .get(&id("acct", 16), "evt_0003")
        .await
        .expect("read")
        .is_none());
}

fn delivery(endpoint_id: &str, n: u64) -> DeliveryRecord {
    DeliveryRecord {
        endpoint_id: endpoint_id.to_string(),
        event_id: format!("evt_{n:04}"),
        account_id: id("acct", 17),
        event_type: "task.failed".into(),
        created_ms: T0 + n as i64 * 10,
        status: DeliveryStatus::Pending,
        attempts_made: 0,
        recorded: 0,
        schedule_base: 0,
        claim_until_ms: 0,
        next_attempt_ms: Some(T0),
        attempts: vec![],
        expires_at: T0 / 1_000 + 90 * 86_400,
    }
}

fn attempt(n: u32, code: u16) -> AttemptLog {
    AttemptLog {
        n,
        at_ms: T0 + i64::from(n),
        status_code: Some(code),
        latency_ms: 5,
        response_body: Some("ok".into()),
        error: None,
        trigger: "schedule".into(),
    }
}

/// Deliveries: claim and record, the dead claimer's retake, redelivery, lists.
pub async fn deliveries(p: &Ports) {
    let ep = id("we", 17);
    let d = delivery(&ep, 1);
    assert!(p.deliveries.create(&d).await.expect("create"));
    assert!(!p.deliveries.create(&d).await.expect("create once"));
    let ev = d.event_id.as_str();
    assert!(!p
        .deliveries
        .claim(&ep, ev, 2, T0, T0 + 100)
        .await
        .expect("claim out of turn"));
    assert!(p
        .deliveries
        .claim(&ep, ev, 1, T0, T0 + 100)
        .await
        .expect("claim"));
    assert!(!p
        .deliveries
        .claim(&ep, ev, 1, T0 + 50, T0 + 150)
        .await
        .expect("held"));
    // The claimer died: after its claim runs out, attempt 1 may be taken again.
    assert!(p
        .deliveries
        .claim(&ep, ev, 1, T0 + 101, T0 + 200)
        .await
        .expect("retake"));
    assert!(!p
        .deliveries
        .record(
            &ep,
            ev,
            &attempt(2, 500),
            DeliveryStatus::Pending,
            Some(T0 + 5_000)
        )
        .await
        .expect("not claimed"));
    assert!(p
        .deliveries
        .record(
            &ep,
            ev,
            &attempt(1, 500),
            DeliveryStatus::Pending,
            Some(T0 + 5_000)
        )
        .await
        .expect("record"));
    assert!(!p
        .deliveries
        .record(
            &ep,
            ev,
            &attempt(1, 500),
            DeliveryStatus::Pending,
            Some(T0 + 5_000)
        )
        .await
        .expect("twice"));
    let got = p.deliveries.get(&ep, ev).await.expect("read").expect("d");
    assert_eq!(
        (
            got.attempts_made,
            got.recorded,
            got.claim_until_ms,
            got.next_attempt_ms,
            got.attempts.len()
        ),
        (1, 1, 0, Some(T0 + 5_000), 1)
    );
    assert_eq!(
        p.deliveries
            .restart(&ep, ev, T0 + 6)
            .await
            .expect("restart"),
        None,
        "still pending"
    );
    assert!(p
        .deliveries
        .claim(&ep, ev, 2, T0 + 5_000, T0 + 5_100)
        .await
        .expect("claim"));
    assert!(p
        .deliveries
        .record(&ep, ev, &attempt(2, 200), DeliveryStatus::Succeeded, None)
        .await
        .expect("record"));
    let done = p.deliveries.get(&ep, ev).await.expect("read").expect("d");
    assert_eq!(
        (done.status, done.next_attempt_ms, done.attempts.len()),
        (DeliveryStatus::Succeeded, None, 2)
    );
    assert!(!p
        .deliveries
        .claim(&ep, ev, 3, T0 + 5_200, T0 + 5_300)
        .await
        .expect("finished"));
    assert_eq!(
        p.deliveries
            .restart(&ep, ev, T0 + 7_000)
            .await
            .expect("restart"),
        Some(3)
    );
    let again = p.deliveries.get(&ep, ev).await.expect("read").expect("d");
    assert_eq!(
        (again.status, again.schedule_base, again.next_attempt_ms),
        (DeliveryStatus::Pending, 2, Some(T0 + 7_000))
    );
    assert_eq!(
        p.deliveries
            .restart(&ep, "evt_none", T0)
            .await
            .expect("restart"),
        None
    );

    for n in 2..=9 {
        let mut d = delivery(&ep, n);
        if n.is_multiple_of(2) {
            d.status = DeliveryStatus::Failed;
        }
        p.deliveries.create(&d).await.expect("create");
    }
    let (newest, more) = p
        .deliveries
        .list(&ep, TimeRange::ALL, None, 3, None)
        .await
        .expect("list");
    assert!(more);
    assert_eq!(
        newest
            .iter()
            .map(|d| d.event_id.as_str())
            .collect::<Vec<_>>(),
        vec!["evt_0009", "evt_0008", "evt_0007"]
    );
    let last = newest.last().expect("d");
    let (next, _) = p
        .deliveries
        .list(
            &ep,
            TimeRange::ALL,
            None,
            2,
            Some((last.created_ms, last.event_id.clone())),
        )
        .await
        .expect("list");
    assert_eq!(
        next.iter().map(|d| d.event_id.as_str()).collect::<Vec<_>>(),
        vec!["evt_0006", "evt_0005"]
    );
    let range = TimeRange {
        from_ms: T0 + 30,
        to_ms: T0 + 70,
    };
    let (failed, _) = p
        .deliveries
        .list(&ep, range, Some(DeliveryStatus::Failed), 50, None)
        .await
        .expect("list");
    assert_eq!(
        failed
            .iter()
            .map(|d| d.event_id.as_str())
            .collect::<Vec<_>>(),
        vec!["evt_0006", "evt_0004"]
    );
    let all = all_pages(|t| p.deliveries.page(&ep, TimeRange::ALL, t)).await;
    assert_eq!(all.len(), 9);
    assert!(all.windows(2).all(|w| w[0].created_ms <= w[1].created_ms));
    assert_eq!(
        all_pages(|t| p.deliveries.page(&ep, range, t)).await.len(),
        5
    );
}

/// Exports: runs supersede each other; a completed export is never rewritten.
pub async fn exports(p: &Ports) {
    let acct = id("acct", 18);
    let rec = |n: u64| ExportRecord {
        account_id: acct.clone(),
        export_id: id("exp", n),
        request_id: format!("x{n}"),
        dataset: shared::domain::export::Dataset::Ledger,
        format: shared::domain::export::Format::Csv,
        from_ms: 0,
        to_ms: i64::MAX,
        status: "queued".into(),
        rows_written: 0,
        bytes: 0,
        sha256: None,
        s3_key: format!("accounts/{acct}/exports/{n}.csv"),
        manifest_key: format!("accounts/{acct}/exports/{n}.csv.manifest.json"),
        upload_id: None,
        run: 0,
        created_ms: T0,
        completed_ms: None,
        error: None,
        peak_buffer_bytes: 0,
        nudged_ms: None,
        run_started_ms: None,
        expires_at: T0 / 1_000 + 30 * 86_400,
    };
    for n in 1..=3 {
        p.requests
            .create_all(vec![NewRecord::Export(rec(n))])
            .await
            .expect("create");
    }
    let (listed, more) = p.exports.list(&acct, 2, None).await.expect("list");
    assert!(more);
    assert_eq!(
        listed
            .iter()
            .map(|x| x.export_id.clone())
            .collect::<Vec<_>>(),
        vec![id("exp", 3), id("exp", 2)]
    );
    let (rest, more) = p
        .exports
        .list(&acct, 5, Some(id("exp", 2)))
        .await
        .expect("list");
    assert_eq!((rest.len(), more), (1, false));

    // A queued export is nudged once per gap, however many readers ask.
    let q = rec(3);
    assert!(p
        .exports
        .nudge(&q, T0 + 60_001, 60_000)
        .await
        .expect("nudge"));
    assert!(!p
        .exports
        .nudge(&q, T0 + 60_002, 60_000)
        .await
        .expect("again"));
    assert!(!p
        .exports
        .nudge(&q, T0 + 120_001, 60_000)
        .await
        .expect("a gap"));
    assert!(p
        .exports
        .nudge(&q, T0 + 120_002, 60_000)
        .await
        .expect("later"));

    let r = rec(1);
    assert!(p
        .exports
        .start_run(&r, 1, "up-1", T0 + 1)
        .await
        .expect("start"));
    assert!(!p
        .exports
        .start_run(&r, 1, "up-1b", T0 + 1)
        .await
        .expect("start from a stale run"));
    let running = p
        .exports
        .get(&acct, &r.export_id)
        .await
        .expect("read")
        .expect("x");
    assert_eq!(
        (
            running.status.as_str(),
            running.run,
            running.upload_id.as_deref()
        ),
        ("running", 1, Some("up-1"))
    );
    assert_eq!(running.run_started_ms, Some(T0 + 1));
    assert!(p
        .exports
        .progress(&running, 1, 10, 100)
        .await
        .expect("progress"));
    // A second run takes over; the first one's writes are refused from then on.
    assert!(p
        .exports
        .start_run(&running, 2, "up-2", T0 + 1)
        .await
        .expect("takeover"));
    assert!(!p
        .exports
        .progress(&running, 1, 20, 200)
        .await
        .expect("superseded"));
    let f = ExportFinish {
        status: "completed",
        rows: 30,
        bytes: 300,
        sha256: Some("ab".repeat(32)),
        peak_buffer: 300,
        error: None,
        now_ms: T0 + 9,
    };
    assert!(!p.exports.finish(&running, 1, &f).await.expect("superseded"));
    assert!(p.exports.finish(&running, 2, &f).await.expect("finish"));
    // Only a queued export is nudged.
    assert!(!p
        .exports
        .nudge(&running, T0 + 999_999, 60_000)
        .await
        .expect("done"));
    let done = p
        .exports
        .get(&acct, &r.export_id)
        .await
        .expect("read")
        .expect("x");
    assert_eq!(
        (
            done.status.as_str(),
            done.rows_written,
            done.bytes,
            done.completed_ms,
            done.peak_buffer_bytes,
            done.sha256.clone(),
            done.error.clone()
        ),
        (
            "completed",
            30,
            300,
            Some(T0 + 9),
            300,
            f.sha256.clone(),
            None
        )
    );
    assert!(!p
        .exports
        .start_run(&done, 3, "up-3", T0 + 1)
        .await
        .expect("completed stays"));
    let failed = ExportFinish {
        status: "failed",
        sha256: None,
        error: Some("boom".into()),
        ..f
    };
    let r2 = rec(2);
    assert!(p
        .exports
        .start_run(&r2, 1, "u", T0 + 1)
        .await
        .expect("start"));
    assert!(p.exports.finish(&r2, 1, &failed).await.expect("finish"));
    let x = p
        .exports
        .get(&acct, &r2.export_id)
        .await
        .expect("read")
        .expect("x");
    assert_eq!(
        (x.status.as_str(), x.error.as_deref(), x.sha256),
        ("failed", Some("boom"), None)
    );
}

/// The queue: at-least-once with visibility, release and delete.
pub async fn queue(p: &Ports) {
    let q = QueueName::Settle;
    assert!(p.queue.has(QueueName::Tasks) && p.queue.has(QueueName::Events));
    let bodies: Vec<(String, u64)> = (0..13).map(|i| (format!("{{\"n\":{i}}}"), 0)).collect();
    p.queue.send(q, &bodies).await.expect("send");
    let mut got = Vec::new();
    for _ in 0..10 {
        let batch = p.queue.receive(q, 0).await.expect("receive");
        assert!(batch.len() <= 10);
        if batch.is_empty() {
            break;
        }
        got.extend(batch);
    }
    let mut seen: Vec<String> = got.iter().map(|m| m.body.clone()).collect();
    seen.sort();
    let mut sent: Vec<String> = bodies.iter().map(|(b, _)| b.clone()).collect();
    sent.sort();
    assert_eq!(
        seen, sent,
        "every message once, invisible after its receive"
    );
    // Released: visible again at once; deleted: gone for good.
    p.queue
        .release(q, &got[0].receipt, 0)
        .await
        .expect("release");
    let again = p.queue.receive(q, 0).await.expect("receive");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].body, got[0].body);
    p.queue
        .delete(q, std::slice::from_ref(&again[0].receipt))
        .await
        .expect("delete");
    let rest: Vec<String> = got[1..].iter().map(|m| m.receipt.clone()).collect();
    p.queue.delete(q, &rest).await.expect("delete");
    p.queue.release(q, &got[0].receipt, 0).await.ok();
    assert!(p.queue.receive(q, 0).await.expect("receive").is_empty());
}

/// Blobs: objects, multipart assembly, abort, links.
pub async fn blobs(p: &Ports) {
    let key = "accounts/acct_x/files/a.jsonl";
    assert_eq!(p.blobs.get(key).await.expect("get"), None);
    assert_eq!(p.blobs.size(key).await.expect("size"), None);
    p.blobs
        .put(
            key,
            b"{\"prompt\":\"a\"}\n".to_vec(),
            "application/jsonl",
            Some("retention-days=30"),
        )
        .await
        .expect("put");
    assert_eq!(p.blobs.size(key).await.expect("size"), Some(15));
    assert_eq!(
        p.blobs.get(key).await.expect("get").as_deref(),
        Some(&b"{\"prompt\":\"a\"}\n"[..])
    );
    // Parts of at least 5 MiB except the last, as S3 requires.
    let part = vec![b'x'; 5 * 1024 * 1024];
    let big = "accounts/acct_x/exports/big.csv";
    let mut up = p
        .blobs
        .start_upload(big, "text/csv", "kind=export")
        .await
        .expect("start");
    p.blobs
        .upload_part(&mut up, part.clone())
        .await
        .expect("part");
    p.blobs
        .upload_part(&mut up, b"tail".to_vec())
        .await
        .expect("part");
    assert_eq!(
        p.blobs.size(big).await.expect("size"),
        None,
        "not visible before completion"
    );
    p.blobs.complete_upload(up).await.expect("complete");
    let got = p.blobs.get(big).await.expect("get").expect("object");
    assert_eq!(got.len(), part.len() + 4);
    assert!(got.ends_with(b"tail"));
    let gone = p
        .blobs
        .start_upload(
            "accounts/acct_x/exports/gone.csv",
            "text/csv",
            "kind=export",
        )
        .await
        .expect("start");
    p.blobs
        .abort_upload(&gone.key, &gone.upload_id)
        .await
        .expect("abort");
    assert_eq!(p.blobs.get(&gone.key).await.expect("get"), None);
    let link = p.blobs.presign_get(key, "a.jsonl").await.expect("presign");
    assert!(
        link.url.contains("acct_x/files/a.jsonl") && link.url.contains("X-Amz-Expires=3600"),
        "{}",
        link.url
    );
    assert_eq!(link.expires_in_secs, 3_600);
    let put = p
        .blobs
        .presign_put(key, "application/jsonl", "retention-days=30")
        .await
        .expect("presign");
    assert!(put.url.contains("X-Amz-Expires=3600"));
    let headers: std::collections::BTreeMap<_, _> = put.headers.into_iter().collect();
    assert_eq!(
        headers.get("x-amz-tagging").map(String::as_str),
        Some("retention-days=30"),
        "the tags travel as a header the uploader must send"
    );
    assert_eq!(
        headers.get("content-type").map(String::as_str),
        Some("application/jsonl")
    );
}

/// Global indexes are eventually consistent: a reader may miss the latest writes until the
/// replica catches up. The emulator's indexes are always current, so this runs on the twin
/// only; the use cases that read indexes (`Keys::list`, `Keys::find`, `Batches::open`) must
/// cope with it.
pub async fn stale_index_reads_miss_recent_writes(p: &Ports, m: &shared::adapters::memory::Memory) {
    let acct = id("acct", 19);
    let k1 = key(&acct, 41);
    p.keys.put(&k1).await.expect("put");
    m.serve_stale_reads(true);
    m.catch_up();
    let k2 = key(&acct, 42);
    p.keys.put(&k2).await.expect("put");
    let listed = p.keys.list(&acct).await.expect("list");
    assert_eq!(
        listed.iter().map(|k| k.key_id.clone()).collect::<Vec<_>>(),
        vec![k1.key_id.clone()]
    );
    assert!(p
        .keys
        .find(&acct, &k2.key_id)
        .await
        .expect("find")
        .is_none());
    // A point read of the item itself is strongly consistent.
    assert!(p.keys.get(&k2.key_hash).await.expect("read").is_some());
    // What the index does show is read back in its current state.
    p.keys.revoke(&k1.key_hash, T0 + 1).await.expect("revoke");
    let found = p
        .keys
        .find(&acct, &k1.key_id)
        .await
        .expect("find")
        .expect("key");
    assert_eq!(found.revoked_ms, Some(T0 + 1));
    let b = batch(&acct, &id("bat", 19), 10);
    p.requests
        .create_all(vec![NewRecord::Batch(b.clone())])
        .await
        .expect("batch");
    assert!(!p
        .batches
        .open()
        .await
        .expect("open")
        .iter()
        .any(|(_, x)| x == &b.batch_id));
    m.catch_up();
    assert!(p
        .batches
        .open()
        .await
        .expect("open")
        .iter()
        .any(|(_, x)| x == &b.batch_id));
    assert_eq!(p.keys.list(&acct).await.expect("list").len(), 2);
    m.serve_stale_reads(false);
}

/// Sealed secrets: nothing of the secret shows, and a value opens only in its own context.
pub async fn sealer(p: &Ports) {
    let secret = shared::domain::webhook::secret_from([9; 32]);
    let ctx = shared::domain::webhook::secret_context("acct_s", "we_1");
    let sealed = p.sealer.seal(&secret, &ctx).await.expect("seal");
    assert!(!sealed.contains(&secret) && !sealed.contains(&secret[6..]));
    assert_eq!(p.sealer.open(&sealed, &ctx).await.expect("open"), secret);
    let again = p.sealer.seal(&secret, &ctx).await.expect("seal again");
    assert_ne!(again, sealed, "each sealing is fresh");
    assert_eq!(p.sealer.open(&again, &ctx).await.expect("open"), secret);

    // Copied into another endpoint's record, or another account's, it opens nowhere.
    for (a, e) in [("acct_s", "we_2"), ("acct_t", "we_1")] {
        let other = shared::domain::webhook::secret_context(a, e);
        assert!(p.sealer.open(&sealed, &other).await.is_err(), "{a}/{e}");
    }
    // Damaged, or not a sealed value at all.
    let mut damaged = sealed.clone();
    let last = damaged
        .pop()
        .map_or('A', |c| if c == 'A' { 'B' } else { 'A' });
    damaged.push(last);
    assert!(p.sealer.open(&damaged, &ctx).await.is_err());
    assert!(p.sealer.open(&secret, &ctx).await.is_err());
}

/// Shares of a pool: at most `cap` holders at once, each a lease, given back only by its
/// holder.
pub async fn shares(p: &Ports) {
    let pool = format!("webhooks#{}", id("acct", 77));
    let until = T0 + 60_000;
    let mut held = Vec::new();
    for i in 0..3 {
        let h = format!("h{i}");
        let k = p
            .rates
            .take_share(&pool, &h, 3, T0, until)
            .await
            .expect("take")
            .expect("a share is free");
        held.push((k, h));
    }
    let slots: std::collections::BTreeSet<u32> = held.iter().map(|(k, _)| *k).collect();
    assert_eq!(slots, (0..3).collect(), "three holders, three shares");
    let take = |h: &'static str, at: i64| {
        let pool = pool.clone();
        async move {
            p.rates
                .take_share(&pool, h, 3, at, at + 60_000)
                .await
                .expect("take")
        }
    };
    assert_eq!(take("h3", T0).await, None, "all three are held");
    // Another pool is another account's.
    let other = format!("webhooks#{}", id("acct", 78));
    assert!(p
        .rates
        .take_share(&other, "x", 3, T0, until)
        .await
        .expect("take")
        .is_some());
    // Only the holder gives a share back.
    let (k0, h0) = held[0].clone();
    p.rates
        .give_back_share(&pool, k0, "not-the-holder")
        .await
        .expect("give back");
    assert_eq!(take("h4", T0).await, None);
    p.rates
        .give_back_share(&pool, k0, &h0)
        .await
        .expect("give back");
    assert_eq!(take("h5", T0).await, Some(k0));
    // Leases run out: a dead holder's share is free after `until`, and the old holder giving
    // it back later takes nothing from the new one.
    let after = until + 1;
    let k6 = take("h6", after).await.expect("a lapsed share is free");
    p.rates
        .give_back_share(&pool, k6, "h1")
        .await
        .expect("give back");
    p.rates
        .give_back_share(&pool, k6, "h2")
        .await
        .expect("give back");
    let (k7, k8) = (take("h7", after).await, take("h8", after).await);
    assert!(k7.is_some() && k8.is_some() && k7 != Some(k6) && k8 != Some(k6));
    assert_eq!(take("h9", after).await, None, "h6's share is still h6's");

    // Many at once: never more than the cap.
    let busy = format!("webhooks#{}", id("acct", 79));
    let takes = (0..12).map(|i| {
        let busy = busy.clone();
        async move {
            p.rates
                .take_share(&busy, &format!("c{i}"), 4, T0, until)
                .await
                .expect("take")
        }
    });
    let got: Vec<u32> = futures_util::future::join_all(takes)
        .await
        .into_iter()
        .flatten()
        .collect();
    let distinct: std::collections::BTreeSet<u32> = got.iter().copied().collect();
    assert_eq!((got.len(), distinct.len()), (4, 4), "{got:?}");
}

/// Console sessions: stored once, read back as stored, ended once.
pub async fn sessions(p: &Ports) {
    let rec = SessionRecord {
        session_hash: format!("h{}", id("sess", 5)),
        kind: SessionKind::Customer,
        credential_hash: "kh".into(),
        subject: "acct_x".into(),
        csrf_token: "csrf_x".into(),
        created_ms: T0,
        expires_ms: T0 + 1_000,
        ended_ms: None,
        expires_at: T0 / 1_000 + 86_401,
    };
    p.sessions.create(&rec).await.expect("create");
    assert!(
        p.sessions.create(&rec).await.is_err(),
        "a session id is never reused"
    );
    assert_eq!(
        p.sessions.get(&rec.session_hash).await.expect("get"),
        Some(rec.clone())
    );
    assert_eq!(p.sessions.get("nobody").await.expect("get"), None);
    assert!(p
        .sessions
        .end(&rec.session_hash, T0 + 5)
        .await
        .expect("end"));
    assert!(!p
        .sessions
        .end(&rec.session_hash, T0 + 6)
        .await
        .expect("end"));
    assert!(!p.sessions.end("nobody", T0).await.expect("end"));
    let ended = p.sessions.get(&rec.session_hash).await.expect("get");
    assert_eq!(ended.and_then(|s| s.ended_ms), Some(T0 + 5));
}

/// The SLA measurements: atomic adds that concurrent task ends never lose, 5xx minutes with
/// the minute's request counts kept beside them, the probe's minutes counted once, and a
/// month's close created once, inside the compensation's transaction or alone.
pub async fn sla(p: &Ports) {
    use shared::domain::sla::{bucket_of, Exclusion, MinuteCounts, TaskClass};
    use shared::ports::sla::{SlaCloseRecord, TaskEnd};
    let acct = id("acct", 40);
    let month = "2026-11";
    let measured = |processing_ms, platform_failure| TaskClass::Measured {
        processing_ms,
        queue_ms: 1_000,
        platform_failure,
    };
    let measured_q = |processing_ms, queue_ms| TaskClass::Measured {
        processing_ms,
        queue_ms,
        platform_failure: false,
    };
    let end = |account_id: &str, model, class| TaskEnd {
        account_id: account_id.to_string(),
        month: month.to_string(),
        model,
        class,
    };
    // 40 ends at once on one item: every add counts.
    let adds = (0..40).map(|i| {
        let class = if i % 10 == 9 {
            TaskClass::Excluded {
                cause: Exclusion::ProviderFailure,
                queue_ms: None,
            }
        } else {
            measured(60_000 + i64::from(i), i % 10 == 0)
        };
        let acct = acct.clone();
        async move { p.sla.add_tasks(&[end(&acct, Model::Sora2, class)]).await }
    });
    for r in futures_util::future::join_all(adds).await {
        r.expect("add");
    }
    p.sla
        .add_tasks(&[end(&acct, Model::VeoPro, measured(300_000, false))])
        .await
        .expect("add");
    let m = p.sla.month(&acct, month).await.expect("month");
    assert_eq!(m.processing[&Model::Sora2].total(), 36);
    assert_eq!(
        m.queue[&Model::Sora2].total(),
        36,
        "the excluded had no slot"
    );
    assert_eq!(m.platform_failures[&Model::Sora2], 4);
    assert_eq!(
        m.excluded[&(Model::Sora2, "provider_failure".to_string())],
        4
    );
    assert_eq!(
        m.processing[&Model::VeoPro].counts,
        std::collections::BTreeMap::from([(bucket_of(300_000), 1)])
    );
    assert_eq!(
        p.sla.month(&acct, "2026-10").await.expect("month"),
        Default::default(),
        "another month is empty"
    );

    // Times over the whole range (1 ms to a day, processing and queue apart): the month
    // reads back every bucket, however the adds are spread over items.
    let other = id("acct", 41);
    let mut processing = std::collections::BTreeMap::<u32, u64>::new();
    let mut queue = std::collections::BTreeMap::<u32, u64>::new();
    let mut ms = 1_i64;
    let mut q = 86_400_000_i64;
    while ms < 86_400_000 {
        p.sla
            .add_tasks(&[end(&other, Model::VeoPro, measured_q(ms, q))])
            .await
            .expect("add");
        *processing.entry(bucket_of(ms)).or_default() += 1;
        *queue.entry(bucket_of(q)).or_default() += 1;
        ms = ms * 3 / 2 + 1;
        q = q * 2 / 3;
    }
    let m = p.sla.month(&other, month).await.expect("month");
    assert_eq!(m.processing[&Model::VeoPro].counts, processing);
    assert_eq!(m.queue[&Model::VeoPro].counts, queue);
    assert!(processing.len() > 30, "the adds cross many buckets");

    // Ends added in one call (an invocation's, several to an item, two accounts, two
    // months) count as the same ends added one by one.
    let ends_of = |a: &str, b: &str| -> Vec<TaskEnd> {
        (0..30_i64)
            .map(|i| TaskEnd {
                account_id: if i % 3 == 0 { a } else { b }.to_string(),
                month: if i % 4 == 0 { "2026-10" } else { month }.to_string(),
                model: if i % 5 == 0 {
                    Model::VeoPro
                } else {
                    Model::Sora2
                },
                class: if i % 7 == 0 {
                    TaskClass::Excluded {
                        cause: Exclusion::Cancelled,
                        queue_ms: (i % 2 == 0).then_some(2_000 + i),
                    }
                } else {
                    TaskClass::Measured {
                        processing_ms: 60_000 + 1_000 * (i % 3),
                        queue_ms: 1_000 + 100_000 * (i % 2),
                        platform_failure: i % 6 == 1,
                    }
                },
            })
            .collect()
    };
    let (a1, a2, b1, b2) = (
        id("acct", 42),
        id("acct", 43),
        id("acct", 44),
        id("acct", 45),
    );
    p.sla.add_tasks(&ends_of(&a1, &a2)).await.expect("add");
    for e in ends_of(&b1, &b2) {
        p.sla.add_tasks(&[e]).await.expect("add");
    }
    for (together, alone) in [(&a1, &b1), (&a2, &b2)] {
        for m in [month, "2026-10"] {
            let t = p.sla.month(together, m).await.expect("month");
            assert_eq!(t, p.sla.month(alone, m).await.expect("month"), "{m}");
            assert!(
                t.processing.values().map(|h| h.total()).sum::<u64>() > 0,
                "{m}"
            );
        }
    }

    // A 5xx minute: its counts are the rate window's, with the 5xx beside them.
    let minute = shared::domain::sla::minute_of(1_795_000_000_000);
    let caps = Caps {
        key: 100,
        account: 100,
    };
    for _ in 0..3 {
        p.rates
            .admit(&acct, "key_s", minute, caps)
            .await
            .expect("admit");
    }
    p.rates
        .count_errors(&acct, "key_s", minute, true, false)
        .await
        .expect("4xx");
    for _ in 0..2 {
        p.sla
            .add_server_error(&acct, minute, minute + 86_400_000)
            .await
            .expect("5xx");
    }
    let m = p
        .sla
        .month(&acct, &shared::domain::time::month_of(minute))
        .await
        .expect("month");
    assert_eq!(
        m.server_errors,
        std::collections::BTreeMap::from([(minute, 2)])
    );
    let counts = p
        .sla
        .minutes(&acct, &[minute, minute + 60_000])
        .await
        .expect("minutes");
    assert_eq!(
        counts,
        std::collections::BTreeMap::from([(
            minute,
            MinuteCounts {
                admitted: 3,
                client_errors: 1,
                server_errors: 2
            }
        )]),
        "a minute nothing counted is absent"
    );

    // The probe: a minute is ok once however often it ran; the first failure is kept.
    let t = 1_795_000_020_000 / 60_000 * 60_000;
    for m in [t, t, t + 60_000] {
        p.sla.record_probe(m, None).await.expect("probe");
    }
    p.sla
        .record_probe(t + 120_000, Some("health: connection refused"))
        .await
        .expect("probe");
    p.sla
        .record_probe(t + 120_000, Some("a later failure"))
        .await
        .expect("probe");
    let probes = p
        .sla
        .probes(&shared::domain::time::month_of(t))
        .await
        .expect("probes");
    assert_eq!(probes.ok_minutes, 2);
    assert_eq!(
        probes.failed,
        std::collections::BTreeMap::from([(t + 120_000, "health: connection refused".into())])
    );

    // The close: once, with the compensation's entry, and never again.
    let a = funded(p, 41, 1_000).await;
    let close = SlaCloseRecord {
        account_id: a.account_id.clone(),
        month: month.into(),
        closed_ms: T0,
        minutes: 43_200,
        down_minutes: 60,
        availability_ppm: 998_611,
        charged: 5_000,
        percent: 10,
        compensation: 500,
        ledger_seq: Some(a.ledger_seq + 1),
        report: "{}".into(),
    };
    assert_eq!(
        p.sla.closed(&a.account_id, month).await.expect("read"),
        None
    );
    let mut mv = movement(&a, EntryKind::Compensation, 500, T0 + 10);
    mv.creates = vec![NewRecord::SlaClose(close.clone())];
    p.money.commit(mv).await.expect("close with compensation");
    assert_eq!(
        p.sla.closed(&a.account_id, month).await.expect("read"),
        Some(close.clone())
    );
    let a = p
        .accounts
        .get(&a.account_id)
        .await
        .expect("read")
        .expect("account");
    assert_eq!(a.balance, Credits(1_500));
    let mut again = movement(&a, EntryKind::Compensation, 500, T0 + 20);
    again.creates = vec![NewRecord::SlaClose(close.clone())];
    assert_eq!(dup(p.money.commit(again).await), Some(0), "closed once");
    assert_eq!(
        dup(p
            .requests
            .create_all(vec![NewRecord::SlaClose(close)])
            .await),
        Some(0)
    );
    let a = p
        .accounts
        .get(&a.account_id)
        .await
        .expect("read")
        .expect("account");
    assert_eq!(a.balance, Credits(1_500), "nothing moved twice");

    // Platform failures by minute and account, across hours; one open incident at a time.
    use shared::ports::sla::Incident;
    let h = 1_795_000_000_000 / 3_600_000 * 3_600_000;
    for (acct, minute) in [
        ("acct_x", h + 59 * 60_000),
        ("acct_x", h + 59 * 60_000),
        ("acct_y", h + 60 * 60_000),
    ] {
        p.sla
            .add_platform_failure(acct, minute)
            .await
            .expect("count");
    }
    let per = |v: &[(&str, u64)]| -> std::collections::BTreeMap<String, u64> {
        v.iter().map(|(a, n)| (a.to_string(), *n)).collect()
    };
    assert_eq!(
        p.sla
            .platform_failures(h, h + 7_200_000)
            .await
            .expect("read"),
        std::collections::BTreeMap::from([
            (h + 59 * 60_000, per(&[("acct_x", 2)])),
            (h + 60 * 60_000, per(&[("acct_y", 1)])),
        ])
    );
    assert_eq!(
        p.sla
            .platform_failures(h + 60 * 60_000, h + 61 * 60_000)
            .await
            .expect("read")
            .len(),
        1
    );
    let inc = Incident {
        incident_id: "inc_1".into(),
        started_ms: h,
        ended_ms: None,
        last_failure_ms: h + 59 * 60_000,
        accounts: per(&[("acct_x", 2)]),
    };
    let other = Incident {
        incident_id: "inc_2".into(),
        ..inc.clone()
    };
    assert_eq!(p.sla.open_incident().await.expect("read"), None);
    assert!(p.sla.start_incident(&inc).await.expect("start"));
    assert!(
        !p.sla.start_incident(&other).await.expect("start"),
        "one at a time"
    );
    let mut grown = inc.clone();
    grown.accounts = per(&[("acct_x", 2), ("acct_y", 1)]);
    assert!(p.sla.update_incident(&grown).await.expect("update"));
    assert!(!p.sla.update_incident(&other).await.expect("update"));
    assert_eq!(
        p.sla.open_incident().await.expect("read"),
        Some(grown.clone())
    );
    let mut ended = grown.clone();
    ended.ended_ms = Some(h + 61 * 60_000);
    assert!(!p
        .sla
        .end_incident(&Incident {
            ended_ms: Some(1),
            ..other
        })
        .await
        .expect("end"));
    assert!(p.sla.end_incident(&ended).await.expect("end"));
    assert!(
        !p.sla.end_incident(&ended).await.expect("end"),
        "closed once"
    );
    assert_eq!(p.sla.open_incident().await.expect("read"), None);
    assert_eq!(
        p.sla
            .incidents(h + 60 * 60_000, h + 120 * 60_000)
            .await
            .expect("read"),
        vec![ended.clone()]
    );
    assert_eq!(
        p.sla
            .incidents(h + 61 * 60_000, h + 120 * 60_000)
            .await
            .expect("read"),
        vec![],
        "it ended before"
    );
}

/// Invoices: a number is taken only by the transaction that writes its document, from the
/// counter's last value; a document is immutable; lists are newest first, per series.
pub async fn invoices(p: &Ports) {
    use shared::domain::invoice::{Line, Series};
    use shared::ports::billing::{DocumentKind, InvoiceRecord};
    use shared::ports::store::{Change, CommitError, NewRecord};
    let acct = id("acct", 41);
    let doc = |series: Series, seq: u64| InvoiceRecord {
        account_id: acct.clone(),
        number: shared::domain::invoice::Number {
            series,
            year: 2026,
            seq,
        }
        .to_string(),
        series,
        year: 2026,
        seq,
        kind: DocumentKind::Purchase,
        issued_ms: T0,
        issuer: shared::config::development_issuer(),
        account_name: "Contract Co".into(),
        customer: None,
        lines: vec![Line::new("Credits top-up".into(), None, 100, 100)],
        subtotal_usd_cents: 100,
        tax_rate_bp: 0,
        tax_usd_cents: 0,
        total_usd_cents: 100,
        payment: None,
        ledger_entry: None,
        subject: None,
        includes: vec![],
    };
    let issue = |d: InvoiceRecord| {
        let change = Change::NextNumber {
            series: d.series,
            year: d.year,
            seq: d.seq,
        };
        p.requests
            .change_and_create(change, vec![NewRecord::Invoice(d)])
    };
    assert_eq!(
        p.invoices
            .last_number(Series::Invoice, 2026)
            .await
            .expect("read"),
        0
    );
    // Not the next number: refused, nothing written.
    assert!(matches!(
        issue(doc(Series::Invoice, 2)).await,
        Err(CommitError::Stale)
    ));
    assert_eq!(
        p.invoices.get(&acct, "INV-2026-000002").await.expect("get"),
        None
    );
    // Two writers plan the same number: one wins.
    let (a, b) = futures_util::future::join(
        issue(doc(Series::Invoice, 1)),
        issue(doc(Series::Invoice, 1)),
    )
    .await;
    assert_eq!(
        [a.is_ok(), b.is_ok()].iter().filter(|ok| **ok).count(),
        1,
        "{a:?} {b:?}"
    );
    for seq in 2..=4 {
        issue(doc(Series::Invoice, seq)).await.expect("issue");
    }
    issue(doc(Series::ProForma, 1)).await.expect("pro-forma");
    assert_eq!(
        p.invoices
            .last_number(Series::Invoice, 2026)
            .await
            .expect("read"),
        4
    );
    assert_eq!(
        p.invoices
            .last_number(Series::ProForma, 2026)
            .await
            .expect("read"),
        1
    );
    assert_eq!(
        p.invoices
            .last_number(Series::Invoice, 2027)
            .await
            .expect("read"),
        0
    );
    let got = p.invoices.get(&acct, "INV-2026-000003").await.expect("get");
    assert_eq!(got, Some(doc(Series::Invoice, 3)));
    let (page, more) = p
        .invoices
        .list(&acct, Series::Invoice, None, 3)
        .await
        .expect("list");
    let numbers: Vec<&str> = page.iter().map(|d| d.number.as_str()).collect();
    assert_eq!(
        numbers,
        ["INV-2026-000004", "INV-2026-000003", "INV-2026-000002"]
    );
    assert!(more);
    let (rest, more) = p
        .invoices
        .list(&acct, Series::Invoice, Some("INV-2026-000002"), 3)
        .await
        .expect("list");
    assert_eq!(rest.len(), 1);
    assert!(!more);
    let (pf, _) = p
        .invoices
        .list(&acct, Series::ProForma, None, 10)
        .await
        .expect("list");
    assert_eq!(pf.len(), 1);
    let (none, _) = p
        .invoices
        .list(&id("acct", 42), Series::Invoice, None, 10)
        .await
        .expect("list");
    assert!(none.is_empty());

    // A card payment's reversals move its counter once, only from what was read.
    let payment = shared::ports::billing::PaymentRecord {
        payment_intent: "pi_contract".into(),
        account_id: acct.clone(),
        session_id: "cs_contract".into(),
        credits: 1_000,
        paid_usd_cents: 1_000,
        invoice: "INV-2026-000001".into(),
        reversed_credits: 0,
    };
    assert_eq!(p.invoices.payment("pi_contract").await.expect("read"), None);
    p.requests
        .create_all(vec![NewRecord::Payment(payment.clone())])
        .await
        .expect("create");
    let reverse = |from, to| {
        let change = Change::PaymentReversed {
            payment_intent: "pi_contract".into(),
            from,
            to,
        };
        p.requests.change_and_create(change, vec![])
    };
    let (a, b) = futures_util::future::join(reverse(0, 400), reverse(0, 400)).await;
    assert_eq!([a.is_ok(), b.is_ok()].iter().filter(|ok| **ok).count(), 1);
    assert!(matches!(reverse(0, 1_000).await, Err(CommitError::Stale)));
    reverse(400, 1_000).await.expect("the rest");
    let got = p.invoices.payment("pi_contract").await.expect("read");
    assert_eq!(got.map(|r| r.reversed_credits), Some(1_000));
}

/// A small batch comes whole out of its hold: one transaction creates the batch, its task
/// records and its progress shard, or nothing. A shard so created takes marks as one from
/// `Progress::init` does.
pub async fn born_with_hold(p: &Ports) {
    let a = funded(p, 31, 100_000).await;
    let b = batch(&a.account_id, &id("bat", 31), 3);
    let mut mv = movement(&a, EntryKind::PreDeduct, -147, T0 + 1);
    mv.held_delta = Credits(147);
    mv.creates = vec![NewRecord::Batch(b.clone())];
    mv.creates
        .extend((0..3).map(|i| NewRecord::Task(task(&b, i))));
    mv.creates
        .push(NewRecord::Shard(ShardRecord::empty(&b.batch_id, 0, 3)));
    p.money.commit(mv).await.expect("batch with its tasks");
    let (listed, more) = p.tasks.list(&b.batch_id, 10, None).await.expect("list");
    assert_eq!(
        (listed.iter().map(|t| t.idx).collect::<Vec<_>>(), more),
        (vec![0, 1, 2], false)
    );
    assert!(p
        .progress
        .mark_started(&b.batch_id, &[1])
        .await
        .expect("mark"));
    assert!(!p
        .progress
        .mark_started(&b.batch_id, &[1])
        .await
        .expect("once"));
    let shards = p.progress.all(&b.batch_id).await.expect("all");
    assert_eq!(
        shards
            .iter()
            .map(|s| (s.size, s.n_started))
            .collect::<Vec<_>>(),
        vec![(3, 1)]
    );

    // A task record that exists already refuses the whole transaction: no batch, no hold.
    let a = p
        .accounts
        .get(&a.account_id)
        .await
        .expect("read")
        .expect("account");
    let other = batch(&a.account_id, &id("bat", 32), 2);
    p.tasks.put_all(&[task(&other, 1)]).await.expect("put");
    let mut mv = movement(&a, EntryKind::PreDeduct, -98, T0 + 2);
    mv.held_delta = Credits(98);
    mv.creates = vec![
        NewRecord::Batch(other.clone()),
        NewRecord::Task(task(&other, 0)),
        NewRecord::Task(task(&other, 1)),
        NewRecord::Shard(ShardRecord::empty(&other.batch_id, 0, 2)),
    ];
    assert_eq!(dup(p.money.commit(mv).await), Some(2));
    assert!(p
        .batches
        .get(&a.account_id, &other.batch_id)
        .await
        .expect("read")
        .is_none());
    assert!(p
        .tasks
        .get(&other.batch_id, 0)
        .await
        .expect("read")
        .is_none());
    assert!(p
        .progress
        .all(&other.batch_id)
        .await
        .expect("all")
        .is_empty());
    let after = p
        .accounts
        .get(&a.account_id)
        .await
        .expect("read")
        .expect("account");
    assert_eq!(after.balance, a.balance);
}
