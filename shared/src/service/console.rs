//! Console sessions: how the browser console signs in without holding a key.
//!
//! A person signs in by presenting an API key (or an operator credential) once, to
//! `POST /v1/console/sessions` (`/admin/v1/console/sessions`), through the same access guard
//! as any API call. The answer sets a cookie holding an opaque session id (`HttpOnly`,
//! `SameSite=Strict`, `Secure` except on loopback) and returns a CSRF token. From then on the
//! console calls the same `/v1` routes with the cookie instead of the key: the guard resolves
//! the session to the key's hash and admits the key exactly as if it had been presented (its
//! scopes, allowlist, rate limit, usage log). Every request that changes something must carry
//! the session's token in `X-CSRF-Token`.
//!
//! The table holds the id's SHA-256, never the id, and never the key: only the key's hash,
//! which each request looks up again, so a disabled key ends its sessions at once.

use super::auth::Caller;
use super::{ErrorCode, ServiceError, Services};
use crate::domain::api_key::{hash_secret, hashes_match};
use crate::ports::records::{ApiKeyRecord, SessionKind, SessionRecord};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// How long a session lasts from sign-in (a working day); then the console asks again.
pub const SESSION_LIFETIME_MS: i64 = 8 * 3_600_000;
/// The cookies (one per kind, so a person can hold a customer and an operator session).
pub const CUSTOMER_COOKIE: &str = "vg_session";
pub const OPERATOR_COOKIE: &str = "vg_operator_session";
/// The header the page sends its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
const ID_PREFIX: &str = "vcs_";

pub fn cookie_name(kind: SessionKind) -> &'static str {
    match kind {
        SessionKind::Operator => OPERATOR_COOKIE,
        SessionKind::Customer | SessionKind::Pass | SessionKind::ReadOnly => CUSTOMER_COOKIE,
    }
}

/// Read-only passes: how they read, and how long an unused one stays good.
pub const PASS_PREFIX: &str = "vcp_";
pub const PASS_LIFETIME_MS: i64 = 7 * 86_400_000;

/// A new session: the id for the cookie (shown to the browser once) and the record stored.
pub struct Opened {
    pub id: String,
    pub session: SessionRecord,
}

