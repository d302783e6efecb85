//! Who may call, how often, from where: the checks every `/v1` request passes before its
//! handler runs (address block, key, allowlist, scope, rate limit), and what is written after
//! it answered (the `enterprise_api_usage` record, the anomaly counters).
//!
//! A refused request stops here: it reaches no handler, so it consumes no `request_id` and
//! no credits.

use super::auth::{authenticate, authenticate_hash, AuthFailure, Caller};
use super::console;
use super::{ErrorCode, ServiceError, Services};
use crate::domain::access::{
    allowed, block_subject, canonical_ip, current_window_cap, ip_allowed, ip_anomaly, key_anomaly,
    rate_state, required_scope, retry_after_secs, throttled_limit, window_of, Cidr, KeyScope,
    RateState, DEFAULT_RATE_LIMIT_PER_MIN, THROTTLE_MS, WINDOW_MS,
};
use crate::ports::access::IpBlock;
use crate::ports::access::{Admission, BlockExemption, Caps, WindowCounts};
use crate::ports::records::{ApiKeyRecord, SessionKind, SessionRecord, Throttle, UsageRecord};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

/// The account under which calls without a valid key are logged.
pub const UNAUTHENTICATED: &str = "_unauthenticated";

pub struct AccessRequest<'a> {
    pub authorization: Option<&'a str>,
    /// The console's session cookie, used when there is no `Authorization` header, and the
    /// `X-CSRF-Token` header that must come with it on a change (see `service::console`).
    pub session_cookie: Option<&'a str>,
    pub csrf: Option<&'a str>,
    pub method: &'a str,
    /// The route template, e.g. `/v1/batches/{batch_id}`.
    pub route: &'a str,
    /// API Gateway's `sourceIp` (locally, the TCP peer); never a client-supplied header.
    pub source_ip: Option<IpAddr>,
}

pub struct Granted {
    pub caller: Caller,
    pub rate: RateState,
    /// The console session the request came with, if it came with one.
    pub session: Option<SessionRecord>,
}

/// The key a request presents: in its `Authorization` header, or through a console session
/// (whose key is then admitted exactly as if presented).
async fn authenticate_request(
    svc: &Services,
    r: &AccessRequest<'_>,
) -> Result<(Caller, Option<SessionRecord>), AuthFailure> {
    match (r.authorization, r.session_cookie) {
        (None, Some(cookie)) => {
            let session =
                console::resolve(svc, SessionKind::Customer, cookie, r.method, r.csrf).await?;
            let caller = if session.kind == SessionKind::ReadOnly {
                console::pass_caller(
                    svc,
                    &session.subject,
                    &session.credential_hash,
                    session.created_ms,
                )
                .await?
            } else {
                authenticate_hash(svc, &session.credential_hash).await?
            };
            Ok((caller, Some(session)))
        }
        // A read-only pass signs in, and does nothing else.
        (Some(a), _)
            if super::auth::bearer(Some(a))
                .is_some_and(|t| t.starts_with(console::PASS_PREFIX)) =>
        {
            if r.method != "POST" || r.route != "/v1/console/sessions" {
                return Err(ServiceError::reject(
                    ErrorCode::Unauthorized,
                    "a read-only pass only signs in to the console (POST /v1/console/sessions)",
                )
                .into());
            }
            let token = super::auth::bearer(Some(a)).unwrap_or_default();
            Ok((console::redeem_pass(svc, token).await?, None))
        }
        (authorization, _) => Ok((authenticate(svc, authorization).await?, None)),
    }
}

pub struct Refused {
    pub error: ServiceError,
    pub rate: Option<RateState>,
    pub retry_after_secs: Option<u64>,
    pub key: Option<ApiKeyRecord>,
}

impl Refused {
    fn new(error: ServiceError) -> Box<Self> {
        Box::new(Refused {
            error,
            rate: None,
            retry_after_secs: None,
            key: None,
        })
    }
}

