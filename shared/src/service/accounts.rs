//! Operator use cases: open an account, issue an API key.

use super::idempotency::{create_once, Creation};
use super::views::AccountView;
use super::{json, ErrorCode, Reply, ServiceError, Services};
use crate::domain::access::MAX_REQUEST_BUDGET_PER_MIN;
use crate::domain::account::{AccountStatus, AccountTerms};
use crate::domain::idempotency::Scope;
use crate::domain::ids;
use crate::domain::money::Credits;
use crate::ports::records::AccountRecord;
use crate::ports::store::{NewRecord, TermsPatch};

/// Idempotency records of operator requests live under this owner.
pub const OPERATOR: &str = "_operator";

pub async fn create_account(
    svc: &Services,
    request_id: &str,
    terms: AccountTerms,
    fingerprint: &str,
) -> Result<Reply, ServiceError> {
    create_once(
        svc,
        OPERATOR,
        super::idempotency::OPERATOR_RETENTION_DAYS,
        Scope::CreateAccount,
        request_id,
        fingerprint,
        |now| {
            let terms = terms.clone();
            async move {
                let account = AccountRecord {
                    account_id: svc.new_id("acct"),
                    name: terms.name,
                    plan: terms.plan,
                    status: AccountStatus::Active,
                    retention_days: terms.retention_days,
                    max_concurrency: terms.max_concurrency,
                    min_batch_size: terms.min_batch_size,
                    balance: Credits::ZERO,
                    held: Credits::ZERO,
                    lifetime_granted: Credits::ZERO,
                    lifetime_charged: Credits::ZERO,
                    lifetime_refunded: Credits::ZERO,
                    lifetime_released: Credits::ZERO,
                    ledger_seq: 0,
                    last_entry_ms: 0,
                    created_ms: now,
                    running: 0,
                    slot_audit: None,
                    sla_terms: None,
                    billing_profile: None,
                    payment_issue: None,
                    low_balance_threshold: None,
                    request_budget_per_min: None,
                    throttle: None,
                };
                Ok(Creation {
                    reply: Reply {
                        status: 201,
                        body: json(&AccountView::from(&account))?,
                        replayed: false,
                    },
                    replayed: None,
                    resource_id: account.account_id.clone(),
                    creates: vec![NewRecord::Account(account)],
                })
            }
        },
    )
    .await
}

pub async fn get_account(svc: &Services, account_id: &str) -> Result<AccountRecord, ServiceError> {
    if !ids::is_valid("acct", account_id) {
        return Err(ServiceError::not_found("account"));
    }
    svc.accounts
        .get(account_id)
        .await?
        .ok_or_else(|| ServiceError::not_found("account"))
}

/// Contract 6.1: a terminated account's keys and webhook endpoints are disabled; batches
/// already running finish and settle; the balance stays. Repeating it changes nothing.
pub async fn terminate(svc: &Services, account_id: &str) -> Result<AccountView, ServiceError> {
    get_account(svc, account_id).await?;
    let now = svc.now_ms();
    svc.accounts
        .set_status(account_id, AccountStatus::Terminated)
        .await?;
    // Status first: from here no key works, whatever the loops below have reached.
    svc.keys
        .set_all_for_account(account_id, false, TERMINATED, now)
        .await?;
    svc.endpoints
        .set_all_for_account(account_id, false, TERMINATED, now)
        .await?;
    Ok(AccountView::from(&get_account(svc, account_id).await?))
}

/// Undoes a termination: the account is active again and what termination disabled (and
/// only that) is enabled again.
pub async fn reinstate(svc: &Services, account_id: &str) -> Result<AccountView, ServiceError> {
    get_account(svc, account_id).await?;
    let now = svc.now_ms();
    svc.keys
        .set_all_for_account(account_id, true, TERMINATED, now)
        .await?;
    svc.endpoints
        .set_all_for_account(account_id, true, TERMINATED, now)
        .await?;
    svc.accounts
        .set_status(account_id, AccountStatus::Active)
        .await?;
    Ok(AccountView::from(&get_account(svc, account_id).await?))
}

const TERMINATED: &str = "account_terminated";

/// What an operator may change on an open account.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountTermsChange {
    /// 30, 90 or 180. Applies to data written from now on (see docs/OPERATIONS.md).
    #[serde(default)]
    pub retention_days: Option<u32>,
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// Requests a minute over all the account's keys; each key's own limit stays within it.
    #[serde(default)]
    pub request_budget_per_min: Option<u32>,
    /// The contract's SLA terms (docs/SLA.md): the compensation tiers, the optional
    /// latency tier, the period. Replaces the terms in force as a whole.
    #[serde(default)]
    pub sla_terms: Option<crate::domain::sla::SlaTerms>,
}

