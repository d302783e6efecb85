//! Webhook endpoints (`/v1/webhook-endpoints`): create, list, read, change, delete, rotate
//! the signing secret. Delivery itself is [`dispatch`]; the log and redelivery, [`deliveries`].

pub mod deliveries;
pub mod dispatch;

use super::auth::Caller;
use super::idempotency::{check_request_id, create_once, record, replay, Creation};
use super::json;
use super::views::EndpointView;
use super::{ErrorCode, Page, Reply, ServiceError, Services};
use crate::domain::idempotency::Scope;
use crate::domain::ids;
use crate::domain::webhook::{
    check_url, is_event_type, rotate, secret_context, secret_from, SigningSecret, UrlError,
    UrlPolicy,
};
use crate::ports::records::EndpointRecord;
use crate::ports::store::{Change, CommitError, NewRecord};
use crate::ports::time::random_bytes;
use crate::ports::webhooks::EndpointPatch;
use serde::Deserialize;

/// Endpoints per account: each event fans out to all of them, so the number is bounded.
pub const MAX_ENDPOINTS: usize = 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    pub request_id: String,
    pub url: String,
    /// Omitted: every event type, including ones added later.
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpoint {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default, deserialize_with = "crate::service::present")]
    pub event_types: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "crate::service::present")]
    pub description: Option<Option<String>>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    pub request_id: String,
}

fn policy(svc: &Services) -> UrlPolicy {
    UrlPolicy {
        allow_private: svc.settings.webhooks.allow_private,
    }
}

/// The URL's form, then (in the cloud) where its name resolves: every address must be public.
async fn check_endpoint_url(svc: &Services, raw: &str) -> Result<String, ServiceError> {
    let p = policy(svc);
    let url = check_url(raw.trim(), p).map_err(|e| {
        let code = match e {
            UrlError::ForbiddenAddress => ErrorCode::WebhookUrlForbidden,
            _ => ErrorCode::InvalidWebhookUrl,
        };
        ServiceError::reject(code, format!("url: {e}"))
    })?;
    if !p.allow_private {
        if let Some(url::Host::Domain(host)) = url.host() {
            svc.sender
                .check_public_name(host, url.port_or_known_default())
                .await
                .map_err(|why| {
                    ServiceError::reject(ErrorCode::WebhookUrlForbidden, format!("url: {why}"))
                })?;
        }
    }
    Ok(url.to_string())
}

fn check_event_types(types: &Option<Vec<String>>) -> Result<(), ServiceError> {
    if let Some(ts) = types {
        if ts.is_empty() {
            return Err(ServiceError::reject(
                ErrorCode::InvalidEventTypes,
                "event_types: name at least one type, or leave it out to receive every type",
            ));
        }
        if let Some(bad) = ts.iter().find(|t| !is_event_type(t)) {
            return Err(ServiceError::reject_with(
                ErrorCode::InvalidEventTypes,
                format!("event_types: unknown event type {bad:?}"),
                serde_json::json!({ "known": crate::domain::webhook::EVENT_TYPES.iter().map(|(t, _)| *t).collect::<Vec<_>>() }),
            ));
        }
    }
    Ok(())
}

fn check_description(d: &Option<String>) -> Result<(), ServiceError> {
    if d.as_ref().is_some_and(|d| d.chars().count() > 500) {
        return Err(ServiceError::reject(
            ErrorCode::InvalidRequest,
            "description: at most 500 characters",
        ));
    }
    Ok(())
}

pub async fn create(
    svc: &Services,
    caller: &Caller,
    req: CreateEndpoint,
    fingerprint: &str,
) -> Result<Reply, ServiceError> {
    let account_id = &caller.account.account_id;
    check_request_id(&req.request_id)?;
    if let Some((reply, _)) = replay(
        svc,
        account_id,
        Scope::CreateEndpoint,
        &req.request_id,
        fingerprint,
    )
    .await?
    {
        return Ok(reply);
    }
    check_event_types(&req.event_types)?;
    check_description(&req.description)?;
    let url = check_endpoint_url(svc, &req.url).await?;
    if svc.endpoints.list(account_id).await?.len() >= MAX_ENDPOINTS {
        return Err(ServiceError::reject(
            ErrorCode::EndpointLimitReached,
            format!("an account can have at most {MAX_ENDPOINTS} webhook endpoints"),
        ));
    }
    create_once(
        svc,
        account_id,
        caller.account.retention_days,
        Scope::CreateEndpoint,
        &req.request_id,
        fingerprint,
        |now| {
            let url = url.clone();
            let event_types = req.event_types.clone();
            let description = req.description.clone();
            async move {
                let secret = secret_from(random_bytes(svc.random.as_ref()));
                let endpoint_id = svc.new_id("we");
                let sealed = svc
                    .sealer
                    .seal(&secret, &secret_context(account_id, &endpoint_id))
                    .await?;
                let rec = EndpointRecord {
                    account_id: account_id.clone(),
                    endpoint_id,
                    url,
                    description,
                    event_types,
                    enabled: true,
                    disabled_reason: None,
                    disabled_ms: None,
                    secrets: vec![SigningSecret {
                        sealed,
                        created_ms: now,
                        retires_ms: None,
                    }],
                    secrets_version: 0,
                    failing_since_ms: None,
                    last_success_ms: None,
                    created_ms: now,
                    updated_ms: now,
                };
                Ok(Creation {
                    reply: Reply {
                        status: 201,
                        body: json(&EndpointView::new(&rec, Some(secret), now))?,
                        replayed: false,
                    },
                    // The secret is shown once; a replay gets the endpoint without it.
                    replayed: Some(Reply {
                        status: 201,
                        body: json(&EndpointView::new(&rec, None, now))?,
                        replayed: false,
                    }),
                    resource_id: rec.endpoint_id.clone(),
                    creates: vec![NewRecord::Endpoint(rec)],
                })
            }
        },
    )
    .await
}