/// The key's limit now: its own, or a throttle's while one is in force.
pub fn effective_limit(key: &ApiKeyRecord, now_ms: i64) -> u32 {
    let own = key.rate_limit_per_min.unwrap_or(DEFAULT_RATE_LIMIT_PER_MIN);
    match &key.throttle {
        Some(t) if t.until_ms > now_ms => own.min(t.limit),
        _ => own,
    }
}

pub fn scopes_of(key: &ApiKeyRecord) -> Vec<KeyScope> {
    key.scopes
        .iter()
        .filter_map(|s| KeyScope::parse(s))
        .collect()
}

/// How long after its end a rate window's counts are taken as final: requests admitted
/// just before the minute turned may still be adding to it.
pub const WINDOW_SETTLES_MS: i64 = 2_000;

/// A finished window's counts never change again once settled, so each instance reads them
/// once.
async fn previous_counts(
    svc: &Services,
    account_id: &str,
    key_id: &str,
    prev_window: i64,
    elapsed_ms: i64,
) -> Result<WindowCounts, ServiceError> {
    if let Some(v) = svc.local.previous(account_id, key_id, prev_window) {
        return Ok(v);
    }
    let v = svc.rates.count(account_id, key_id, prev_window).await?;
    if elapsed_ms >= WINDOW_SETTLES_MS {
        svc.local.keep_previous(account_id, key_id, prev_window, v);
    }
    Ok(v)
}

pub async fn authorize(svc: &Services, r: AccessRequest<'_>) -> Result<Granted, Box<Refused>> {
    let now = svc.now_ms();
    let ip = r.source_ip.map(canonical_ip);
    let subject = ip.map(block_subject);
    // What this instance read about the address within `BLOCK_RECHECK_MS` stands: a block
    // refuses at once (no read, no write), and a clear address costs no read either.
    let known = subject
        .as_deref()
        .and_then(|s| svc.local.known_block(s, now));
    if let Some(Some(block)) = &known {
        refuse_if_blocked(Some(block.clone()), now)?;
    }
    // The block and the key are independent reads: one round trip instead of two.
    let block = async {
        match (subject.as_deref(), known) {
            (Some(s), None) => {
                let read = svc.rates.ip_block(s, now).await;
                if let Ok(b) = &read {
                    svc.local.remember_block(s, b.as_ref(), now);
                }
                read
            }
            _ => Ok(None),
        }
    };
    let (blocked, authenticated) = tokio::join!(block, authenticate_request(svc, &r));
    let blocked = blocked.map_err(|e| Refused::new(e.into()))?;
    refuse_if_blocked(blocked, now)?;
    let (caller, session) = match authenticated {
        Ok(c) => c,
        Err(f) => {
            if f.error.code() == ErrorCode::Unauthorized {
                if let Some(ip) = ip {
                    note_auth_failure(svc, ip, now).await;
                }
            }
            let mut refused = Refused::new(f.error);
            refused.key = f.key;
            return Err(refused);
        }
    };
    let key = &caller.key;
    let refuse = |error: ServiceError| {
        let mut r = Refused::new(error);
        r.key = Some(key.clone());
        r
    };
    let allowlist: Vec<Cidr> = key
        .ip_allowlist
        .iter()
        .filter_map(|c| Cidr::parse(c).ok())
        .collect();
    if !ip_allowed(&allowlist, ip) {
        return Err(refuse(ServiceError::reject(
            ErrorCode::IpNotAllowed,
            "this API key may not be used from this address",
        )));
    }
    let needed = required_scope(r.method, r.route);
    if !allowed(&scopes_of(key), needed) {
        return Err(refuse(ServiceError::reject_with(
            ErrorCode::InsufficientScope,
            format!("this API key lacks the {} scope", needed.as_str()),
            serde_json::json!({ "required_scope": needed.as_str() }),
        )));
    }
    let limit = effective_limit(key, now);
    let budget = caller.account.effective_budget(now);
    let (window, elapsed) = window_of(now);
    let account_id = caller.account.account_id.as_str();
    let prev = previous_counts(svc, account_id, &key.key_id, window - WINDOW_MS, elapsed)
        .await
        .map_err(&refuse)?;
    let caps = Caps {
        key: current_window_cap(limit, prev.key, elapsed),
        account: current_window_cap(budget, prev.account, elapsed),
    };
    let admission = svc
        .rates
        .admit(account_id, &key.key_id, window, caps)
        .await
        .map_err(|e| refuse(e.into()))?;
    if let Admission::Admitted(curr) = admission {
        // The headers describe whichever limit is closer: the key's or the account's.
        let by_key = rate_state(limit, prev.key, curr.key, elapsed);
        let by_account = rate_state(budget, prev.account, curr.account, elapsed);
        let rate = if by_account.remaining < by_key.remaining {
            by_account
        } else {
            by_key
        };
        return Ok(Granted {
            rate,
            caller,
            session,
        });
    }
    let (by_account, stood) = match admission {
        Admission::AccountFull(c) => (true, c),
        Admission::KeyFull(c) => (false, c),
        Admission::Admitted(_) => (false, None),
    };
    let curr = match stood {
        Some(c) => c,
        None => svc
            .rates
            .count(account_id, &key.key_id, window)
            .await
            .map_err(|e| refuse(e.into()))?,
    };
    let (limit, prev, curr, error) = if by_account {
        let e = ServiceError::reject_with(
            ErrorCode::RateLimited,
            format!(
                "this account may make {budget} requests a minute over all its keys (its request budget); slow down"
            ),
            serde_json::json!({ "limit": budget, "applies_to": "account" }),
        );
        (budget, prev.account, curr.account, e)
    } else {
        let e = ServiceError::reject_with(
            ErrorCode::RateLimited,
            format!("this API key may make {limit} requests a minute; slow down"),
            serde_json::json!({ "limit": limit, "applies_to": "key" }),
        );
        (limit, prev.key, curr.key, e)
    };
    let mut refused = refuse(error);
    let mut state = rate_state(limit, prev, curr, elapsed);
    state.remaining = 0;
    refused.rate = Some(state);
    refused.retry_after_secs = Some(retry_after_secs(limit, prev, curr, elapsed));
    Err(refused)
}

