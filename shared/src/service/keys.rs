//! API key management for one account: the customer's `/v1/api-keys` (admin scope) and the
//! operator's `/admin/v1/accounts/{id}/api-keys` run the same code. Secrets are shown once and
//! stored only as a SHA-256 hash; an idempotent replay returns the key without its secret.

use super::idempotency::{check_request_id, create_once, replay, Creation};
use super::json;
use super::views::{ApiKeyView, UsageView};
use super::{ErrorCode, Page, Reply, ServiceError, Services};
use crate::domain::access::{Cidr, KeyScope, MAX_ALLOWLIST, MAX_RATE_LIMIT_PER_MIN};
use crate::domain::api_key::{display_parts, hash_secret, secret_from};
use crate::domain::idempotency::Scope;
use crate::domain::ids;
use crate::domain::time::parse_rfc3339_ms;
use crate::ports::access::{KeyPatch, UsageFilter};
use crate::ports::records::{AccountRecord, ApiKeyRecord};
use crate::ports::store::NewRecord;
use crate::ports::time::random_bytes;
use crate::ports::TimeRange;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub rate_limit_per_min: Option<u32>,
    #[serde(default)]
    pub ip_allowlist: Option<Vec<String>>,
    #[serde(default)]
    pub expires_at: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub rate_limit_per_min: Option<u32>,
    #[serde(default)]
    pub ip_allowlist: Option<Vec<String>>,
}

fn invalid(message: impl Into<String>) -> ServiceError {
    ServiceError::reject(ErrorCode::InvalidApiKeySettings, message)
}

fn check_name(name: &str) -> Result<(), ServiceError> {
    if name.trim().is_empty() || name.chars().count() > 100 {
        return Err(ServiceError::reject(
            ErrorCode::InvalidRequest,
            "name must be 1 to 100 characters",
        ));
    }
    Ok(())
}

/// A key's limit lies within its account's request budget (which is at most
/// `MAX_RATE_LIMIT_PER_MIN`).
fn check_limit(limit: u32, account: &AccountRecord) -> Result<(), ServiceError> {
    let budget = account.request_budget().min(MAX_RATE_LIMIT_PER_MIN);
    if !(1..=budget).contains(&limit) {
        return Err(ServiceError::reject_with(
            ErrorCode::InvalidApiKeySettings,
            format!(
                "rate_limit_per_min must be 1 to {budget}, the account's request budget per minute"
            ),
            serde_json::json!({ "request_budget_per_min": budget }),
        ));
    }
    Ok(())
}

/// Validated and normalised CIDR blocks.
fn check_allowlist(list: &[String]) -> Result<Vec<String>, ServiceError> {
    if list.len() > MAX_ALLOWLIST {
        return Err(invalid(format!(
            "ip_allowlist holds at most {MAX_ALLOWLIST} blocks"
        )));
    }
    list.iter()
        .map(|c| {
            Cidr::parse(c)
                .map(|c| c.to_string())
                .map_err(|e| invalid(format!("ip_allowlist: {e}")))
        })
        .collect()
}

