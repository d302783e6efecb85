//! Exports (contract 2.3, 4.3): an account's ledger, batches, tasks, usage log or webhook
//! deliveries as CSV or JSON Lines, or everything as one GDPR archive. The API records the
//! request; the export function streams the rows into an S3 multipart upload (at most one
//! part in memory, whatever the size), writes a manifest (rows, SHA-256, range) and marks
//! the export completed. Finance fetches the file by a presigned link made fresh on each read.

use super::idempotency::{create_once, Creation};
use super::json;
use super::pages;
use super::views::{ApiKeyView, EndpointView, LedgerEntryView, TaskView, UsageView};
use super::{ErrorCode, Page, Reply, ServiceError, Services};
use crate::domain::access::{allowed, KeyScope};
use crate::domain::export::{
    csv_header, csv_line, usd, Cell, Dataset, Format, PART_BYTES, UTF8_BOM,
};
use crate::domain::idempotency::Scope;
use crate::domain::ids;
use crate::domain::time::{parse_rfc3339_ms, rfc3339_ms};
use crate::ports::blobs::Upload;
use crate::ports::queue::QueueName;
use crate::ports::records::{BatchRecord, DeliveryRecord, ExportRecord, LedgerRecord, TaskRecord};
use crate::ports::store::{ExportFinish, NewRecord};
use crate::ports::{StoreError, TimeRange};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json as j, Value};
use sha2::{Digest, Sha256};
use std::pin::pin;

/// `to_ms` of an export without an end: it takes everything there is when it runs.
pub const OPEN_END: i64 = i64::MAX;

fn end_time(to_ms: i64, generated: Option<i64>) -> Option<String> {
    if to_ms == OPEN_END {
        generated.map(rfc3339_ms)
    } else {
        Some(rfc3339_ms(to_ms))
    }
}

/// Export records (and the files, by lifecycle rule) are kept this long.
pub const EXPORT_KEEP_DAYS: i64 = 30;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateExport {
    pub request_id: String,
    pub dataset: Dataset,
    #[serde(default = "default_format")]
    pub format: Format,
    /// RFC 3339; default: the beginning.
    #[serde(default)]
    pub from: Option<String>,
    /// RFC 3339; default: open-ended (everything up to when the export runs).
    #[serde(default)]
    pub to: Option<String>,
}

fn default_format() -> Format {
    Format::Csv
}

/// A message on the exports queue.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExportMessage {
    pub account_id: String,
    pub export_id: String,
    /// Set on a message that waits for its account's share: when it is due (SQS delays it;
    /// where delays are off, the pump holds it until then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct ExportView {
    pub id: String,
    pub request_id: String,
    pub dataset: Dataset,
    pub format: Format,
    pub from: String,
    /// Null for an open-ended export until it has run.
    pub to: Option<String>,
    pub status: String,
    pub rows_written: u64,
    pub bytes: u64,
    pub created_at: String,
    pub completed_at: Option<String>,
    pub error: Option<String>,
    /// When completed: the manifest (also stored beside the file).
    pub manifest: Option<Value>,
    /// When completed: a fresh presigned HTTPS link on every read.
    pub download_url: Option<String>,
    pub download_expires_at: Option<String>,
}

fn manifest(rec: &ExportRecord) -> Value {
    j!({
        "export_id": rec.export_id,
        "account_id": rec.account_id,
        "dataset": rec.dataset.as_str(),
        "format": rec.format,
        "rows": rec.rows_written,
        "bytes": rec.bytes,
        "sha256": rec.sha256,
        "from": rfc3339_ms(rec.from_ms),
        "to": end_time(rec.to_ms, rec.completed_ms),
        "generated_at": rec.completed_ms.map(rfc3339_ms),
        "file": rec.s3_key.rsplit('/').next(),
    })
}