/// Counts a failed authentication from `ip`; too many in a minute block the address.
fn refuse_if_blocked(block: Option<IpBlock>, now: i64) -> Result<(), Box<Refused>> {
    let Some(IpBlock {
        until_ms: until,
        reason,
    }) = block
    else {
        return Ok(());
    };
    let mut refused = Refused::new(ServiceError::reject_with(
        ErrorCode::IpBlocked,
        "requests from this address are blocked for a while after an unusual pattern",
        serde_json::json!({ "reason": reason }),
    ));
    refused.retry_after_secs = Some(u64::try_from((until - now).max(1_000) / 1_000).unwrap_or(1));
    Err(refused)
}

/// The operator routes' side of the address rules: a blocked address is refused before the
/// operator credential is looked at, as on the customer routes.
pub async fn admit_operator_address(
    svc: &Services,
    source_ip: Option<IpAddr>,
) -> Result<(), Box<Refused>> {
    let Some(ip) = source_ip.map(canonical_ip) else {
        return Ok(());
    };
    let now = svc.now_ms();
    let subject = block_subject(ip);
    if let Some(known) = svc.local.known_block(&subject, now) {
        return refuse_if_blocked(known, now);
    }
    let block = svc
        .rates
        .ip_block(&subject, now)
        .await
        .map_err(|e| Refused::new(e.into()))?;
    svc.local.remember_block(&subject, block.as_ref(), now);
    refuse_if_blocked(block, now)
}

/// Writes this instance's tally of nobody's calls now, the current minute included (an
/// instance shutting down; tests that read the usage log).
pub async fn write_tally(svc: &Services) {
    for summary in svc.local.take_before(i64::MAX) {
        put_usage(svc, &summary).await;
    }
}

