//! Reconciliation (contract 7.1): recompute an account's money from its ledger and compare
//! with what is stored. Nothing is corrected here: a discrepancy is reported, and an operator
//! answers it with an adjustment (a new ledger entry), never an edit.

use super::{pages, ServiceError, Services};
use crate::domain::batch::BatchStatus;
use crate::domain::ledger::{EntryKind, Finding, Tally};
use crate::ports::records::AccountRecord;
use crate::ports::TimeRange;
use futures_util::TryStreamExt;
use serde::Serialize;
use std::collections::HashMap;
use std::pin::pin;

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Discrepancy {
    /// `balance_mismatch`, `ledger_gap`, `held_mismatch`, `batch_not_closed`,
    /// `refund_tally_mismatch`, `release_tally_mismatch`, `balance_after_mismatch`.
    pub kind: &'static str,
    pub expected: i64,
    pub found: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry_id: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub account_id: String,
    pub ok: bool,
    pub balance: i64,
    pub ledger_sum: i64,
    pub ledger_entries: u64,
    pub ledger_seq: u64,
    pub held: i64,
    pub open_holds: i64,
    /// False when the account kept moving through every reading: the batches (refund
    /// tallies, `held`) were then not judged, and no difference is reported for them.
    pub held_checked: bool,
    pub batches_checked: u64,
    pub discrepancies: Vec<Discrepancy>,
}

fn d(kind: &'static str, expected: i64, found: i64) -> Discrepancy {
    Discrepancy {
        kind,
        expected,
        found,
        batch_id: None,
        entry_id: None,
    }
}

/// How often a reconciliation of a busy account reads it again before it gives up checking
/// the batches against it.
const BUSY_RETRIES: u32 = 5;

/// Reconciles one account, truthfully also while it is busy.
///
/// The ledger part is exact at any moment: entries up to the account's `ledger_seq` as read
/// never change, and the balance read is the balance after exactly those. The batch part
/// (refund tallies, `held`) compares records read at different moments, so it only counts
/// when the account did not move while the batches were read; otherwise it reads again, and
/// after `BUSY_RETRIES` reports `held_checked: false` rather than a difference that is not
/// there.
pub async fn account(svc: &Services, account: &AccountRecord) -> Result<Report, ServiceError> {
    let mut read = account.clone();
    for attempt in 0..BUSY_RETRIES {
        let report = scan(svc, &read).await?;
        let now = svc
            .accounts
            .get(&read.account_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("account"))?;
        let still = now.ledger_seq == read.ledger_seq
            && now.held == read.held
            && now.balance == read.balance;
        if still {
            return Ok(report);
        }
        if attempt + 1 == BUSY_RETRIES {
            // Still moving: keep what is exact (the ledger), leave the batches unjudged.
            let mut report = report;
            report.discrepancies.retain(|d| {
                !matches!(
                    d.kind,
                    "held_mismatch" | "refund_tally_mismatch" | "release_tally_mismatch"
                )
            });
            report.held_checked = false;
            report.ok = report.discrepancies.is_empty();
            return Ok(report);
        }
        svc.backoff(attempt).await;
        read = now;
    }
    Err(ServiceError::Internal("reconcile: unreachable".into()))
}