/// The export function's timeout (`template.yaml`): a run started longer ago than this is
/// dead, whatever its record says.
pub const EXPORT_RUN_LIFETIME_MS: i64 = 900_000;

/// How long a queued export waits before a read sends it to its queue again, and between two
/// such sends.
const NUDGE_GAP_MS: i64 = 60_000;

/// Refuses a key that may not read `dataset`, as the guard refuses a route.
fn check_scope(scopes: &[KeyScope], dataset: Dataset) -> Result<(), ServiceError> {
    let needed = dataset.required_scope();
    if allowed(scopes, needed) {
        return Ok(());
    }
    Err(ServiceError::reject_with(
        ErrorCode::InsufficientScope,
        format!(
            "the {} dataset needs the {} scope",
            dataset.as_str(),
            needed.as_str()
        ),
        j!({ "required_scope": needed.as_str() }),
    ))
}

/// An export as its owner sees it; the link and manifest only for a key that may read it.
async fn view(
    svc: &Services,
    rec: &ExportRecord,
    readable: bool,
) -> Result<ExportView, ServiceError> {
    let done = rec.status == "completed";
    let link = if done && readable {
        let name = rec.s3_key.rsplit('/').next().unwrap_or("export");
        Some(svc.blobs.presign_get(&rec.s3_key, name).await?)
    } else {
        None
    };
    let now = svc.now_ms();
    Ok(ExportView {
        id: rec.export_id.clone(),
        request_id: rec.request_id.clone(),
        dataset: rec.dataset,
        format: rec.format,
        from: rfc3339_ms(rec.from_ms),
        to: end_time(rec.to_ms, rec.completed_ms),
        status: rec.status.clone(),
        rows_written: rec.rows_written,
        bytes: rec.bytes,
        created_at: rfc3339_ms(rec.created_ms),
        completed_at: rec.completed_ms.map(rfc3339_ms),
        error: rec.error.clone(),
        manifest: (done && readable).then(|| manifest(rec)),
        download_expires_at: link
            .as_ref()
            .map(|l| rfc3339_ms(now + i64::try_from(l.expires_in_secs).unwrap_or(3_600) * 1_000)),
        download_url: link.map(|l| l.url),
    })
}

async fn enqueue(svc: &Services, account_id: &str, export_id: &str) -> Result<(), ServiceError> {
    enqueue_after(svc, account_id, export_id, 0).await
}

async fn enqueue_after(
    svc: &Services,
    account_id: &str,
    export_id: &str,
    delay_secs: u64,
) -> Result<(), ServiceError> {
    let m = ExportMessage {
        account_id: account_id.to_string(),
        export_id: export_id.to_string(),
        not_before_ms: (delay_secs > 0)
            .then(|| svc.now_ms() + i64::try_from(delay_secs).unwrap_or(0) * 1_000),
    };
    svc.enqueue(QueueName::Exports, &[(m, delay_secs)]).await?;
    Ok(())
}

/// Exports one account may have running at once. The export function runs ten at a time
/// (its reserved concurrency), so one tenant's exports, however many and however large,
/// leave most of them to everyone else.
pub const RUNNING_PER_ACCOUNT: usize = 2;
/// How long an export waits for its account's share before it looks again.
pub const SHARE_WAIT_SECS: u64 = 30;
/// How many of an account's newest exports the share looks at (a running one is recent: it
/// was created at most a few function lifetimes ago).
const SHARE_LOOKBACK: usize = 50;

/// How many of the account's exports other than `export_id` have a run that may be alive.
/// (Two messages of one account read this at the same moment may both start: the share is
/// a bound on the order of `RUNNING_PER_ACCOUNT`, not a lock.)
async fn running_besides(
    svc: &Services,
    account_id: &str,
    export_id: &str,
    now: i64,
) -> Result<usize, ServiceError> {
    let (recent, _) = svc.exports.list(account_id, SHARE_LOOKBACK, None).await?;
    Ok(recent
        .iter()
        .filter(|x| x.export_id != export_id && x.status == "running")
        .filter(|x| {
            x.run_started_ms
                .is_some_and(|t| now - t <= EXPORT_RUN_LIFETIME_MS)
        })
        .count())
}

