//! Who is calling: an API key (customers). Operators: `operators::authenticate`.

use super::{ErrorCode, ServiceError, Services};
use crate::domain::account::AccountStatus;
use crate::domain::api_key::{hash_secret, hashes_match, looks_like_key};
use crate::ports::records::{AccountRecord, ApiKeyRecord};

/// An authenticated customer call. Every query a handler makes is scoped by `account`.
#[derive(Clone, Debug)]
pub struct Caller {
    pub account: AccountRecord,
    pub key_id: String,
    pub key: ApiKeyRecord,
}

/// A refused key, with the key when one was found (the usage log records whose it was).
#[derive(Debug)]
pub struct AuthFailure {
    pub error: ServiceError,
    pub key: Option<ApiKeyRecord>,
}

impl From<ServiceError> for AuthFailure {
    fn from(error: ServiceError) -> Self {
        AuthFailure { error, key: None }
    }
}

impl From<crate::ports::StoreError> for AuthFailure {
    fn from(e: crate::ports::StoreError) -> Self {
        AuthFailure {
            error: e.into(),
            key: None,
        }
    }
}

/// The token of `Authorization: Bearer <token>` (customers' keys and operators' credentials).
pub(crate) fn bearer(header: Option<&str>) -> Option<&str> {
    let h = header?;
    let (scheme, token) = h.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn unauthorized() -> ServiceError {
    ServiceError::reject(
        ErrorCode::Unauthorized,
        "missing or unknown API key; send Authorization: Bearer <key>",
    )
}

/// Resolves `Authorization: Bearer <key>` to its account. The key is looked up by its hash
/// (the table never sees the secret) with a consistent read, so a disabled key stops at once.
pub async fn authenticate(
    svc: &Services,
    authorization: Option<&str>,
) -> Result<Caller, AuthFailure> {
    let secret = bearer(authorization).ok_or_else(unauthorized)?;
    if !looks_like_key(secret) {
        return Err(unauthorized().into());
    }
    authenticate_hash(svc, &hash_secret(secret)).await
}

/// The same from the key's SHA-256 (what a console session holds: never the key itself).
pub async fn authenticate_hash(svc: &Services, presented: &str) -> Result<Caller, AuthFailure> {
    // A key never changes account: once this instance has seen the key, the key and its
    // account come back in one round trip (both consistent) instead of two in a row.
    let known = svc.local.account_of(presented);
    let (key, known_account) = match &known {
        Some(account_id) => svc.keys.get_with_account(presented, account_id).await?,
        None => (svc.keys.get(presented).await?, None),
    };
    let key = key
        .filter(|k| hashes_match(&k.key_hash, presented))
        .ok_or_else(unauthorized)?;
    if known.is_none() {
        svc.local.keep_account_of(presented, &key.account_id);
    }
    let now = svc.now_ms();
    let refused = |code, message: &str| AuthFailure {
        error: ServiceError::reject(code, message),
        key: Some(key.clone()),
    };
    if key.revoked_ms.is_some() {
        return Err(refused(ErrorCode::KeyRevoked, "this API key was revoked"));
    }
    if key.expires_ms.is_some_and(|t| t <= now) {
        return Err(refused(ErrorCode::KeyExpired, "this API key has expired"));
    }
    if !key.enabled && key.disabled_reason.as_deref() == Some("account_terminated") {
        return Err(refused(
            ErrorCode::AccountTerminated,
            "this account's contract has ended; its API keys no longer work",
        ));
    }
    if !key.enabled {
        return Err(refused(ErrorCode::KeyDisabled, "this API key is disabled"));
    }
    let account =
        match known_account.filter(|a| a.account_id == key.account_id) {
            Some(a) => a,
            None => svc.accounts.get(&key.account_id).await?.ok_or_else(|| {
                ServiceError::Internal(format!("key {} has no account", key.key_id))
            })?,
        };
    if account.status != AccountStatus::Active {
        return Err(refused(
            ErrorCode::AccountTerminated,
            "this account's contract has ended; its API keys no longer work",
        ));
    }
    Ok(Caller {
        account,
        key_id: key.key_id.clone(),
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn parses_bearer_header() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer")), None);
        assert_eq!(bearer(None), None);
    }
}