/// One reading: the ledger up to the account's `ledger_seq`, and every batch.
async fn scan(svc: &Services, account: &AccountRecord) -> Result<Report, ServiceError> {
    let account_id = account.account_id.as_str();
    let mut out = Vec::new();

    // The ledger, oldest first, up to what the account read names: the sum, the count, the
    // running balance, refunds and releases per batch.
    let mut tally = Tally::from_start();
    let mut refunds: HashMap<String, i64> = HashMap::new();
    let mut releases: HashMap<String, i64> = HashMap::new();
    let mut entries = pin!(pages(|t| svc.ledger.page(account_id, TimeRange::ALL, t)));
    'ledger: while let Some(page) = entries.try_next().await? {
        for e in page {
            if e.seq > account.ledger_seq {
                break 'ledger;
            }
            tally
                .add(e.seq, e.amount, e.balance_after)
                .map_err(|err| ServiceError::Internal(err.to_string()))?;
            let per_batch = match e.kind {
                EntryKind::Refund => Some(&mut refunds),
                EntryKind::Release => Some(&mut releases),
                _ => None,
            };
            if let (Some(m), Some(b)) = (per_batch, &e.batch_id) {
                *m.entry(b.clone()).or_default() += e.amount.value();
            }
        }
    }
    for f in &tally.findings {
        out.push(match *f {
            Finding::Gap { expected, found } => d("ledger_gap", expected as i64, found as i64),
            Finding::BalanceAfter {
                seq,
                expected,
                found,
            } => {
                let mut x = d("balance_after_mismatch", expected.value(), found.value());
                x.entry_id = Some(crate::domain::ledger::entry_id(seq));
                x
            }
        });
    }
    let ledger_sum = tally.sum.value();
    if ledger_sum != account.balance.value() {
        out.push(d("balance_mismatch", ledger_sum, account.balance.value()));
    }
    if tally.count != account.ledger_seq {
        out.push(d(
            "ledger_gap",
            account.ledger_seq as i64,
            tally.count as i64,
        ));
    }

    // Batches: open ones make up `held`; settled ones close exactly.
    let (mut open_holds, mut checked) = (0i64, 0u64);
    let mut batches = pin!(pages(|t| svc.batches.page(account_id, t)));
    while let Some(page) = batches.try_next().await? {
        for b in page {
            checked += 1;
            let refunded_entries = refunds.get(&b.batch_id).copied().unwrap_or(0);
            if refunded_entries != b.credits.refunded.value() {
                let mut x = d(
                    "refund_tally_mismatch",
                    refunded_entries,
                    b.credits.refunded.value(),
                );
                x.batch_id = Some(b.batch_id.clone());
                out.push(x);
            }
            let released_entries = releases.get(&b.batch_id).copied().unwrap_or(0);
            if released_entries != b.credits.released.value() {
                let mut x = d(
                    "release_tally_mismatch",
                    released_entries,
                    b.credits.released.value(),
                );
                x.batch_id = Some(b.batch_id.clone());
                out.push(x);
            }
            if b.status == BatchStatus::Completed {
                if let Some(s) = &b.settlement {
                    let closed = s.charged.value() + s.refunded.value() + s.released.value();
                    if s.held.value() != closed {
                        let mut x = d("batch_not_closed", s.held.value(), closed);
                        x.batch_id = Some(b.batch_id.clone());
                        out.push(x);
                    }
                }
            } else {
                open_holds += b.credits.held.value()
                    - b.credits.refunded.value()
                    - b.credits.released.value();
            }
        }
    }
    if open_holds != account.held.value() {
        out.push(d("held_mismatch", open_holds, account.held.value()));
    }
    Ok(Report {
        account_id: account.account_id.clone(),
        ok: out.is_empty(),
        balance: account.balance.value(),
        ledger_sum,
        ledger_entries: tally.count,
        ledger_seq: account.ledger_seq,
        held: account.held.value(),
        open_holds,
        held_checked: true,
        batches_checked: checked,
        discrepancies: out,
    })
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub accounts_checked: u64,
    pub accounts_with_discrepancies: u64,
    /// Only the accounts that do not reconcile.
    pub reports: Vec<Report>,
}

/// Operators: every account.
pub async fn all(svc: &Services) -> Result<Summary, ServiceError> {
    let mut s = Summary {
        accounts_checked: 0,
        accounts_with_discrepancies: 0,
        reports: Vec::new(),
    };
    let mut accounts = pin!(pages(|t| svc.accounts.scan(t)));
    while let Some(page) = accounts.try_next().await? {
        for a in &page {
            s.accounts_checked += 1;
            let r = account(svc, a).await?;
            if !r.ok {
                s.accounts_with_discrepancies += 1;
                s.reports.push(r);
            }
        }
    }
    Ok(s)
}
