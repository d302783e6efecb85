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
    /// An operator's correction (reconciliation, disputes), with reason and actor.
    Adjustment,
    /// SLA compensation credits.
    Compensation,
}

impl EntryKind {
    pub const ALL: [EntryKind; 5] = [
        EntryKind::Grant,
        EntryKind::PreDeduct,
        EntryKind::Refund,
        EntryKind::Adjustment,
        EntryKind::Compensation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Grant => "grant",
            EntryKind::PreDeduct => "pre_deduct",
            EntryKind::Refund => "refund",
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
    fn entry_ids_round_trip() {
        assert_eq!(entry_id(42), "le_000000000042");
        assert_eq!(parse_entry_id("le_000000000042"), Some(42));
        assert_eq!(parse_entry_id("le_42"), None);
    }
}