/// Whether an operator exempted `ip` from address blocks; the list is read at most once per
/// `BLOCK_RECHECK_MS` per instance, and only when a block is about to be written.
async fn exempted(svc: &Services, ip: IpAddr, now: i64) -> Result<bool, ServiceError> {
    let ranges = match svc.local.exemptions(now) {
        Some(r) => r,
        None => {
            let list = svc.rates.exemptions().await?.list;
            let ranges: Vec<Cidr> = list
                .iter()
                .filter_map(|e| Cidr::parse(&e.cidr).ok())
                .collect();
            svc.local.keep_exemptions(ranges.clone(), now);
            ranges
        }
    };
    Ok(ranges.iter().any(|c| c.contains(ip)))
}

/// At most this many exemptions: they are for a few known sources, not a second allowlist.
pub const MAX_EXEMPTIONS: usize = 100;

/// An operator's request to exempt a range from address blocks.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExemptionRequest {
    pub cidr: String,
    /// Why (who runs the fuzzer, which probe): kept with the exemption for audit.
    pub reason: String,
}

pub async fn exemptions(svc: &Services) -> Result<Vec<BlockExemption>, ServiceError> {
    Ok(svc.rates.exemptions().await?.list)
}

/// Adds (or replaces, for the same range) an exemption from address blocks.
pub async fn exempt(
    svc: &Services,
    req: ExemptionRequest,
) -> Result<Vec<BlockExemption>, ServiceError> {
    let bad = |m: &str| ServiceError::reject(ErrorCode::InvalidRequest, m);
    let cidr = Cidr::parse(&req.cidr)
        .map_err(|_| bad("cidr must be an IPv4 or IPv6 address or CIDR block"))?
        .to_string();
    let reason = req.reason.trim().to_string();
    if reason.is_empty() || reason.chars().count() > 200 {
        return Err(bad("reason must be 1 to 200 characters"));
    }
    let now = svc.now_ms();
    change_exemptions(svc, |list| {
        list.retain(|e| e.cidr != cidr);
        if list.len() >= MAX_EXEMPTIONS {
            return Err(bad("at most 100 exemptions; remove one first"));
        }
        list.push(BlockExemption {
            cidr: cidr.clone(),
            reason: reason.clone(),
            created_ms: now,
        });
        Ok(())
    })
    .await
}

/// Removes the exemption of exactly this range; false if there was none.
pub async fn unexempt(svc: &Services, cidr: &str) -> Result<bool, ServiceError> {
    let Ok(cidr) = Cidr::parse(cidr).map(|c| c.to_string()) else {
        return Ok(false);
    };
    let mut found = false;
    change_exemptions(svc, |list| {
        let before = list.len();
        list.retain(|e| e.cidr != cidr);
        found = list.len() != before;
        Ok(())
    })
    .await?;
    Ok(found)
}

/// Read, change, write if unchanged meanwhile; again if another operator got there first.
async fn change_exemptions(
    svc: &Services,
    mut change: impl FnMut(&mut Vec<BlockExemption>) -> Result<(), ServiceError>,
) -> Result<Vec<BlockExemption>, ServiceError> {
    for attempt in 0..5 {
        let current = svc.rates.exemptions().await?;
        let mut list = current.list.clone();
        change(&mut list)?;
        if list == current.list {
            return Ok(list);
        }
        if svc.rates.set_exemptions(current.version, &list).await? {
            svc.local.forget_exemptions();
            return Ok(list);
        }
        svc.backoff(attempt).await;
    }
    Err(ServiceError::Internal(
        "the block exemptions kept changing; try again".into(),
    ))
}

/// An operator lifts the block that covers `addr` (its /64 for IPv6): at once here, in other
/// instances within `BLOCK_RECHECK_MS`. Returns the subject and whether it was blocked.
pub async fn lift_block(svc: &Services, addr: IpAddr) -> Result<(String, bool), ServiceError> {
    let subject = block_subject(canonical_ip(addr));
    let was = svc.rates.unblock_ip(&subject).await?;
    svc.local.forget_block(&subject);
    Ok((subject, was))
}

/// A wrong operator credential counts toward the address's block like a wrong key.
pub async fn operator_auth_failed(svc: &Services, source_ip: Option<IpAddr>) {
    if let Some(ip) = source_ip.map(canonical_ip) {
        note_auth_failure(svc, ip, svc.now_ms()).await;
    }
}

