//! The Credits Ledger: append-only entries, one gap-free sequence per account.
//!
//! Every balance change is an entry, and every entry is written in the same transaction as
//! the balance change, conditioned on the account's `ledger_seq` being the one we read. So
//! `balance == sum(entries)` holds at every instant, and each entry's `balance_after` is exact.

use super::money::Credits;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Credits bought (a prepaid pack) or granted by an operator.
    Grant,
    /// A batch's hold: `task_count x unit_price`, taken at creation.
    PreDeduct,
    /// A failed or timed-out task's unit given back.
    Refund,
    /// A cancelled task's unit given back because it never reached a provider (see
    /// docs/CONTRACT.md, 2.2): not a refund, since nothing failed.
    Release,
    /// An operator's correction (reconciliation, disputes), with reason and actor.
    Adjustment,
    /// SLA compensation credits.
    Compensation,
}

impl EntryKind {
    pub const ALL: [EntryKind; 6] = [
        EntryKind::Grant,
        EntryKind::PreDeduct,
        EntryKind::Refund,
        EntryKind::Release,
        EntryKind::Adjustment,
        EntryKind::Compensation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Grant => "grant",
            EntryKind::PreDeduct => "pre_deduct",
            EntryKind::Refund => "refund",
            EntryKind::Release => "release",
            EntryKind::Adjustment => "adjustment",
            EntryKind::Compensation => "compensation",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        EntryKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The part of an account that the ledger's ordering depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Book {
    pub balance: Credits,
    pub seq: u64,
    pub last_entry_ms: i64,
}

/// Where the next entry goes and what it leaves behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextEntry {
    pub seq: u64,
    /// Strictly after the previous entry, so time order and sequence order agree.
    pub created_ms: i64,
    pub balance_after: Credits,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LedgerError {
    #[error("the balance of {balance} credits does not cover {needed}")]
    Insufficient { balance: Credits, needed: Credits },
    #[error("amount out of range")]
    Overflow,
}

/// The rule for appending `amount` (negative for debits) to a book at `now_ms`.
pub fn next_entry(book: Book, amount: Credits, now_ms: i64) -> Result<NextEntry, LedgerError> {
    let balance_after = book
        .balance
        .checked_add(amount)
        .ok_or(LedgerError::Overflow)?;
    if balance_after < Credits::ZERO {
        return Err(LedgerError::Insufficient {
            balance: book.balance,
            needed: Credits(amount.value().saturating_neg()),
        });
    }
    Ok(NextEntry {
        seq: book.seq + 1,
        created_ms: now_ms.max(book.last_entry_ms + 1),
        balance_after,
    })
}

/// A walk over ledger entries in sequence order: the one checked sum of the ledger, and what
/// is wrong with the sequence (reconciliation, statements, the tests' conservation check).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// The balance before the first entry walked.
    pub opening: Credits,
    /// The sum of the amounts walked.
    pub sum: Credits,
    /// The balance after the last entry walked, as the entries say (`balance_after`).
    pub closing: Credits,
    pub count: u64,
    next_seq: Option<u64>,
    pub findings: Vec<Finding>,
}

/// Something a walk found that a correct ledger never shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// The sequence skipped or repeated: `expected` was next, `found` came.
    Gap { expected: u64, found: u64 },
    /// An entry's `balance_after` is not the running balance.
    BalanceAfter {
        seq: u64,
        expected: Credits,
        found: Credits,
    },
}

impl Tally {
    /// A walk from the account's first entry (seq 1, balance 0).
    pub fn from_start() -> Self {
        Tally {
            next_seq: Some(1),
            ..Default::default()
        }
    }

    /// A walk that starts after an entry whose `balance_after` was `opening` (a month).
    pub fn after(opening: Credits) -> Self {
        Tally {
            opening,
            closing: opening,
            ..Default::default()
        }
    }