pub async fn create(
    svc: &Services,
    account_id: &str,
    retention_days: u32,
    scopes: &[KeyScope],
    req: CreateExport,
    fingerprint: &str,
) -> Result<Reply, ServiceError> {
    // Before the idempotency record: a replay must not hand a reader what an admin made.
    check_scope(scopes, req.dataset)?;
    if req.dataset == Dataset::AccountArchive && req.format != Format::Json {
        return Err(ServiceError::reject(
            ErrorCode::InvalidExport,
            "the account archive is JSON Lines only: use format json",
        ));
    }
    let time = |v: &Option<String>, name: &str, default: i64| match v {
        None => Ok(default),
        Some(t) => parse_rfc3339_ms(t).ok_or_else(|| {
            ServiceError::reject(
                ErrorCode::InvalidExport,
                format!("{name} must be an RFC 3339 timestamp"),
            )
        }),
    };
    let from = time(&req.from, "from", 0)?;
    let to = time(&req.to, "to", OPEN_END)?;
    if to < from {
        return Err(ServiceError::reject(
            ErrorCode::InvalidExport,
            "to is before from",
        ));
    }
    let (dataset, format, rid) = (req.dataset, req.format, req.request_id.as_str());
    let reply = create_once(
        svc,
        account_id,
        retention_days,
        Scope::CreateExport,
        rid,
        fingerprint,
        |now| async move {
            let export_id = svc.new_id("exp");
            let name = format!("{}-{export_id}.{}", dataset.as_str(), format.extension());
            let rec = ExportRecord {
                account_id: account_id.to_string(),
                export_id: export_id.clone(),
                request_id: rid.to_string(),
                dataset,
                format,
                from_ms: from,
                to_ms: to,
                status: "queued".into(),
                rows_written: 0,
                bytes: 0,
                sha256: None,
                s3_key: format!("accounts/{account_id}/exports/{name}"),
                manifest_key: format!("accounts/{account_id}/exports/{name}.manifest.json"),
                upload_id: None,
                run: 0,
                created_ms: now,
                completed_ms: None,
                error: None,
                peak_buffer_bytes: 0,
                nudged_ms: None,
                run_started_ms: None,
                expires_at: now / 1_000 + EXPORT_KEEP_DAYS * 86_400,
            };
            Ok(Creation {
                reply: Reply {
                    status: 202,
                    body: json(&view(svc, &rec, true).await?)?,
                    replayed: false,
                },
                replayed: None,
                resource_id: export_id,
                creates: vec![NewRecord::Export(rec)],
            })
        },
    )
    .await?;
    // Sent after the record commits; a retry with the same request_id sends it again, and
    // reading a stuck export does too, so a crash in between delays it but cannot lose it.
    if let Ok(v) = serde_json::from_str::<Value>(&reply.body) {
        if let (Some(id), Some("queued")) = (v["id"].as_str(), v["status"].as_str()) {
            enqueue(svc, account_id, id).await?;
        }
    }
    Ok(reply)
}

pub async fn get(
    svc: &Services,
    account_id: &str,
    scopes: &[KeyScope],
    export_id: &str,
) -> Result<ExportView, ServiceError> {
    if !ids::is_valid("exp", export_id) {
        return Err(ServiceError::not_found("export"));
    }
    let rec = svc
        .exports
        .get(account_id, export_id)
        .await?
        .ok_or_else(|| ServiceError::not_found("export"))?;
    check_scope(scopes, rec.dataset)?;
    // A queued export whose message may be lost goes to its queue again, once a minute
    // however often it is read (each message starts a run, and a reader may poll every second).
    let now = svc.now_ms();
    if rec.status == "queued"
        && now - rec.created_ms > NUDGE_GAP_MS
        && svc.exports.nudge(&rec, now, NUDGE_GAP_MS).await?
    {
        enqueue(svc, account_id, export_id).await?;
    }
    view(svc, &rec, true).await
}