/// Counts a failed authentication from `ip` in this instance's memory (no write); the
/// rule's threshold writes the block once, where every instance reads it.
async fn note_auth_failure(svc: &Services, ip: IpAddr, now: i64) {
    let (window, _) = window_of(now);
    let subject = block_subject(ip);
    let failures = svc.local.count_failure(&subject, window);
    let Some(rule) = ip_anomaly(failures) else {
        return;
    };
    if let Some(Some(_)) = svc.local.known_block(&subject, now) {
        return;
    }
    match exempted(svc, ip, now).await {
        Ok(true) => return,
        Ok(false) => {}
        // Unknown: block; a wrongly blocked exempt address is lifted by an operator.
        Err(e) => tracing::error!(error = %e, "could not read the block exemptions"),
    }
    let block = IpBlock {
        until_ms: now + THROTTLE_MS,
        reason: rule.as_str().to_string(),
    };
    match svc
        .rates
        .block_ip(&subject, rule.as_str(), now, block.until_ms)
        .await
    {
        Ok(newly) => {
            if newly {
                tracing::warn!(ip = subject, rule = rule.as_str(), "address blocked");
            }
            svc.local.remember_block(&subject, Some(&block), now);
        }
        Err(e) => tracing::error!(error = %e, ip = subject, "could not block an address"),
    }
}

fn anomaly_record(
    account_id: &str,
    key_id: Option<&str>,
    ip: &str,
    rule: &str,
    now: i64,
    retention_days: u32,
) -> UsageRecord {
    // Derived from what happened, so recording it again (after a crash) overwrites itself.
    let id = format!("anom_{}_{rule}_{now}", key_id.unwrap_or(ip));
    UsageRecord {
        account_id: account_id.to_string(),
        usage_id: format!("{now:013}#{id}"),
        at_ms: now,
        kind: "anomaly".into(),
        key_id: key_id.map(str::to_string),
        method: "-".into(),
        route: "-".into(),
        status: 0,
        latency_ms: 0,
        source_ip: Some(ip.to_string()),
        request_id: id,
        user_agent: None,
        code: Some(rule.to_string()),
        expires_at: now / 1_000 + i64::from(retention_days) * 86_400,
        count: None,
    }
}

/// One answered call, for the usage log.
pub struct Answered<'a> {
    pub account_id: &'a str,
    pub retention_days: u32,
    /// The key, and whether the request got past the checks to a handler.
    pub key: Option<(&'a ApiKeyRecord, bool)>,
    pub method: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub code: Option<&'a str>,
    pub latency_ms: u64,
    pub source_ip: Option<IpAddr>,
    pub request_id: &'a str,
    pub user_agent: Option<&'a str>,
    pub started_ms: i64,
}

/// Writes the usage record before the response leaves (a Lambda may be frozen right after
/// it), then feeds the anomaly rules. A record that cannot be written after three tries goes
/// to the log in full, so nothing is lost silently.
pub async fn record(svc: &Services, a: Answered<'_>) {
    let rec = UsageRecord {
        account_id: a.account_id.to_string(),
        // Our own random id: the request id comes from a client header and may repeat.
        usage_id: format!("{:013}#{}", a.started_ms.max(0), svc.new_id("use")),
        at_ms: a.started_ms,
        kind: "request".into(),
        key_id: a.key.map(|(k, _)| k.key_id.clone()),
        method: a.method.to_string(),
        route: a.route.to_string(),
        status: a.status,
        latency_ms: a.latency_ms,
        source_ip: a.source_ip.map(|ip| canonical_ip(ip).to_string()),
        request_id: a.request_id.to_string(),
        user_agent: a.user_agent.map(|u| u.chars().take(256).collect()),
        code: a.code.map(str::to_string),
        expires_at: a.started_ms / 1_000 + i64::from(a.retention_days) * 86_400,
        count: None,
    };
    for summary in svc.local.ended_minutes(a.started_ms) {
        put_usage(svc, &summary).await;
    }
    if a.account_id == UNAUTHENTICATED {
        // Nobody's call: counted in memory, written once per source and minute.
        svc.local.tally(rec);
        return;
    }
    put_usage(svc, &rec).await;
    // Contract 3.1: a 5xx to an account's request (its key known) counts against its
    // availability, whether the checks or the handler failed; refusals for the customer's own
    // reasons are 4xx. `model_unavailable` is a provider's outage, excluded by the same clause.
    if a.status >= 500 && a.key.is_some() && a.code != Some(ErrorCode::ModelUnavailable.as_str()) {
        super::sla::record_server_error(svc, a.account_id, a.started_ms).await;
    }
    if let Some((key, true)) = a.key {
        let client_error = (400..500).contains(&a.status) && a.status != 429;
        if client_error {
            if let Err(e) =
                judge_key(svc, key, a.status == 402, a.started_ms, a.retention_days).await
            {
                tracing::error!(error = %e, "anomaly check failed");
            }
        }
    }
}