    /// Adds the next entry. Only an overflow of the sum is an error; everything else is a
    /// finding, and the walk continues from what the entry says.
    pub fn add(
        &mut self,
        seq: u64,
        amount: Credits,
        balance_after: Credits,
    ) -> Result<(), LedgerError> {
        if let Some(expected) = self.next_seq {
            if seq != expected {
                self.findings.push(Finding::Gap {
                    expected,
                    found: seq,
                });
            }
        }
        self.next_seq = Some(seq.saturating_add(1));
        self.sum = self.sum.checked_add(amount).ok_or(LedgerError::Overflow)?;
        let running = self
            .closing
            .checked_add(amount)
            .ok_or(LedgerError::Overflow)?;
        if running != balance_after {
            self.findings.push(Finding::BalanceAfter {
                seq,
                expected: running,
                found: balance_after,
            });
        }
        self.closing = balance_after;
        self.count += 1;
        Ok(())
    }

    /// True when every entry followed from the one before it.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
}

/// The public id of an entry; entries are per account, so the sequence number suffices.
pub fn entry_id(seq: u64) -> String {
    format!("le_{seq:012}")
}

pub fn parse_entry_id(id: &str) -> Option<u64> {
    id.strip_prefix("le_")
        .filter(|s| s.len() == 12)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(balance: i64, seq: u64, last: i64) -> Book {
        Book {
            balance: Credits(balance),
            seq,
            last_entry_ms: last,
        }
    }

    #[test]
    fn debits_never_go_below_zero() {
        let ok = next_entry(book(490, 3, 0), Credits(-490), 10);
        assert_eq!(ok.map(|e| e.balance_after), Ok(Credits(0)));
        assert_eq!(
            next_entry(book(489, 3, 0), Credits(-490), 10),
            Err(LedgerError::Insufficient {
                balance: Credits(489),
                needed: Credits(490)
            })
        );
        assert_eq!(
            next_entry(book(i64::MAX, 0, 0), Credits(1), 0),
            Err(LedgerError::Overflow)
        );
    }

    #[test]
    fn entries_are_strictly_ordered_in_time() {
        // A clock that stepped back still yields a later timestamp than the last entry.
        let e = next_entry(book(0, 7, 1_000), Credits(5), 900);
        assert_eq!(
            e,
            Ok(NextEntry {
                seq: 8,
                created_ms: 1_001,
                balance_after: Credits(5)
            })
        );
        let e = next_entry(book(0, 7, 1_000), Credits(5), 2_000);
        assert_eq!(e.map(|e| e.created_ms), Ok(2_000));
    }

    #[test]
    fn a_tally_sums_and_finds_gaps_and_wrong_balances() {
        let mut t = Tally::from_start();
        t.add(1, Credits(100), Credits(100)).ok();
        t.add(2, Credits(-40), Credits(60)).ok();
        assert!(t.is_clean());
        assert_eq!((t.sum, t.closing, t.count), (Credits(60), Credits(60), 2));
        t.add(4, Credits(5), Credits(70)).ok();
        assert_eq!(
            t.findings,
            vec![
                Finding::Gap {
                    expected: 3,
                    found: 4
                },
                Finding::BalanceAfter {
                    seq: 4,
                    expected: Credits(65),
                    found: Credits(70)
                },
            ]
        );
        let mut m = Tally::after(Credits(10));
        m.add(7, Credits(-10), Credits(0)).ok();
        assert!(m.is_clean());
        assert_eq!(
            (m.opening, m.sum, m.closing),
            (Credits(10), Credits(-10), Credits(0))
        );
        let mut o = Tally::from_start();
        assert_eq!(
            o.add(1, Credits(i64::MAX), Credits(i64::MAX))
                .and_then(|_| o.add(2, Credits(1), Credits(0))),
            Err(LedgerError::Overflow)
        );
    }

    #[test]
    fn entry_ids_round_trip() {
        assert_eq!(entry_id(42), "le_000000000042");
        assert_eq!(parse_entry_id("le_000000000042"), Some(42));
        assert_eq!(parse_entry_id("le_42"), None);
    }
}
