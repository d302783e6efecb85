//! The model catalogue: what customers can order, at what price, and whether it is
//! available. Status is set by operators (e.g. when an upstream model is retired); a batch
//! for an unavailable model is refused before anything is charged.

use super::{ErrorCode, ServiceError, Services};
use crate::domain::pricing::{Model, CURRENT_PRICES};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;

/// How long an instance trusts a model's status it read: every batch asks it, and it changes
/// only when an operator says so. The instance that serves the change sees it at once; the
/// others within this time.
pub const STATUS_RECHECK_MS: i64 = 10_000;

/// The statuses this instance read, and when.
#[derive(Default)]
pub struct Seen(Mutex<HashMap<Model, (ModelStatus, i64)>>);

impl Seen {
    fn get(&self, model: Model, now: i64) -> Option<ModelStatus> {
        let seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get(&model) {
            Some((st, at)) if now - at < STATUS_RECHECK_MS => Some(*st),
            _ => None,
        }
    }

    fn keep(&self, model: Model, status: ModelStatus, now: i64) {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        seen.insert(model, (status, now));
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelStatus {
    Available,
    /// Accepting batches, but slower or failing more than usual.
    Degraded,
    /// Not accepting batches (503 `model_unavailable`).
    Unavailable,
}

impl ModelStatus {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "available" => Some(ModelStatus::Available),
            "degraded" => Some(ModelStatus::Degraded),
            "unavailable" => Some(ModelStatus::Unavailable),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ModelStatus::Available => "available",
            ModelStatus::Degraded => "degraded",
            ModelStatus::Unavailable => "unavailable",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ModelView {
    pub id: Model,
    pub unit_price: i64,
    pub unit_price_usd: String,
    pub price_version: &'static str,
    pub status: ModelStatus,
    pub durations_seconds: &'static [u32],
    pub resolutions: &'static [&'static str],
    pub aspect_ratios: &'static [&'static str],
}

pub async fn status(svc: &Services, model: Model) -> Result<ModelStatus, ServiceError> {
    let now = svc.now_ms();
    if let Some(st) = svc.models_seen.get(model, now) {
        return Ok(st);
    }
    let st = svc
        .models
        .get(model.as_str())
        .await?
        .and_then(|s| ModelStatus::parse(&s.status))
        .unwrap_or(ModelStatus::Available);
    svc.models_seen.keep(model, st, now);
    Ok(st)
}

pub async fn list(svc: &Services) -> Result<Vec<ModelView>, ServiceError> {
    let mut out = Vec::new();
    for m in Model::ALL {
        let (durations, resolutions) = match m {
            Model::Sora2 => (&[4u32, 8, 12][..], &["720p"][..]),
            Model::VeoPro => (&[4u32, 6, 8][..], &["720p", "1080p"][..]),
        };
        let price = CURRENT_PRICES.unit_price(m);
        out.push(ModelView {
            id: m,
            unit_price: price.value(),
            unit_price_usd: price.usd(),
            price_version: CURRENT_PRICES.version,
            status: status(svc, m).await?,
            durations_seconds: durations,
            resolutions,
            aspect_ratios: &["16:9", "9:16"],
        });
    }
    Ok(out)
}

/// Refuses new batches for a model an operator marked unavailable.
pub async fn ensure_orderable(svc: &Services, model: Model) -> Result<(), ServiceError> {
    if status(svc, model).await? == ModelStatus::Unavailable {
        return Err(ServiceError::reject(
            ErrorCode::ModelUnavailable,
            format!("{model} is not available right now; nothing was charged"),
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetStatus {
    pub status: String,
    pub reason: String,
}

pub async fn set_status(
    svc: &Services,
    model: &str,
    req: SetStatus,
) -> Result<ModelView, ServiceError> {
    let m: Model = model
        .parse()
        .map_err(|_| ServiceError::not_found("model"))?;
    let st = ModelStatus::parse(&req.status).ok_or_else(|| {
        ServiceError::reject(
            ErrorCode::InvalidModelStatus,
            "status must be available, degraded or unavailable",
        )
    })?;
    if req.reason.trim().is_empty() || req.reason.chars().count() > 500 {
        return Err(ServiceError::reject(
            ErrorCode::InvalidModelStatus,
            "reason must be 1 to 500 characters",
        ));
    }
    let setting = crate::ports::store::ModelSetting {
        status: st.as_str().to_string(),
        reason: req.reason.trim().to_string(),
        updated_ms: svc.now_ms(),
    };
    svc.models.set(m.as_str(), &setting).await?;
    svc.models_seen.keep(m, st, setting.updated_ms);
    list(svc)
        .await?
        .into_iter()
        .find(|v| v.id == m)
        .ok_or_else(|| ServiceError::Internal("model vanished".into()))
}