pub use super::PageParams as ListParams;

/// The account's exports, newest first. Those of datasets the key may not read are listed
/// without their link and manifest.
pub async fn list(
    svc: &Services,
    account_id: &str,
    scopes: &[KeyScope],
    p: &ListParams,
) -> Result<Page<ExportView>, ServiceError> {
    let limit = super::parse_limit(p.limit.as_deref())?;
    let before = super::decode_cursor::<String>(p.cursor.as_deref())?;
    if before
        .as_deref()
        .is_some_and(|id| !ids::is_valid("exp", id))
    {
        return Err(ServiceError::reject(
            ErrorCode::InvalidCursor,
            "cursor is not valid",
        ));
    }
    let (recs, more) = svc.exports.list(account_id, limit, before).await?;
    let mut data = Vec::new();
    for r in &recs {
        let readable = check_scope(scopes, r.dataset).is_ok();
        data.push(view(svc, r, readable).await?);
    }
    Ok(Page {
        next_cursor: match (more, recs.last()) {
            (true, Some(l)) => Some(crate::domain::cursor::encode(&l.export_id)),
            _ => None,
        },
        has_more: more,
        data,
    })
}

/// Where the file's bytes go: a buffer flushed part by part, and the running checksum.
struct Sink<'a> {
    svc: &'a Services,
    rec: &'a ExportRecord,
    run: u32,
    upload: Upload,
    buf: Vec<u8>,
    hasher: Sha256,
    rows: u64,
    bytes: u64,
    peak: u64,
    columns: &'static [&'static str],
}

impl Sink<'_> {
    async fn line(&mut self, text: &str) -> Result<(), StoreError> {
        self.hasher.update(text.as_bytes());
        self.buf.extend_from_slice(text.as_bytes());
        self.bytes += text.len() as u64;
        self.peak = self.peak.max(self.buf.len() as u64);
        if self.buf.len() >= PART_BYTES {
            let part = std::mem::take(&mut self.buf);
            self.svc.blobs.upload_part(&mut self.upload, part).await?;
            self.svc
                .exports
                .progress(self.rec, self.run, self.rows, self.bytes)
                .await?;
        }
        Ok(())
    }

    /// A row: an object whose keys are the dataset's columns.
    async fn row(&mut self, v: &Value) -> Result<(), StoreError> {
        self.rows += 1;
        let text = match self.rec.format {
            Format::Json => {
                let mut s = v.to_string();
                s.push('\n');
                s
            }
            Format::Csv => {
                let cells: Vec<Cell> = self
                    .columns
                    .iter()
                    .map(|c| match &v[*c] {
                        Value::String(s) if c.ends_with("_usd") => Cell::money(s),
                        Value::String(s) => Cell::Text(s.clone()),
                        Value::Number(n) => n.as_i64().map_or(Cell::Text(n.to_string()), Cell::Int),
                        Value::Bool(b) => Cell::Text(b.to_string()),
                        Value::Null => Cell::Null,
                        other => Cell::Text(other.to_string()),
                    })
                    .collect();
                csv_line(&cells)
            }
        };
        self.line(&text).await
    }
}