/// Lowers the whole account's budget to a tenth for 15 minutes, with an anomaly record the
/// customer sees in their usage log; an operator lifts it early.
async fn judge_account(
    svc: &Services,
    account_id: &str,
    rule: crate::domain::access::Anomaly,
    now: i64,
    retention_days: u32,
) -> Result<(), ServiceError> {
    let Some(account) = svc.accounts.get(account_id).await? else {
        return Ok(());
    };
    let t = Throttle {
        limit: throttled_limit(account.request_budget()),
        since_ms: now,
        until_ms: now + THROTTLE_MS,
        reason: rule.as_str().to_string(),
    };
    if !svc.accounts.throttle(account_id, &t).await? {
        return Ok(());
    }
    tracing::warn!(
        account_id,
        rule = rule.as_str(),
        limit = t.limit,
        "account throttled"
    );
    let mut rec = anomaly_record(account_id, None, "-", rule.as_str(), now, retention_days);
    rec.route = "account".into();
    svc.usage.put(&rec).await?;
    Ok(())
}

/// An operator lifts an account's throttle early.
pub async fn lift_account_throttle(
    svc: &Services,
    account_id: &str,
) -> Result<crate::service::views::AccountView, ServiceError> {
    super::accounts::get_account(svc, account_id).await?;
    svc.accounts.lift_throttle(account_id).await?;
    let a = super::accounts::get_account(svc, account_id).await?;
    Ok(crate::service::views::AccountView::at(&a, svc.now_ms()))
}

/// Writes one usage record; one that cannot be written after three tries goes to the log in
/// full, so nothing is lost silently.
async fn put_usage(svc: &Services, rec: &UsageRecord) {
    for attempt in 0..3 {
        match svc.usage.put(rec).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, attempt, "usage record not written yet");
                svc.backoff(attempt).await;
            }
        }
    }
    tracing::error!(usage = %serde_json::to_string(rec).unwrap_or_default(), "usage record kept in the log only");
}

async fn judge_key(
    svc: &Services,
    key: &ApiKeyRecord,
    payment_required: bool,
    now: i64,
    retention_days: u32,
) -> Result<(), ServiceError> {
    let (window, _) = window_of(now);
    let minute = svc
        .rates
        .count_errors(&key.account_id, &key.key_id, window, true, payment_required)
        .await?;
    let Some(rule) = key_anomaly(minute.key) else {
        // No key broke a rule, but the account as a whole may have, spread over its keys:
        // minting keys must not escape the rules.
        if let Some(rule) = key_anomaly(minute.account) {
            judge_account(svc, &key.account_id, rule, now, retention_days).await?;
        }
        return Ok(());
    };
    let own = key.rate_limit_per_min.unwrap_or(DEFAULT_RATE_LIMIT_PER_MIN);
    let t = Throttle {
        limit: throttled_limit(own),
        since_ms: now,
        until_ms: now + THROTTLE_MS,
        reason: rule.as_str().to_string(),
    };
    let t = if svc.keys.throttle(&key.key_hash, &t).await? {
        t
    } else {
        // Throttled already: if by this rule, a crash may have cut the notices short; they
        // are idempotent, so send them again. Otherwise nothing to do.
        match svc.keys.get(&key.key_hash).await?.and_then(|k| k.throttle) {
            Some(cur) if cur.reason == t.reason && cur.until_ms > now => cur,
            _ => return Ok(()),
        }
    };
    let now = t.since_ms;
    tracing::warn!(key_id = %key.key_id, rule = rule.as_str(), limit = t.limit, "API key throttled");
    let rec = anomaly_record(
        &key.account_id,
        Some(&key.key_id),
        "-",
        rule.as_str(),
        now,
        retention_days,
    );
    svc.usage.put(&rec).await?;
    let mut throttled = key.clone();
    throttled.throttle = Some(t);
    super::events::emit(svc, &[super::events::key_throttled(&throttled, now)]).await?;
    Ok(())
}

