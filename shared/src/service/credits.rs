//! Credits: grants (packs and operator grants), the balance, and the ledger listing.

use super::accounts::{get_account, json, OPERATOR};
use super::idempotency::{check_request_id, record, replay};
use super::views::{CreditsView, LedgerEntryView};
use super::{ErrorCode, Page, Reply, ServiceError, Services, MAX_COMMIT_ATTEMPTS};
use crate::adapters::dynamo::{backoff, CommitError, LedgerPos, LedgerQuery, MoneyMove, Table};
use crate::adapters::records::{AccountRecord, LedgerRecord};
use crate::domain::cursor;
use crate::domain::idempotency::Scope;
use crate::domain::ledger::{next_entry, EntryKind};
use crate::domain::money::Credits;
use crate::domain::pricing::Pack;
use crate::domain::time::parse_rfc3339_ms;
use serde::{Deserialize, Serialize};

/// The largest explicit grant in one request: US$1,000,000.
pub const MAX_GRANT: i64 = 100_000_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    pub request_id: String,
    #[serde(default)]
    pub pack: Option<Pack>,
    #[serde(default)]
    pub amount: Option<i64>,
    pub reason: String,
    pub actor: String,
}

#[derive(Serialize)]
struct GrantReply<'a> {
    entry: LedgerEntryView,
    credits: &'a CreditsView,
}

fn bounded(field: &str, v: &str, max: usize) -> Result<(), ServiceError> {
    let n = v.trim().chars().count();
    if n == 0 || v.chars().count() > max {
        return Err(ServiceError::reject(
            ErrorCode::InvalidGrant,
            format!("{field} must be 1 to {max} characters"),
        ));
    }
    Ok(())
}

/// Credits an account (a prepaid pack, or an explicit amount), as one ledger entry.
pub async fn grant(
    svc: &Services,
    account_id: &str,
    req: GrantRequest,
    fingerprint: &str,
) -> Result<Reply, ServiceError> {
    check_request_id(&req.request_id)?;
    bounded("reason", &req.reason, 500)?;
    bounded("actor", &req.actor, 200)?;
    let (amount, pack) = match (req.pack, req.amount) {
        (Some(p), None) => (p.credits(), Some(p)),
        (None, Some(a)) if (1..=MAX_GRANT).contains(&a) => (Credits(a), None),
        (None, Some(_)) => {
            return Err(ServiceError::reject(
                ErrorCode::InvalidGrant,
                format!("amount must be between 1 and {MAX_GRANT} credits"),
            ))
        }
        _ => {
            return Err(ServiceError::reject(
                ErrorCode::InvalidGrant,
                "give exactly one of pack or amount",
            ))
        }
    };
    // Grants are scoped per account so that two accounts may use the same request_id.
    let owner = format!("{OPERATOR}#{account_id}");
    let mut account = get_account(svc, account_id).await?;
    for attempt in 0..MAX_COMMIT_ATTEMPTS {
        if let Some((reply, _)) =
            replay(svc, &owner, Scope::Grant, &req.request_id, fingerprint).await?
        {
            return Ok(reply);
        }
        let now = svc.now_ms();
        let next = next_entry(account.book(), amount, now)
            .map_err(|e| ServiceError::reject(ErrorCode::InvalidGrant, e.to_string()))?;
        let entry = LedgerRecord {
            account_id: account.account_id.clone(),
            seq: next.seq,
            created_ms: next.created_ms,
            kind: EntryKind::Grant,
            amount: amount.value(),
            balance_after: next.balance_after.value(),
            batch_id: None,
            task_id: None,
            request_id: Some(req.request_id.clone()),
            reason: Some(req.reason.trim().to_string()),
            actor: Some(req.actor.trim().to_string()),
            pack: pack.map(|p| p.id().to_string()),
            price_paid_usd_cents: pack.map(Pack::price_usd_cents),
        };
        let mut after = account.clone();
        after.balance = next.balance_after.value();
        after.lifetime_granted += amount.value();
        after.ledger_seq = next.seq;
        let body = json(&GrantReply {
            entry: LedgerEntryView::from(&entry),
            credits: &CreditsView::from(&after),
        })?;
        let reply = Reply {
            status: 201,
            body,
            replayed: false,
        };
        let req_rec = record(
            &owner,
            Scope::Grant,
            &req.request_id,
            fingerprint,
            &reply,
            &crate::domain::ledger::entry_id(next.seq),
            now,
        );
        let granted = entry.clone();
        let mv = MoneyMove {
            account_id: account.account_id.clone(),
            expected: account.book(),
            require_active: false,
            entry,
            held_delta: 0,
            granted_delta: amount.value(),
            charged_delta: 0,
            refunded_delta: 0,
            creates: vec![svc.store.new_item(Table::Requests, &req_rec)?],
            updates: vec![],
        };
        match svc.store.commit_money(mv).await {
            Ok(()) => {
                // Notification only: the grant stands whether or not this goes out.
                if let Err(e) =
                    super::events::emit(svc, &[super::events::credits_granted(&granted)]).await
                {
                    tracing::warn!(error = %e, "credits.granted event not sent");
                }
                return Ok(reply);
            }
            Err(CommitError::Duplicate(_)) => continue,
            Err(CommitError::Stale) => {
                tokio::time::sleep(backoff(attempt)).await;
                account = get_account(svc, account_id).await?;
            }
            Err(CommitError::Store(e)) => return Err(e.into()),
        }
    }
    Err(ServiceError::Internal(
        "grant: too much contention on the account".into(),
    ))
}