const LEDGER_COLUMNS: &[&str] = &[
    "id",
    "seq",
    "created_at",
    "kind",
    "amount",
    "amount_usd",
    "balance_after",
    "balance_after_usd",
    "batch_id",
    "task_id",
    "request_id",
    "reason",
    "actor",
    "pack",
    "price_paid_usd",
];
const BATCH_COLUMNS: &[&str] = &[
    "id",
    "request_id",
    "created_at",
    "status",
    "model",
    "unit_price",
    "task_count",
    "succeeded",
    "failed",
    "rejected",
    "timed_out",
    "cancelled",
    "released",
    "held",
    "charged",
    "refunded",
    "released_credits",
    "held_usd",
    "charged_usd",
    "refunded_usd",
    "released_usd",
    "completed_at",
];
const TASK_COLUMNS: &[&str] = &[
    "id",
    "batch_id",
    "index",
    "status",
    "model",
    "prompt",
    "duration_seconds",
    "aspect_ratio",
    "created_at",
    "started_at",
    "ended_at",
    "error_code",
    "error_message",
    "charged",
];
const USAGE_COLUMNS: &[&str] = &[
    "id",
    "kind",
    "at",
    "key_id",
    "method",
    "route",
    "status",
    "code",
    "latency_ms",
    "source_ip",
    "request_id",
    "user_agent",
];
const DELIVERY_COLUMNS: &[&str] = &[
    "endpoint_id",
    "event_id",
    "event_type",
    "created_at",
    "status",
    "attempts",
    "last_attempt_at",
    "last_status_code",
    "last_error",
];

fn columns(d: Dataset) -> &'static [&'static str] {
    match d {
        Dataset::Ledger => LEDGER_COLUMNS,
        Dataset::Batches => BATCH_COLUMNS,
        Dataset::Tasks => TASK_COLUMNS,
        Dataset::Usage => USAGE_COLUMNS,
        Dataset::WebhookDeliveries => DELIVERY_COLUMNS,
        Dataset::AccountArchive => &[],
    }
}

fn ledger_row(e: &LedgerRecord) -> Value {
    let mut v = super::events::snapshot(&LedgerEntryView::from(e));
    v["amount_usd"] = j!(usd(e.amount.value()));
    v["balance_after_usd"] = j!(usd(e.balance_after.value()));
    v
}

fn batch_row(b: &BatchRecord) -> Value {
    let (charged, refunded, released) = match &b.settlement {
        Some(s) => (s.charged.value(), s.refunded.value(), s.released.value()),
        None => (0, b.credits.refunded.value(), b.credits.released.value()),
    };
    let c = b.settlement.map(|s| s.counts).unwrap_or_default();
    j!({
        "id": b.batch_id, "request_id": b.request_id, "created_at": rfc3339_ms(b.created_ms),
        "status": b.status.as_str(), "model": b.model, "unit_price": b.unit_price,
        "task_count": b.task_count, "succeeded": c.succeeded, "failed": c.failed,
        "rejected": c.rejected, "timed_out": c.timed_out, "cancelled": c.cancelled,
        "released": c.released,
        "held": b.credits.held.value(), "charged": charged, "refunded": refunded,
        "released_credits": released,
        "held_usd": usd(b.credits.held.value()), "charged_usd": usd(charged),
        "refunded_usd": usd(refunded), "released_usd": usd(released),
        "completed_at": b.completed_ms.map(rfc3339_ms),
    })
}

fn task_row(t: &TaskRecord) -> Value {
    let v = super::events::snapshot(&TaskView::from(t));
    j!({
        "id": v["id"], "batch_id": v["batch_id"], "index": v["index"], "status": v["status"],
        "model": v["model"], "prompt": v["prompt"], "duration_seconds": v["duration_seconds"],
        "aspect_ratio": v["aspect_ratio"], "created_at": v["created_at"],
        "started_at": v["started_at"], "ended_at": v["ended_at"],
        "error_code": v["error"]["code"], "error_message": v["error"]["message"],
        "charged": v["charged"],
    })
}

fn delivery_row(d: &DeliveryRecord) -> Value {
    let last = d.attempts.last();
    j!({
        "endpoint_id": d.endpoint_id, "event_id": d.event_id, "event_type": d.event_type,
        "created_at": rfc3339_ms(d.created_ms), "status": d.status.as_str(), "attempts": d.recorded,
        "last_attempt_at": last.map(|a| rfc3339_ms(a.at_ms)),
        "last_status_code": last.and_then(|a| a.status_code),
        "last_error": last.and_then(|a| a.error.clone()),
    })
}