/// How long an instance trusts what it read of an address (blocked, or clear) before reading
/// it again: an operator's lift, and a block another instance wrote, reach every instance
/// within this time, and an address costs at most one read per instance per period rather
/// than one per request.
pub const BLOCK_RECHECK_MS: i64 = 10_000;
/// Sources tallied per minute; beyond, calls are counted under one `other` source, so a
/// flood from many addresses cannot grow an instance's memory without bound.
pub const MAX_TALLIED_SOURCES: usize = 10_000;

/// What one instance remembers between requests about traffic without a valid key, so that
/// refusing it costs no DynamoDB write: failed authentications per address and minute, the
/// blocks it has seen, and a tally of nobody's calls per source and minute, written as one
/// `unauthenticated` usage record each once the minute has ended.
///
/// The failure counts are per instance: with N warm instances an address may fail up to N
/// times the threshold before every one of them refuses it. Each failure still costs only
/// a key read, and once one instance writes the block every instance reads it.
#[derive(Default)]
pub struct Local {
    state: Mutex<LocalState>,
}

#[derive(Default)]
struct LocalState {
    /// The minute `failures` counts, and address (or /64) -> failures in it.
    failures_window: i64,
    failures: HashMap<String, u64>,
    /// Address (or /64) -> (its block, or none, when this instance last read or wrote it).
    blocks: HashMap<String, (Option<IpBlock>, i64)>,
    /// (minute start, source) -> (calls, the first one).
    tally: BTreeMap<(i64, String), (u64, UsageRecord)>,
    /// (account, key) -> a finished minute and its counts.
    previous: HashMap<(String, String), (i64, WindowCounts)>,
    /// The operator's exemptions from blocks, and when they were read.
    exemptions: Option<(Vec<Cidr>, i64)>,
    /// Key hash -> its account, which never changes (`auth::authenticate_hash`).
    key_accounts: HashMap<String, String>,
}

/// Whether what an instance read of an address at `seen` (a block, or none) still stands:
/// read within `BLOCK_RECHECK_MS`, and a block not yet over.
fn still_known(block: &Option<IpBlock>, seen: i64, now: i64) -> bool {
    now - seen < BLOCK_RECHECK_MS && block.as_ref().is_none_or(|b| b.until_ms > now)
}

impl Local {
    fn state(&self) -> MutexGuard<'_, LocalState> {
        // The state is counters; one left half-updated by a panic is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What this instance knows of the address's block, if it read it recently: `Some(None)`
    /// is "read clear". A block written by another instance reaches this one within
    /// `BLOCK_RECHECK_MS`; one this instance writes, at once.
    fn known_block(&self, subject: &str, now: i64) -> Option<Option<IpBlock>> {
        let mut st = self.state();
        match st.blocks.get(subject) {
            Some((b, seen)) if still_known(b, *seen, now) => Some(b.clone()),
            Some(_) => {
                st.blocks.remove(subject);
                None
            }
            None => None,
        }
    }

    fn remember_block(&self, subject: &str, block: Option<&IpBlock>, now: i64) {
        let mut st = self.state();
        if st.blocks.len() >= MAX_TALLIED_SOURCES {
            // Bounded like the tally: what is stale goes first; past the bound a clear
            // address is simply read again next time.
            st.blocks.retain(|_, (b, seen)| still_known(b, *seen, now));
            if block.is_none() && st.blocks.len() >= MAX_TALLIED_SOURCES {
                return;
            }
        }
        st.blocks.insert(subject.to_string(), (block.cloned(), now));
    }