pub(crate) async fn find(
    svc: &Services,
    account_id: &str,
    endpoint_id: &str,
) -> Result<EndpointRecord, ServiceError> {
    if !ids::is_valid("we", endpoint_id) {
        return Err(ServiceError::not_found("webhook endpoint"));
    }
    svc.endpoints
        .get(account_id, endpoint_id)
        .await?
        .ok_or_else(|| ServiceError::not_found("webhook endpoint"))
}

pub async fn get(
    svc: &Services,
    account_id: &str,
    endpoint_id: &str,
) -> Result<EndpointView, ServiceError> {
    let rec = find(svc, account_id, endpoint_id).await?;
    Ok(EndpointView::new(&rec, None, svc.now_ms()))
}

pub async fn list(svc: &Services, account_id: &str) -> Result<Page<EndpointView>, ServiceError> {
    let now = svc.now_ms();
    let recs = svc.endpoints.list(account_id).await?;
    Ok(Page {
        data: recs
            .iter()
            .map(|r| EndpointView::new(r, None, now))
            .collect(),
        has_more: false,
        next_cursor: None,
    })
}

pub async fn update(
    svc: &Services,
    account_id: &str,
    endpoint_id: &str,
    req: UpdateEndpoint,
) -> Result<EndpointView, ServiceError> {
    find(svc, account_id, endpoint_id).await?;
    if let Some(types) = &req.event_types {
        check_event_types(types)?;
    }
    if let Some(d) = &req.description {
        check_description(d)?;
    }
    let url = match &req.url {
        Some(u) => Some(check_endpoint_url(svc, u).await?),
        None => None,
    };
    let patch = EndpointPatch {
        url,
        description: req.description,
        event_types: req.event_types,
        enabled: req.enabled,
    };
    let now = svc.now_ms();
    let rec = svc
        .endpoints
        .patch(account_id, endpoint_id, &patch, now)
        .await?
        .ok_or_else(|| ServiceError::not_found("webhook endpoint"))?;
    Ok(EndpointView::new(&rec, None, now))
}

pub async fn delete(
    svc: &Services,
    account_id: &str,
    endpoint_id: &str,
) -> Result<serde_json::Value, ServiceError> {
    find(svc, account_id, endpoint_id).await?;
    svc.endpoints.delete(account_id, endpoint_id).await?;
    Ok(serde_json::json!({ "id": endpoint_id, "deleted": true }))
}

/// A new secret; the current one keeps signing beside it for 24 hours (both signatures in
/// the header), so receivers can switch over without dropping a delivery.
pub async fn rotate_secret(
    svc: &Services,
    account_id: &str,
    retention_days: u32,
    endpoint_id: &str,
    req: RotateSecret,
    fingerprint: &str,
) -> Result<Reply, ServiceError> {
    check_request_id(&req.request_id)?;
    let scope_id = format!("{endpoint_id}:{}", req.request_id);
    for _ in 0..5 {
        if let Some((reply, _)) =
            replay(svc, account_id, Scope::RotateSecret, &scope_id, fingerprint).await?
        {
            return Ok(reply);
        }
        let rec = find(svc, account_id, endpoint_id).await?;
        let now = svc.now_ms();
        let secret = secret_from(random_bytes(svc.random.as_ref()));
        let sealed = svc
            .sealer
            .seal(&secret, &secret_context(account_id, endpoint_id))
            .await?;
        let secrets = rotate(&rec.secrets, sealed, now);
        let mut after = rec.clone();
        after.secrets = secrets.clone();
        after.secrets_version += 1;
        after.updated_ms = now;
        let reply = Reply {
            status: 200,
            body: json(&EndpointView::new(&after, Some(secret), now))?,
            replayed: false,
        };
        // The new secret is shown once; a replay gets the endpoint without it.
        let stored = Reply {
            status: 200,
            body: json(&EndpointView::new(&after, None, now))?,
            replayed: false,
        };
        let req_rec = record(
            account_id,
            Scope::RotateSecret,
            &scope_id,
            fingerprint,
            &stored,
            endpoint_id,
            now,
            retention_days,
        );
        let change = Change::RotateSecrets {
            account_id: rec.account_id.clone(),
            endpoint_id: rec.endpoint_id.clone(),
            version: rec.secrets_version,
            secrets,
            now_ms: now,
        };
        match svc
            .requests
            .change_and_create(change, vec![NewRecord::Request(req_rec)])
            .await
        {
            Ok(()) => return Ok(reply),
            // Another rotation (or this very request) got there first: look again.
            Err(CommitError::Stale) | Err(CommitError::Duplicate(_)) => continue,
            Err(CommitError::Store(e)) => return Err(e.into()),
        }
    }
    Err(ServiceError::reject(
        ErrorCode::RequestInProgress,
        "the endpoint's secret is being rotated; retry with the same request_id",
    ))
}