fn tagged(record: &str, mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.insert("record".into(), j!(record));
    }
    v
}

/// Writes `dataset`'s rows into the sink, oldest first; `tag` labels archive lines. Every
/// read is keyed by the export's own account, so no other account's rows can appear.
async fn write_dataset(sink: &mut Sink<'_>, dataset: Dataset, tag: bool) -> Result<(), StoreError> {
    let svc = sink.svc;
    let rec = sink.rec;
    let account = rec.account_id.as_str();
    let range = TimeRange {
        from_ms: rec.from_ms,
        to_ms: rec.to_ms,
    };
    let label = |record: &str, v: Value| if tag { tagged(record, v) } else { v };
    match dataset {
        Dataset::Ledger => {
            let mut entries = pin!(pages(|t| svc.ledger.page(account, range, t)));
            while let Some(page) = entries.try_next().await? {
                for e in page {
                    sink.row(&label("ledger_entry", ledger_row(&e))).await?;
                }
            }
        }
        Dataset::Batches | Dataset::Tasks => {
            let mut batches = pin!(pages(|t| svc.batches.page(account, t)));
            while let Some(page) = batches.try_next().await? {
                for b in page.iter().filter(|b| range.contains(b.created_ms)) {
                    if dataset == Dataset::Batches {
                        sink.row(&label("batch", batch_row(b))).await?;
                        continue;
                    }
                    let mut tasks = pin!(pages(|t| svc.tasks.page(&b.batch_id, t)));
                    while let Some(page) = tasks.try_next().await? {
                        for task in page.iter().filter(|t| t.account_id == account) {
                            sink.row(&label("task", task_row(task))).await?;
                        }
                    }
                }
            }
        }
        Dataset::Usage => {
            let mut usage = pin!(pages(|t| svc.usage.page(account, range, t)));
            while let Some(page) = usage.try_next().await? {
                for u in page {
                    let v = super::events::snapshot(&UsageView::from(&u));
                    sink.row(&label("api_usage", v)).await?;
                }
            }
        }
        Dataset::WebhookDeliveries => {
            for ep in svc.endpoints.list(account).await? {
                let mut deliveries =
                    pin!(pages(|t| svc.deliveries.page(&ep.endpoint_id, range, t)));
                while let Some(page) = deliveries.try_next().await? {
                    for d in page.iter().filter(|d| d.account_id == account) {
                        sink.row(&label("webhook_delivery", delivery_row(d)))
                            .await?;
                    }
                }
            }
        }
        Dataset::AccountArchive => {
            let now = svc.now_ms();
            if let Some(acct) = svc.accounts.get(account).await? {
                let v = super::events::snapshot(&super::views::AccountView::from(&acct));
                sink.row(&tagged("account", v)).await?;
            }
            for k in svc.keys.list(account).await? {
                let v = super::events::snapshot(&ApiKeyView::at(&k, None, now));
                sink.row(&tagged("api_key", v)).await?;
            }
            for ep in svc.endpoints.list(account).await? {
                let v = super::events::snapshot(&EndpointView::new(&ep, None, now));
                sink.row(&tagged("webhook_endpoint", v)).await?;
            }
            for d in [
                Dataset::Ledger,
                Dataset::Batches,
                Dataset::Tasks,
                Dataset::Usage,
                Dataset::WebhookDeliveries,
            ] {
                Box::pin(write_dataset(sink, d, true)).await?;
            }
        }
    }
    Ok(())
}