    fn previous(&self, account_id: &str, key_id: &str, window: i64) -> Option<WindowCounts> {
        let k = (account_id.to_string(), key_id.to_string());
        match self.state().previous.get(&k) {
            Some((w, counts)) if *w == window => Some(*counts),
            _ => None,
        }
    }

    fn keep_previous(&self, account_id: &str, key_id: &str, window: i64, counts: WindowCounts) {
        let mut st = self.state();
        st.previous.retain(|_, (w, _)| *w >= window);
        st.previous.insert(
            (account_id.to_string(), key_id.to_string()),
            (window, counts),
        );
    }

    pub(super) fn account_of(&self, key_hash: &str) -> Option<String> {
        self.state().key_accounts.get(key_hash).cloned()
    }

    pub(super) fn keep_account_of(&self, key_hash: &str, account_id: &str) {
        let mut st = self.state();
        // Bounded: past the bound the instance forgets and learns again (one read more each).
        if st.key_accounts.len() >= MAX_TALLIED_SOURCES {
            st.key_accounts.clear();
        }
        st.key_accounts
            .insert(key_hash.to_string(), account_id.to_string());
    }

    fn exemptions(&self, now: i64) -> Option<Vec<Cidr>> {
        match &self.state().exemptions {
            Some((ranges, read)) if now - read < BLOCK_RECHECK_MS => Some(ranges.clone()),
            _ => None,
        }
    }

    fn keep_exemptions(&self, ranges: Vec<Cidr>, now: i64) {
        self.state().exemptions = Some((ranges, now));
    }

    fn forget_exemptions(&self) {
        self.state().exemptions = None;
    }

    fn forget_block(&self, subject: &str) {
        let mut st = self.state();
        st.blocks.remove(subject);
        st.failures.remove(subject);
    }

    fn count_failure(&self, subject: &str, window: i64) -> u64 {
        let mut st = self.state();
        // Only the current minute matters; older counts go as soon as a new one starts.
        if st.failures_window != window {
            st.failures.clear();
            st.failures_window = window;
        }
        let n = st.failures.entry(subject.to_string()).or_insert(0);
        *n += 1;
        *n
    }

    fn tally(&self, rec: UsageRecord) {
        let (minute, _) = window_of(rec.at_ms);
        let source = rec
            .source_ip
            .as_deref()
            .and_then(|ip| ip.parse().ok())
            .map(block_subject)
            .unwrap_or_else(|| "-".to_string());
        let mut st = self.state();
        // Every call writes the minutes that ended before it tallies, so what the tally holds
        // is (nearly always) this minute: its length is the bound, with no scan per call.
        let source = if st.tally.len() >= MAX_TALLIED_SOURCES
            && !st.tally.contains_key(&(minute, source.clone()))
        {
            "other".to_string()
        } else {
            source
        };
        st.tally
            .entry((minute, source))
            .and_modify(|(n, _)| *n += 1)
            .or_insert((1, rec));
    }

    /// The summaries of the minutes that ended before `now`, taken out of memory.
    fn ended_minutes(&self, now: i64) -> Vec<UsageRecord> {
        self.take_before(window_of(now).0)
    }

    fn take_before(&self, current: i64) -> Vec<UsageRecord> {
        let mut st = self.state();
        if st.tally.keys().next().is_none_or(|(m, _)| *m >= current) {
            return Vec::new();
        }
        let keep = st.tally.split_off(&(current, String::new()));
        let ended = std::mem::replace(&mut st.tally, keep);
        drop(st);
        ended
            .into_iter()
            .map(|((minute, source), (count, first))| UsageRecord {
                usage_id: format!(
                    "{minute:013}#src_{source}_{}",
                    first.usage_id.rsplit('#').next().unwrap_or_default()
                ),
                at_ms: minute,
                kind: "unauthenticated".into(),
                count: Some(count),
                ..first
            })
            .collect()
    }
}
