//! Named operators: each person (or automation) that runs the platform has a name and a
//! credential of their own, so every grant, adjustment and change is theirs in the ledger
//! and the usage log, and a credential is issued, rotated and revoked without a redeploy.
//!
//! Credentials are stored like API keys (only their SHA-256; the secret is shown once) in
//! the same table, under the reserved owner `_operators`, which no account can be: the
//! hashing, the consistent lookup, revocation and listing are the keys' own. They cannot be
//! mixed up with customer keys: an operator credential starts `vgo_`, a key `vgk_`, and each
//! kind of route refuses the other's shape before any lookup.
//!
//! The first operator comes from the bootstrap command (`devstack operator`), run with the
//! deployment's AWS credentials; from then on operators manage each other through
//! `/admin/v1/operators`.

use super::{ErrorCode, ServiceError, Services};
use crate::domain::api_key::{
    display_parts, hash_secret, hashes_match, looks_like_operator_credential, operator_secret_from,
};
use crate::domain::time::rfc3339_ms;
use crate::ports::records::ApiKeyRecord;
use crate::ports::time::random_bytes;
use serde::Serialize;

/// The owner of every operator credential in the key table; never an account id (those are
/// `acct_...`).
pub const OWNER: &str = "_operators";
const SCOPE: &str = "operator";

/// An operator, as the access guard authenticated them.
#[derive(Clone, Debug)]
pub struct OperatorIdentity {
    pub name: String,
    pub credential: ApiKeyRecord,
}

