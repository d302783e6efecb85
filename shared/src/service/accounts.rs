//! Operator use cases: open an account, issue an API key.

use super::idempotency::{create_once, Creation};
use super::views::{AccountView, ApiKeyView};
use super::{ErrorCode, Reply, ServiceError, Services};
use crate::adapters::dynamo::Table;
use crate::adapters::records::{AccountRecord, ApiKeyRecord};
use crate::domain::account::{AccountStatus, AccountTerms};
use crate::domain::api_key::{display_parts, generate_secret, hash_secret};
use crate::domain::idempotency::Scope;
use crate::domain::ids;

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
        Scope::CreateAccount,
        request_id,
        fingerprint,
        |now| {
            let terms = terms.clone();
            async move {
                let account = AccountRecord {
                    account_id: ids::generate("acct", now),
                    name: terms.name,
                    plan: terms.plan,
                    status: AccountStatus::Active,
                    retention_days: terms.retention_days,
                    max_concurrency: terms.max_concurrency,
                    min_batch_size: terms.min_batch_size,
                    balance: 0,
                    held: 0,
                    lifetime_granted: 0,
                    lifetime_charged: 0,
                    lifetime_refunded: 0,
                    ledger_seq: 0,
                    last_entry_ms: 0,
                    created_ms: now,
                    running: 0,
                    slot_audit: None,
                    low_balance_threshold: None,
                };
                Ok(Creation {
                    reply: Reply {
                        status: 201,
                        body: json(&AccountView::from(&account))?,
                        replayed: false,
                    },
                    resource_id: account.account_id.clone(),
                    creates: vec![svc.store.new_item(Table::Accounts, &account)?],
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
    svc.store
        .get_account(account_id)
        .await?
        .ok_or_else(|| ServiceError::not_found("account"))
}

/// Issues a key. The secret is in this response only; we keep its hash.
pub async fn issue_key(
    svc: &Services,
    account_id: &str,
    name: Option<String>,
) -> Result<ApiKeyView, ServiceError> {
    let account = get_account(svc, account_id).await?;
    if account.status != AccountStatus::Active {
        return Err(ServiceError::reject(
            ErrorCode::AccountTerminated,
            "cannot issue keys for a terminated account",
        ));
    }
    let name = name.unwrap_or_else(|| "default".to_string());
    if name.trim().is_empty() || name.chars().count() > 100 {
        return Err(ServiceError::reject(
            ErrorCode::InvalidRequest,
            "name must be 1 to 100 characters",
        ));
    }
    let now = svc.now_ms();
    let secret = generate_secret();
    let (prefix, last4) = display_parts(&secret);
    let rec = ApiKeyRecord {
        key_hash: hash_secret(&secret),
        key_id: ids::generate("key", now),
        account_id: account.account_id,
        name,
        prefix,
        last4,
        enabled: true,
        created_ms: now,
    };
    svc.store.put_api_key(&rec).await?;
    Ok(ApiKeyView::new(&rec, Some(secret)))
}

/// What a customer may change about their own account.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSettings {
    /// Credits; below this a `credits.low_balance` event goes out. `null` turns it off.
    pub low_balance_threshold: Option<i64>,
}

pub async fn update_settings(
    svc: &Services,
    account_id: &str,
    s: AccountSettings,
) -> Result<AccountView, ServiceError> {
    if s.low_balance_threshold
        .is_some_and(|t| !(1..=1_000_000_000_000).contains(&t))
    {
        return Err(ServiceError::reject(
            ErrorCode::InvalidRequest,
            "low_balance_threshold must be a positive number of credits, or null",
        ));
    }
    let account = svc
        .store
        .set_low_balance_threshold(account_id, s.low_balance_threshold)
        .await?
        .ok_or_else(|| ServiceError::not_found("account"))?;
    Ok(AccountView::from(&account))
}

pub(crate) fn json<T: serde::Serialize>(v: &T) -> Result<String, ServiceError> {
    serde_json::to_string(v).map_err(|e| ServiceError::Internal(e.to_string()))
}