fn random_token(svc: &Services, prefix: &str) -> String {
    let bytes = crate::ports::time::random_bytes::<32>(svc.random.as_ref());
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Opens a session for a credential the guard has just admitted (`credential_hash`, the
/// SHA-256 the key table holds).
pub async fn open(
    svc: &Services,
    kind: SessionKind,
    credential_hash: &str,
    subject: &str,
) -> Result<Opened, ServiceError> {
    let now = svc.now_ms();
    let id = random_token(svc, ID_PREFIX);
    let expires_ms = now + SESSION_LIFETIME_MS;
    let session = SessionRecord {
        session_hash: hash_secret(&id),
        kind,
        credential_hash: credential_hash.to_string(),
        subject: subject.to_string(),
        csrf_token: random_token(svc, "csrf_"),
        created_ms: now,
        expires_ms,
        ended_ms: None,
        expires_at: expires_ms / 1_000 + 86_400,
    };
    svc.sessions.create(&session).await?;
    Ok(Opened { id, session })
}

fn expired() -> ServiceError {
    ServiceError::reject(
        ErrorCode::SessionExpired,
        "your console session has ended; sign in again",
    )
}

/// The open session a cookie names, for a request of `kind`. Anything else (unknown,
/// signed out, past its time, of the other kind) is `session_expired`: the console shows
/// the sign-in page. For a request that changes something, the CSRF token must match.
pub async fn resolve(
    svc: &Services,
    kind: SessionKind,
    cookie: &str,
    method: &str,
    csrf: Option<&str>,
) -> Result<SessionRecord, ServiceError> {
    if !cookie.starts_with(ID_PREFIX) || cookie.len() > 100 {
        return Err(expired());
    }
    let session = svc
        .sessions
        .get(&hash_secret(cookie))
        .await?
        .filter(|s| same_side(s.kind, kind) && s.ended_ms.is_none() && s.expires_ms > svc.now_ms())
        .ok_or_else(expired)?;
    let safe = matches!(method, "GET" | "HEAD" | "OPTIONS");
    if !safe && !csrf.is_some_and(|t| hashes_match(t, &session.csrf_token)) {
        return Err(ServiceError::reject(
            ErrorCode::CsrfFailed,
            "this request needs the session's X-CSRF-Token header",
        ));
    }
    Ok(session)
}

/// Whether a stored session of `stored` kind serves a request on the `side` of the cookie
/// it came with (a read-only session rides the customer's cookie; a pass is no session).
fn same_side(stored: SessionKind, side: SessionKind) -> bool {
    match side {
        SessionKind::Customer => matches!(stored, SessionKind::Customer | SessionKind::ReadOnly),
        other => stored == other && stored != SessionKind::Pass,
    }
}

/// An operator issues a one-time read-only pass for a terminated account (contract 6.1/6.2:
/// the keys are off, but finance must still see the ledger, statements, exports and
/// batches). The pass opens one read-only console session, once, within seven days.
pub async fn issue_pass(
    svc: &Services,
    account_id: &str,
) -> Result<(String, SessionRecord), ServiceError> {
    let account = svc
        .accounts
        .get(account_id)
        .await?
        .ok_or_else(|| ServiceError::not_found("account"))?;
    if account.status == crate::domain::account::AccountStatus::Active {
        return Err(ServiceError::reject(
            ErrorCode::AccountNotTerminated,
            "read-only passes are for terminated accounts; an active account's people sign in with its keys",
        ));
    }
    let now = svc.now_ms();
    let pass = random_token(svc, PASS_PREFIX);
    let expires_ms = now + PASS_LIFETIME_MS;
    let record = SessionRecord {
        session_hash: hash_secret(&pass),
        kind: SessionKind::Pass,
        credential_hash: String::new(),
        subject: account_id.to_string(),
        csrf_token: String::new(),
        created_ms: now,
        expires_ms,
        ended_ms: None,
        expires_at: expires_ms / 1_000 + 86_400,
    };
    svc.sessions.create(&record).await?;
    Ok((pass, record))
}

fn bad_pass() -> ServiceError {
    ServiceError::reject(
        ErrorCode::Unauthorized,
        "this read-only pass is unknown, used or past its time; ask your account manager for a new one",
    )
}

/// Redeems a pass, once: the caller it signs in as. Two sign-ins racing with one pass: the
/// conditional end lets one through.
pub async fn redeem_pass(svc: &Services, token: &str) -> Result<Caller, ServiceError> {
    let hash = hash_secret(token);
    let now = svc.now_ms();
    let pass = svc
        .sessions
        .get(&hash)
        .await?
        .filter(|s| s.kind == SessionKind::Pass && s.ended_ms.is_none() && s.expires_ms > now)
        .ok_or_else(bad_pass)?;
    if !svc.sessions.end(&hash, now).await? {
        return Err(bad_pass());
    }
    pass_caller(svc, &pass.subject, &hash, pass.created_ms).await
}

/// Whether a caller came through a read-only pass (its stand-in key reads `vcp_`).
pub fn is_pass(caller: &Caller) -> bool {
    caller.key.prefix == PASS_PREFIX
}

/// The caller a read-only session acts as: the account, whatever its status, through a
/// stand-in key with the read scope only, named after the pass (the usage log shows it).
pub async fn pass_caller(
    svc: &Services,
    account_id: &str,
    pass_hash: &str,
    created_ms: i64,
) -> Result<Caller, ServiceError> {
    let account = svc
        .accounts
        .get(account_id)
        .await?
        .ok_or_else(|| ServiceError::not_found("account"))?;
    let key_id = format!("pass_{}", pass_hash.get(..16).unwrap_or(pass_hash));
    let key = ApiKeyRecord {
        key_hash: pass_hash.to_string(),
        key_id: key_id.clone(),
        account_id: account_id.to_string(),
        name: "read-only console pass".into(),
        prefix: PASS_PREFIX.into(),
        last4: String::new(),
        enabled: true,
        created_ms,
        scopes: vec!["read".into()],
        rate_limit_per_min: None,
        ip_allowlist: Vec::new(),
        expires_ms: None,
        revoked_ms: None,
        disabled_reason: None,
        throttle: None,
        updated_ms: created_ms,
    };
    Ok(Caller {
        account,
        key_id,
        key,
    })
}

/// Signs out: the session stops working at once.
pub async fn close(svc: &Services, session: &SessionRecord) -> Result<(), ServiceError> {
    svc.sessions
        .end(&session.session_hash, svc.now_ms())
        .await?;
    Ok(())
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|part| {
        let (k, v) = part.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// The `Set-Cookie` value for a session id (`None`: one that clears the cookie). `Secure`
/// everywhere but plain-HTTP loopback, where a browser would drop a `Secure` cookie.
pub fn set_cookie(kind: SessionKind, id: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match id {
        Some(id) => format!(
            "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            cookie_name(kind),
            SESSION_LIFETIME_MS / 1_000
        ),
        None => format!(
            "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}",
            cookie_name(kind)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_its_cookie_among_others() {
        let h = "a=1; vg_session=vcs_abc; vg_operator_session=vcs_op";
        assert_eq!(cookie_value(h, CUSTOMER_COOKIE), Some("vcs_abc"));
        assert_eq!(cookie_value(h, OPERATOR_COOKIE), Some("vcs_op"));
        assert_eq!(cookie_value("vg_sessionx=1", CUSTOMER_COOKIE), None);
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_off_loopback() {
        let c = set_cookie(SessionKind::Customer, Some("vcs_x"), true);
        assert!(c.starts_with("vg_session=vcs_x; Path=/; HttpOnly; SameSite=Strict"));
        assert!(c.ends_with("; Secure"));
        assert!(!set_cookie(SessionKind::Customer, Some("vcs_x"), false).contains("Secure"));
        assert!(set_cookie(SessionKind::Operator, None, true).contains("Max-Age=0"));
    }
}