/// The export function's work for one message. Safe to repeat: a newer run supersedes an
/// older one, a completed export is left alone.
pub async fn run(svc: &Services, account_id: &str, export_id: &str) -> Result<(), ServiceError> {
    let Some(rec) = svc.exports.get(account_id, export_id).await? else {
        return Ok(());
    };
    if rec.status == "completed" {
        return Ok(());
    }
    let now = svc.now_ms();
    if rec.status == "running"
        && rec
            .run_started_ms
            .is_some_and(|t| now - t <= EXPORT_RUN_LIFETIME_MS)
    {
        // A second message (a duplicate, a nudge that crossed the first) while the run may
        // still be alive: leave it be. If that run dies, its own message comes back after
        // the visibility timeout, which is longer than the function lives, and takes over.
        tracing::info!(
            export_id,
            run = rec.run,
            "export already running; duplicate message dropped"
        );
        return Ok(());
    }
    if running_besides(svc, account_id, export_id, now).await? >= RUNNING_PER_ACCOUNT {
        // The account has its share running: this one waits its turn on the queue (still
        // `queued`), so other accounts' exports are not held up behind it.
        tracing::info!(
            export_id,
            account_id,
            "account has {RUNNING_PER_ACCOUNT} exports running; this one waits"
        );
        enqueue_after(svc, account_id, export_id, SHARE_WAIT_SECS).await?;
        return Ok(());
    }
    let run = rec.run + 1;
    let upload = svc
        .blobs
        .start_upload(&rec.s3_key, rec.format.content_type(), "kind=export")
        .await?;
    if !svc
        .exports
        .start_run(&rec, run, &upload.upload_id, now)
        .await?
    {
        svc.blobs
            .abort_upload(&rec.s3_key, &upload.upload_id)
            .await?;
        return Ok(());
    }
    if let Some(old) = &rec.upload_id {
        // A run that died left its upload open; the bucket's lifecycle rule would too.
        let _ = svc.blobs.abort_upload(&rec.s3_key, old).await;
    }
    let mut sink = Sink {
        svc,
        rec: &rec,
        run,
        upload,
        buf: Vec::new(),
        hasher: Sha256::new(),
        rows: 0,
        bytes: 0,
        peak: 0,
        columns: columns(rec.dataset),
    };
    let result = async {
        if rec.format == Format::Csv {
            let header = format!("{UTF8_BOM}{}", csv_header(columns(rec.dataset)));
            sink.line(&header).await?;
        }
        write_dataset(&mut sink, rec.dataset, false).await?;
        svc.faults.check("export.before_complete")?;
        let last = std::mem::take(&mut sink.buf);
        if !last.is_empty() || sink.upload.parts.is_empty() {
            svc.blobs.upload_part(&mut sink.upload, last).await?;
        }
        Ok::<_, StoreError>(())
    }
    .await;
    if let Err(e) = result {
        let failed = ExportFinish {
            status: "failed",
            rows: sink.rows,
            bytes: sink.bytes,
            sha256: None,
            peak_buffer: sink.peak,
            error: Some(e.to_string()),
            now_ms: svc.now_ms(),
        };
        let _ = svc.exports.finish(&rec, run, &failed).await;
        return Err(e.into());
    }
    let Sink {
        upload,
        hasher,
        rows,
        bytes,
        peak,
        ..
    } = sink;
    svc.blobs.complete_upload(upload).await?;
    let sha = hex::encode(hasher.finalize());
    let now = svc.now_ms();
    let mut done = rec.clone();
    done.rows_written = rows;
    done.bytes = bytes;
    done.sha256 = Some(sha.clone());
    done.completed_ms = Some(now);
    let m = serde_json::to_vec_pretty(&manifest(&done))
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
    svc.blobs
        .put(&rec.manifest_key, m, "application/json", None)
        .await?;
    let completed = ExportFinish {
        status: "completed",
        rows,
        bytes,
        sha256: Some(sha),
        peak_buffer: peak,
        error: None,
        now_ms: now,
    };
    svc.exports.finish(&rec, run, &completed).await?;
    tracing::info!(export_id, rows, bytes, "export completed");
    Ok(())
}