pub async fn change_terms(
    svc: &Services,
    account_id: &str,
    c: AccountTermsChange,
) -> Result<AccountView, ServiceError> {
    let bad = |m: &str| ServiceError::reject(ErrorCode::InvalidAccountTerms, m);
    if c.retention_days
        .is_some_and(|r| !crate::domain::account::RETENTION_CHOICES.contains(&r))
    {
        return Err(bad("retention_days must be one of 30, 90 or 180"));
    }
    if c.max_concurrency
        .is_some_and(|m| !(1..=10_000).contains(&m))
    {
        return Err(bad("max_concurrency must be between 1 and 10000"));
    }
    if c.request_budget_per_min
        .is_some_and(|b| !(1..=MAX_REQUEST_BUDGET_PER_MIN).contains(&b))
    {
        return Err(bad(&format!(
            "request_budget_per_min must be between 1 and {MAX_REQUEST_BUDGET_PER_MIN}"
        )));
    }
    let sla_terms = c
        .sla_terms
        .map(crate::domain::sla::SlaTerms::parse)
        .transpose()
        .map_err(|e| bad(&format!("sla_terms: {e}")))?;
    get_account(svc, account_id).await?;
    let patch = TermsPatch {
        retention_days: c.retention_days,
        max_concurrency: c.max_concurrency,
        request_budget_per_min: c.request_budget_per_min,
        sla_terms,
        billing_profile: None,
        payment_issue: None,
    };
    let a = svc
        .accounts
        .change_terms(account_id, &patch)
        .await?
        .ok_or_else(|| ServiceError::not_found("account"))?;
    Ok(AccountView::from(&a))
}

/// What a customer may change about their own account.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSettings {
    /// Credits; below this a `credits.low_balance` event goes out. `null` turns it off;
    /// leaving it out leaves it as it is.
    #[serde(default, deserialize_with = "super::present")]
    pub low_balance_threshold: Option<Option<i64>>,
}

pub async fn update_settings(
    svc: &Services,
    account_id: &str,
    s: AccountSettings,
) -> Result<AccountView, ServiceError> {
    let Some(threshold) = s.low_balance_threshold else {
        return Ok(AccountView::from(&get_account(svc, account_id).await?));
    };
    if threshold.is_some_and(|t| !(1..=1_000_000_000_000).contains(&t)) {
        return Err(ServiceError::reject(
            ErrorCode::InvalidRequest,
            "low_balance_threshold must be a positive number of credits, or null",
        ));
    }
    let account = svc
        .accounts
        .set_low_balance_threshold(account_id, threshold.map(Credits))
        .await?
        .ok_or_else(|| ServiceError::not_found("account"))?;
    Ok(AccountView::from(&account))
}

/// Query of the operators' account search.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// Matches an account whose id starts with it or whose name contains it (any case).
    pub q: Option<String>,
    pub limit: Option<String>,
}

/// Accounts read per search, at most: the search walks the account table (operators only,
/// a few thousand accounts); past this it answers with what it found and `has_more`, and a
/// longer query narrows it.
const SEARCH_READS_AT_MOST: usize = 20_000;

/// `GET /admin/v1/accounts?q=`: accounts by id prefix or name, for the operators' console.
pub async fn search(
    svc: &Services,
    p: &SearchParams,
) -> Result<super::Page<AccountView>, ServiceError> {
    use futures_util::StreamExt;
    let limit = super::parse_limit(p.limit.as_deref())?;
    let q = p.q.as_deref().map(str::trim).unwrap_or("");
    if q.chars().count() > 100 {
        return Err(ServiceError::reject(
            ErrorCode::InvalidParameter,
            "q is at most 100 characters",
        ));
    }
    let needle = q.to_lowercase();
    let now = svc.now_ms();
    let mut found = Vec::new();
    let mut read = 0usize;
    let mut more = false;
    let mut accounts = std::pin::pin!(super::pages(|t| svc.accounts.scan(t)));
    'scan: while let Some(page) = accounts.next().await {
        for a in page? {
            read += 1;
            let hit = needle.is_empty()
                || a.account_id.to_lowercase().starts_with(&needle)
                || a.name.to_lowercase().contains(&needle);
            if hit {
                if found.len() == limit {
                    more = true;
                    break 'scan;
                }
                found.push(AccountView::at(&a, now));
            }
            if read >= SEARCH_READS_AT_MOST {
                more = true;
                break 'scan;
            }
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    Ok(super::Page {
        data: found,
        has_more: more,
        next_cursor: None,
    })
}