fn check_scopes(scopes: &[String]) -> Result<Vec<String>, ServiceError> {
    if scopes.is_empty() {
        return Err(invalid(
            "scopes: name at least one of read, batches:write, admin",
        ));
    }
    let mut out: Vec<KeyScope> = Vec::new();
    for s in scopes {
        let k = KeyScope::parse(s).ok_or_else(|| {
            invalid(format!(
                "scopes: unknown scope {s:?}; use read, batches:write or admin"
            ))
        })?;
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out.sort();
    Ok(out.iter().map(|k| k.as_str().to_string()).collect())
}

/// Creates a key. `default_scopes` is what a request without `scopes` gets (the operator's
/// first key of an account must be able to manage the others).
/// Keys an account may hold at once (revoked keys do not count).
pub const MAX_KEYS_PER_ACCOUNT: usize = 50;

pub async fn create(
    svc: &Services,
    account_id: &str,
    req: CreateKey,
    fingerprint: &str,
    default_scopes: &[KeyScope],
) -> Result<Reply, ServiceError> {
    if let Some(rid) = &req.request_id {
        check_request_id(rid)?;
        if let Some((reply, _)) =
            replay(svc, account_id, Scope::CreateKey, rid, fingerprint).await?
        {
            return Ok(reply);
        }
    }
    let account = super::accounts::get_account(svc, account_id).await?;
    if account.status != crate::domain::account::AccountStatus::Active {
        return Err(ServiceError::reject(
            ErrorCode::AccountTerminated,
            "cannot issue keys for a terminated account",
        ));
    }
    // Each key has its own rate limit, so minting keys must not multiply an account's share
    // of the platform without bound. (Two creations racing each other can both pass.)
    let live = svc
        .keys
        .list(account_id)
        .await?
        .iter()
        .filter(|k| k.revoked_ms.is_none())
        .count();
    if live >= MAX_KEYS_PER_ACCOUNT {
        return Err(ServiceError::reject(
            ErrorCode::KeyLimitReached,
            format!(
                "an account can have at most {MAX_KEYS_PER_ACCOUNT} API keys that are not revoked; revoke one first"
            ),
        ));
    }
    let name = req.name.clone().unwrap_or_else(|| "default".to_string());
    check_name(&name)?;
    let scopes = match &req.scopes {
        Some(s) => check_scopes(s)?,
        None => default_scopes
            .iter()
            .map(|s| s.as_str().to_string())
            .collect(),
    };
    if let Some(l) = req.rate_limit_per_min {
        check_limit(l, &account)?;
    }
    let ip_allowlist = check_allowlist(req.ip_allowlist.as_deref().unwrap_or_default())?;
    let now = svc.now_ms();
    let expires_ms = match &req.expires_at {
        Some(t) => {
            let ms = parse_rfc3339_ms(t)
                .ok_or_else(|| invalid("expires_at must be an RFC 3339 timestamp"))?;
            if ms <= now {
                return Err(invalid("expires_at must be in the future"));
            }
            Some(ms)
        }
        None => None,
    };
    let secret = secret_from(random_bytes(svc.random.as_ref()));
    let (prefix, last4) = display_parts(&secret);
    let rec = ApiKeyRecord {
        key_hash: hash_secret(&secret),
        key_id: svc.new_id("key"),
        account_id: account.account_id.clone(),
        name,
        prefix,
        last4,
        enabled: true,
        created_ms: now,
        scopes,
        rate_limit_per_min: req.rate_limit_per_min,
        ip_allowlist,
        expires_ms,
        revoked_ms: None,
        disabled_reason: None,
        throttle: None,
        updated_ms: now,
    };
    let shown = Reply {
        status: 201,
        body: json(&ApiKeyView::at(&rec, Some(secret), now))?,
        replayed: false,
    };
    let Some(rid) = &req.request_id else {
        svc.keys.put(&rec).await?;
        return Ok(shown);
    };
    // The stored reply is the key without its secret: a replay cannot reveal it.
    let replayed = Reply {
        status: 201,
        body: json(&ApiKeyView::at(&rec, None, now))?,
        replayed: false,
    };
    let retention_days = account.retention_days;
    create_once(
        svc,
        account_id,
        retention_days,
        Scope::CreateKey,
        rid,
        fingerprint,
        |_| {
            let creation = Creation {
                creates: vec![NewRecord::ApiKey(rec.clone())],
                reply: shown.clone(),
                replayed: Some(replayed.clone()),
                resource_id: rec.key_id.clone(),
            };
            async move { Ok(creation) }
        },
    )
    .await
}

async fn find(
    svc: &Services,
    account_id: &str,
    key_id: &str,
) -> Result<ApiKeyRecord, ServiceError> {
    if !ids::is_valid("key", key_id) {
        return Err(ServiceError::not_found("API key"));
    }
    svc.keys
        .find(account_id, key_id)
        .await?
        .filter(|k| k.account_id == account_id)
        .ok_or_else(|| ServiceError::not_found("API key"))
}

pub async fn list(svc: &Services, account_id: &str) -> Result<Page<ApiKeyView>, ServiceError> {
    let now = svc.now_ms();
    let mut keys = svc.keys.list(account_id).await?;
    keys.sort_by(|a, b| a.key_id.cmp(&b.key_id));
    Ok(Page {
        data: keys.iter().map(|k| ApiKeyView::at(k, None, now)).collect(),
        has_more: false,
        next_cursor: None,
    })
}

pub async fn get(
    svc: &Services,
    account_id: &str,
    key_id: &str,
) -> Result<ApiKeyView, ServiceError> {
    let k = find(svc, account_id, key_id).await?;
    Ok(ApiKeyView::at(&k, None, svc.now_ms()))
}

pub async fn update(
    svc: &Services,
    account_id: &str,
    key_id: &str,
    req: UpdateKey,
    by_operator: bool,
) -> Result<ApiKeyView, ServiceError> {
    let k = find(svc, account_id, key_id).await?;
    if let Some(n) = &req.name {
        check_name(n)?;
    }
    if let Some(l) = req.rate_limit_per_min {
        check_limit(l, &super::accounts::get_account(svc, account_id).await?)?;
    }
    let ip_allowlist = req
        .ip_allowlist
        .as_deref()
        .map(check_allowlist)
        .transpose()?;
    let patch = KeyPatch {
        name: req.name,
        enabled: req.enabled,
        rate_limit_per_min: req.rate_limit_per_min,
        ip_allowlist,
        by_operator,
    };
    let now = svc.now_ms();
    let updated = svc
        .keys
        .patch(&k.key_hash, &patch, now)
        .await?
        .ok_or_else(|| {
            invalid("a revoked key, or one disabled by the operator or by termination, cannot be changed here")
        })?;
    Ok(ApiKeyView::at(&updated, None, now))
}

/// Revokes for good. Revoking a revoked key answers with it as it is.
pub async fn revoke(
    svc: &Services,
    account_id: &str,
    key_id: &str,
) -> Result<ApiKeyView, ServiceError> {
    let k = find(svc, account_id, key_id).await?;
    let now = svc.now_ms();
    let rec = match svc.keys.revoke(&k.key_hash, now).await? {
        Some(r) => r,
        None => find(svc, account_id, key_id).await?,
    };
    Ok(ApiKeyView::at(&rec, None, now))
}

/// Operators: ends an anomaly throttle early.
pub async fn lift_throttle(
    svc: &Services,
    account_id: &str,
    key_id: &str,
) -> Result<ApiKeyView, ServiceError> {
    let k = find(svc, account_id, key_id).await?;
    svc.keys.lift_throttle(&k.key_hash).await?;
    get(svc, account_id, key_id).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    pub from: Option<String>,
    pub to: Option<String>,
    pub key_id: Option<String>,
    pub route: Option<String>,
    pub status: Option<String>,
    pub kind: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// `GET /v1/usage`: the account's `enterprise_api_usage` records, newest first.
pub async fn usage(
    svc: &Services,
    account_id: &str,
    p: &UsageParams,
) -> Result<Page<UsageView>, ServiceError> {
    let limit = super::parse_limit(p.limit.as_deref())?;
    let time = |v: &Option<String>, name: &str, default: i64| match v {
        None => Ok(default),
        Some(t) => parse_rfc3339_ms(t).ok_or_else(|| {
            ServiceError::reject(
                ErrorCode::InvalidParameter,
                format!("{name} must be an RFC 3339 timestamp"),
            )
        }),
    };
    let from = time(&p.from, "from", 0)?;
    let to = time(&p.to, "to", 9_999_999_999_999)?;
    let mut filter = UsageFilter {
        key_id: p.key_id.clone(),
        route: p.route.clone(),
        ..Default::default()
    };
    if let Some(s) = &p.status {
        let code: u16 = s
            .parse()
            .ok()
            .filter(|c| (100..600).contains(c))
            .ok_or_else(|| {
                ServiceError::reject(
                    ErrorCode::InvalidParameter,
                    "status must be an HTTP status code",
                )
            })?;
        filter.status = Some(code);
    }
    if let Some(k) = &p.kind {
        if k != "request" && k != "anomaly" {
            return Err(ServiceError::reject(
                ErrorCode::InvalidParameter,
                "kind must be request or anomaly",
            ));
        }
        filter.kind = Some(k.clone());
    }
    let before = super::decode_cursor::<String>(p.cursor.as_deref())?;
    let range = TimeRange {
        from_ms: from,
        to_ms: to,
    };
    let (recs, more) = svc
        .usage
        .list(account_id, range, &filter, limit, before)
        .await?;
    let next_cursor = match (more, recs.last()) {
        (true, Some(last)) => Some(crate::domain::cursor::encode(&last.usage_id)),
        _ => None,
    };
    Ok(Page {
        data: recs.iter().map(UsageView::from).collect(),
        has_more: more,
        next_cursor,
    })
}