pub fn summary(account: &AccountRecord) -> CreditsView {
    CreditsView::from(account)
}

/// Query parameters of `GET /v1/credits/ledger`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerParams {
    pub limit: Option<String>,
    pub cursor: Option<String>,
    pub kind: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerCursor {
    s: u64,
    t: i64,
}

pub fn parse_limit(limit: Option<&str>) -> Result<usize, ServiceError> {
    match limit {
        None => Ok(50),
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=200).contains(n))
            .ok_or_else(|| {
                ServiceError::reject(
                    ErrorCode::InvalidParameter,
                    "limit must be an integer from 1 to 200",
                )
            }),
    }
}

fn parse_time(name: &str, v: Option<&str>) -> Result<Option<i64>, ServiceError> {
    v.map(|s| {
        parse_rfc3339_ms(s).ok_or_else(|| {
            ServiceError::reject(
                ErrorCode::InvalidParameter,
                format!("{name} must be an RFC 3339 timestamp, e.g. 2026-11-01T00:00:00Z"),
            )
        })
    })
    .transpose()
}

/// Newest first. `from` is inclusive, `to` exclusive.
pub async fn ledger(
    svc: &Services,
    account_id: &str,
    p: &LedgerParams,
) -> Result<Page<LedgerEntryView>, ServiceError> {
    let limit = parse_limit(p.limit.as_deref())?;
    let kind = p
        .kind
        .as_deref()
        .map(|k| {
            EntryKind::parse(k).ok_or_else(|| {
                ServiceError::reject(
                    ErrorCode::InvalidParameter,
                    "kind must be one of grant, pre_deduct, refund, adjustment, compensation",
                )
            })
        })
        .transpose()?;
    let from_ms = parse_time("from", p.from.as_deref())?;
    let to_ms = parse_time("to", p.to.as_deref())?.map(|t| t - 1);
    let after = p
        .cursor
        .as_deref()
        .map(|c| {
            cursor::decode::<LedgerCursor>(c)
                .map(|c| LedgerPos {
                    seq: c.s,
                    created_ms: c.t,
                })
                .ok_or_else(|| {
                    ServiceError::reject(
                        ErrorCode::InvalidCursor,
                        "cursor is not one this API issued",
                    )
                })
        })
        .transpose()?;
    let q = LedgerQuery {
        account_id: account_id.to_string(),
        from_ms,
        to_ms,
        kind,
        limit,
        after,
    };
    let (entries, has_more) = svc.store.list_ledger(&q).await?;
    let next_cursor = match (has_more, entries.last()) {
        (true, Some(e)) => Some(cursor::encode(&LedgerCursor {
            s: e.seq,
            t: e.created_ms,
        })),
        _ => None,
    };
    Ok(Page {
        data: entries.iter().map(LedgerEntryView::from).collect(),
        has_more: next_cursor.is_some(),
        next_cursor,
    })
}