#[derive(Debug, Serialize)]
pub struct OperatorView {
    pub name: String,
    /// `active` while the operator holds a credential that is not revoked, else `revoked`.
    pub status: &'static str,
    /// Newest first, revoked ones included (the audit trail of rotations).
    pub credentials: Vec<CredentialView>,
    /// Only in the response that issued it; never stored, never shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct CredentialView {
    pub id: String,
    pub prefix: String,
    pub last4: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

fn invalid(message: impl Into<String>) -> ServiceError {
    ServiceError::reject(ErrorCode::InvalidOperator, message)
}

fn unauthorized() -> ServiceError {
    ServiceError::reject(
        ErrorCode::Unauthorized,
        "operator credential required; send Authorization: Bearer vgo_...",
    )
}

/// An operator's name: 2 to 64 characters of `a-z 0-9 . _ @ -`, starting with a letter or
/// digit (an e-mail address or a handle), because it is what the ledger's `actor` shows.
pub fn parse_name(raw: &str) -> Result<String, ServiceError> {
    let ok_char = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._@-".contains(&b);
    let starts_well = raw
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if (2..=64).contains(&raw.len()) && starts_well && raw.bytes().all(ok_char) {
        Ok(raw.to_string())
    } else {
        Err(invalid(
            "name must be 2 to 64 characters of a-z, 0-9, '.', '_', '@' and '-', starting with a letter or digit",
        ))
    }
}

/// Resolves `Authorization: Bearer vgo_...` to its operator with one consistent read: a
/// revoked credential stops at once.
pub async fn authenticate(
    svc: &Services,
    authorization: Option<&str>,
) -> Result<OperatorIdentity, ServiceError> {
    let secret = super::auth::bearer(authorization)
        .filter(|t| looks_like_operator_credential(t))
        .ok_or_else(unauthorized)?;
    authenticate_hash(svc, &hash_secret(secret)).await
}

/// The same from the credential's SHA-256 (what an operator's console session holds).
pub async fn authenticate_hash(
    svc: &Services,
    presented: &str,
) -> Result<OperatorIdentity, ServiceError> {
    let credential = svc
        .keys
        .get(presented)
        .await?
        .filter(|k| k.account_id == OWNER && hashes_match(&k.key_hash, presented))
        .filter(|k| k.revoked_ms.is_none() && k.enabled)
        .ok_or_else(unauthorized)?;
    Ok(OperatorIdentity {
        name: credential.name.clone(),
        credential,
    })
}

/// Every operator credential, newest first.
async fn all_credentials(svc: &Services) -> Result<Vec<ApiKeyRecord>, ServiceError> {
    let mut all = svc.keys.list(OWNER).await?;
    all.sort_by(|a, b| {
        b.created_ms
            .cmp(&a.created_ms)
            .then(b.key_id.cmp(&a.key_id))
    });
    Ok(all)
}

fn view(name: &str, creds: &[&ApiKeyRecord], credential: Option<String>) -> OperatorView {
    OperatorView {
        name: name.to_string(),
        status: if creds.iter().any(|c| c.revoked_ms.is_none()) {
            "active"
        } else {
            "revoked"
        },
        credentials: creds
            .iter()
            .map(|c| CredentialView {
                id: c.key_id.clone(),
                prefix: c.prefix.clone(),
                last4: c.last4.clone(),
                created_at: rfc3339_ms(c.created_ms),
                revoked_at: c.revoked_ms.map(rfc3339_ms),
            })
            .collect(),
        credential,
    }
}

/// Every operator, by name.
pub async fn list(svc: &Services) -> Result<Vec<OperatorView>, ServiceError> {
    let all = all_credentials(svc).await?;
    let mut names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    Ok(names
        .into_iter()
        .map(|n| {
            let creds: Vec<&ApiKeyRecord> = all.iter().filter(|c| c.name == n).collect();
            view(n, &creds, None)
        })
        .collect())
}

/// Stores a new credential for `name` and returns it with its secret.
async fn issue(svc: &Services, name: &str) -> Result<(ApiKeyRecord, String), ServiceError> {
    let secret = operator_secret_from(random_bytes(svc.random.as_ref()));
    let (prefix, last4) = display_parts(&secret);
    let now = svc.now_ms();
    let rec = ApiKeyRecord {
        key_hash: hash_secret(&secret),
        key_id: svc.new_id("opc"),
        account_id: OWNER.to_string(),
        name: name.to_string(),
        prefix,
        last4,
        enabled: true,
        created_ms: now,
        scopes: vec![SCOPE.to_string()],
        rate_limit_per_min: None,
        ip_allowlist: Vec::new(),
        expires_ms: None,
        revoked_ms: None,
        disabled_reason: None,
        throttle: None,
        updated_ms: now,
    };
    svc.keys.put(&rec).await?;
    Ok((rec, secret))
}

/// A new operator with their first credential (shown once). A name in use by an active
/// operator is refused; a revoked operator's name may be given out again, and their old
/// credentials stay listed under it. (Two creations of one name racing each other can both
/// pass: the listing reads an index.)
pub async fn create(svc: &Services, raw_name: &str) -> Result<OperatorView, ServiceError> {
    let name = parse_name(raw_name)?;
    let all = all_credentials(svc).await?;
    if all.iter().any(|c| c.name == name && c.revoked_ms.is_none()) {
        return Err(ServiceError::reject(
            ErrorCode::OperatorExists,
            format!(
                "an active operator is already named {name:?}; rotate their credential instead"
            ),
        ));
    }
    let (rec, secret) = issue(svc, &name).await?;
    let mut creds: Vec<&ApiKeyRecord> = vec![&rec];
    creds.extend(all.iter().filter(|c| c.name == name));
    Ok(view(&name, &creds, Some(secret)))
}

fn live_of<'a>(all: &'a [ApiKeyRecord], name: &'a str) -> impl Iterator<Item = &'a ApiKeyRecord> {
    all.iter()
        .filter(move |c| c.name == name && c.revoked_ms.is_none())
}

/// The name, if it is an active operator's, and every credential (404 otherwise).
async fn active(
    svc: &Services,
    raw_name: &str,
) -> Result<(String, Vec<ApiKeyRecord>), ServiceError> {
    let name = parse_name(raw_name).map_err(|_| ServiceError::not_found("operator"))?;
    let all = all_credentials(svc).await?;
    if live_of(&all, &name).next().is_none() {
        return Err(ServiceError::not_found("operator"));
    }
    Ok((name, all))
}

/// A new credential for an active operator (shown once); every older one is revoked. The new
/// one is stored first, so a crash in between leaves the operator able to sign in (with
/// both, until a rotation or revocation runs again), never locked out.
pub async fn rotate(svc: &Services, raw_name: &str) -> Result<OperatorView, ServiceError> {
    let (name, all) = active(svc, raw_name).await?;
    let live: Vec<&ApiKeyRecord> = live_of(&all, &name).collect();
    let (rec, secret) = issue(svc, &name).await?;
    let now = svc.now_ms();
    for old in &live {
        svc.keys.revoke(&old.key_hash, now).await?;
    }
    let fresh = all_credentials(svc).await?;
    let mut creds: Vec<&ApiKeyRecord> = vec![&rec];
    creds.extend(
        fresh
            .iter()
            .filter(|c| c.name == name && c.key_id != rec.key_id),
    );
    Ok(view(&name, &creds, Some(secret)))
}

/// Revokes every credential of an operator. The last active operator cannot be revoked
/// (nobody could issue another without the bootstrap command); an operator may revoke
/// themselves when someone else remains.
pub async fn revoke(svc: &Services, raw_name: &str) -> Result<OperatorView, ServiceError> {
    let (name, all) = active(svc, raw_name).await?;
    let live: Vec<&ApiKeyRecord> = live_of(&all, &name).collect();
    if !all.iter().any(|c| c.name != name && c.revoked_ms.is_none()) {
        return Err(ServiceError::reject(
            ErrorCode::LastOperator,
            format!("{name} is the last active operator; create another one first"),
        ));
    }
    let now = svc.now_ms();
    for c in &live {
        svc.keys.revoke(&c.key_hash, now).await?;
    }
    let fresh = all_credentials(svc).await?;
    let creds: Vec<&ApiKeyRecord> = fresh.iter().filter(|c| c.name == name).collect();
    Ok(view(&name, &creds, None))
}

#[cfg(test)]
mod tests {
    use super::parse_name;

    #[test]
    fn names_are_handles_or_addresses() {
        for ok in ["li.wei@example.com", "oncall-bot", "a1", "ops_2"] {
            assert_eq!(parse_name(ok).ok().as_deref(), Some(ok));
        }
        for bad in ["", "a", "Alice", "-x", "a b", "ä", &"x".repeat(65)] {
            assert!(parse_name(bad).is_err(), "{bad:?}");
        }
    }
}
