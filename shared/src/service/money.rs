//! The one money retry loop. Every movement of credits (a batch's hold, a grant, an
//! adjustment, a refund) is planned from the account as read and committed with
//! `Money::commit`, which lands only if the account still is what was read. A writer that
//! loses the race re-reads and plans again, after a jittered backoff; a request with a
//! `request_id` first checks whether its own earlier attempt already committed.

use super::idempotency::replay;
use super::{ErrorCode, Reply, ServiceError, Services};
use crate::domain::idempotency::Scope;
use crate::ports::records::AccountRecord;
use crate::ports::store::{CommitError, MoneyMove};

/// How many times a movement re-reads and retries after losing a race on the account.
pub const MAX_COMMIT_ATTEMPTS: u32 = 50;

/// The idempotency record a movement writes (among its `creates`), by which a retry finds
/// out that an earlier attempt of the same request committed.
#[derive(Clone, Copy)]
pub struct Idempotent<'a> {
    pub owner: &'a str,
    pub scope: Scope,
    pub request_id: &'a str,
    pub fingerprint: &'a str,
}

/// How a movement ended.
pub enum Moved<T> {
    /// It committed; `T` is what the plan returned beside the move.
    Committed(T),
    /// The same request committed before (its stored reply).
    Replayed(Reply),
    /// `creates[i]` existed already, or `changes[i - creates.len()]`'s condition failed,
    /// and no earlier attempt of the request explains it.
    Duplicate(usize),
}

/// Plans a movement against the account as read, commits it, and retries on contention.
/// `plan` may refuse (insufficient credits, a terminated account): its error is returned.
pub async fn commit<T>(
    svc: &Services,
    account_id: &str,
    idem: Option<Idempotent<'_>>,
    plan: impl FnMut(&AccountRecord, i64) -> Result<(MoneyMove, T), ServiceError>,
) -> Result<Moved<T>, ServiceError> {
    let account = read(svc, account_id).await?;
    commit_from(svc, account, idem, plan).await
}

/// The same, planned first against a copy of the account the caller already holds (the
/// access guard's, read moments ago in the same request) instead of a fresh read. Nothing
/// rests on the copy being current: the commit lands only if the account is still exactly
/// that version, and a stale copy costs one refused write and the re-read `commit` makes.
pub async fn commit_from<T>(
    svc: &Services,
    mut account: AccountRecord,
    idem: Option<Idempotent<'_>>,
    mut plan: impl FnMut(&AccountRecord, i64) -> Result<(MoneyMove, T), ServiceError>,
) -> Result<Moved<T>, ServiceError> {
    let account_id = account.account_id.clone();
    let account_id = account_id.as_str();
    for attempt in 0..MAX_COMMIT_ATTEMPTS {
        let (mv, out) = plan(&account, svc.now_ms())?;
        // Stands in for DynamoDB's TransactionConflict, which the emulator never raises.
        let result = match svc.faults.check("commit_money.conflict") {
            Err(_) => Err(CommitError::Stale),
            Ok(()) => svc.money.commit(mv).await,
        };
        match result {
            Ok(()) => return Ok(Moved::Committed(out)),
            Err(CommitError::Duplicate(i)) => {
                return Ok(match replayed(svc, idem).await? {
                    Some(reply) => Moved::Replayed(reply),
                    None => Moved::Duplicate(i),
                });
            }
            Err(CommitError::Stale) => {
                // Someone else moved the account. Their move may have been this very request.
                if let Some(reply) = replayed(svc, idem).await? {
                    return Ok(Moved::Replayed(reply));
                }
                svc.backoff(attempt).await;
                account = read(svc, account_id).await?;
            }
            Err(CommitError::Store(e)) => return Err(e.into()),
        }
    }
    Err(ServiceError::reject(
        ErrorCode::RequestInProgress,
        "the account is busy; retry (with the same request_id)",
    ))
}

async fn read(svc: &Services, account_id: &str) -> Result<AccountRecord, ServiceError> {
    svc.accounts
        .get(account_id)
        .await?
        .ok_or_else(|| ServiceError::not_found("account"))
}

async fn replayed(
    svc: &Services,
    idem: Option<Idempotent<'_>>,
) -> Result<Option<Reply>, ServiceError> {
    match idem {
        Some(i) => Ok(replay(svc, i.owner, i.scope, i.request_id, i.fingerprint)
            .await?
            .map(|(reply, _)| reply)),
        None => Ok(None),
    }
}
