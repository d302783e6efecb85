//! The SLA report (contract 3) and the month's close with its compensation (3.5), computed
//! from what the task ends, the API's 5xx answers and the probe recorded (`ports::Sla`) and
//! from the ledger. The rules are in `domain::sla`; docs/SLA.md states them for customers.

use super::money::{commit, Moved};
use super::{pages, ErrorCode, ServiceError, Services};
use crate::domain::ledger::{entry_id, next_entry, EntryKind};
use crate::domain::money::Credits;
use crate::domain::pricing::Model;
use crate::domain::sla::{
    self as rules, availability_ppm, below, compensation, incident_step, minute_of, DownCause,
    Estimate, Histogram, IncidentStep, MinuteCounts, SlaTerms, INCIDENT_WINDOW_MS, MINUTE_MS,
    RELATIVE_ERROR, TARGET_PPM,
};
use crate::domain::time::{month_of, rfc3339_ms};
use crate::ports::records::{AccountRecord, LedgerRecord};
use crate::ports::sla::{Incident, SlaCloseRecord, SlaMonth, TaskEnd};
use crate::ports::store::{MoneyMove, NewRecord};
use crate::ports::TimeRange;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::pin::pin;

/// How long a minute's request counts are kept once it had a 5xx: past the month's close
/// (the close record then holds what the report needs).
pub const KEEP_MINUTES_MS: i64 = 62 * 86_400_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// `json` (default) or `html` (printable).
    pub format: Option<String>,
}

/// A figure read from a histogram, with the bounds its exact value lies within.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Figure {
    pub ms: u64,
    pub low_ms: u64,
    pub high_ms: u64,
}

impl From<Estimate> for Figure {
    fn from(e: Estimate) -> Self {
        Figure {
            ms: e.ms.round() as u64,
            low_ms: e.low_ms.floor() as u64,
            high_ms: e.high_ms.ceil() as u64,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelFigures {
    pub model: Model,
    /// Tasks in the processing-time figures.
    pub tasks: u64,
    pub target_ms: i64,
    pub p50: Option<Figure>,
    pub p95: Option<Figure>,
    pub p99: Option<Figure>,
    /// Share of the measured tasks that ended within the target, in percent.
    pub within_target_percent: Option<String>,
    /// Whether 95 % ended within the target (contract 3.2); `None` without tasks.
    pub target_met: Option<bool>,
    pub queue_p50: Option<Figure>,
    pub queue_p95: Option<Figure>,
    /// Measured tasks that failed for a cause of ours.
    pub platform_failures: u64,
    /// Tasks left out of the figures, by cause.
    pub excluded: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DownMinute {
    pub minute: String,
    pub causes: Vec<DownCause>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Availability {
    /// Whole minutes of the period measured so far.
    pub minutes: u64,
    pub down_minutes: u64,
    pub availability_percent: String,
    pub target_percent: String,
    pub target_met: bool,
    pub downtime: Vec<DownMinute>,
    /// Minutes in which the probe found the API answering, and in which it did not.
    pub probe_ok_minutes: u64,
    pub probe_failed_minutes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct YearFigures {
    pub from_month: String,
    pub to_month: String,
    pub minutes: u64,
    pub down_minutes: u64,
    pub availability_percent: String,
    pub target_met: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Issued {
    pub credits: i64,
    pub ledger_entry: Option<String>,
    pub closed_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Compensation {
    pub terms: SlaTerms,
    /// Credits charged in the month: pre-deducted, less refunds and releases.
    pub charged: i64,
    pub percent: u32,
    pub due: i64,
    /// Set once the month is closed.
    pub issued: Option<Issued>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub account_id: String,
    pub account_name: String,
    pub month: String,
    pub period_start: String,
    pub period_end: String,
    /// `open` while the month runs or until it is closed; `closed` after.
    pub status: &'static str,
    /// Every processing-time figure is within this share of the exact value.
    pub relative_error_percent: String,
    pub availability: Availability,
    pub trailing_year: YearFigures,
    pub processing: Vec<ModelFigures>,
    /// Sustained platform failures (contract 3.5) in the month that affected the account.
    pub incidents: Vec<IncidentView>,
    pub compensation: Compensation,
    pub generated_at: String,
}

/// An incident as a report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentView {
    pub id: String,
    pub started_at: String,
    /// Null while it goes on.
    pub ended_at: Option<String>,
    /// Platform-caused task failures in all.
    pub platform_failures: u64,
    pub accounts_affected: u64,
    /// The report's own account's share (the platform's report: null).
    pub account_failures: Option<u64>,
}

impl IncidentView {
    fn of(i: &Incident, account: Option<&str>) -> Self {
        IncidentView {
            id: i.incident_id.clone(),
            started_at: rfc3339_ms(i.started_ms),
            ended_at: i.ended_ms.map(rfc3339_ms),
            platform_failures: i.failures(),
            accounts_affected: i.accounts.len() as u64,
            account_failures: account.map(|a| i.accounts.get(a).copied().unwrap_or(0)),
        }
    }
}

/// The incidents that overlap [start, end): closed ones and the open one.
async fn incidents_in(svc: &Services, start: i64, end: i64) -> Result<Vec<Incident>, ServiceError> {
    let mut all = svc.sla.incidents(start, end).await?;
    if let Some(open) = svc.sla.open_incident().await? {
        if open.started_ms < end {
            all.push(open);
        }
    }
    Ok(all)
}

fn percent(ppm: u64) -> String {
    format!("{}.{:04}", ppm / 10_000, ppm % 10_000)
}

fn ratio_percent(part: f64) -> String {
    format!("{:.2}", part * 100.0)
}

/// `YYYY-MM` as its [start, end) in ms, or 404.
fn period(month: &str) -> Result<(i64, i64), ServiceError> {
    super::statements::month_range(month).ok_or_else(|| {
        ServiceError::reject(
            ErrorCode::NotFound,
            "SLA report not found: months are YYYY-MM",
        )
    })
}

/// The month before `month`.
fn previous(month: &str) -> Option<String> {
    let (start, _) = super::statements::month_range(month)?;
    Some(month_of(start - 1))
}

/// The part of the month [start, end) that counts for an account at `now`: from the minute
/// it was opened (a month it joined part way counts from then) to the last whole minute.
fn span(account: &AccountRecord, start: i64, end: i64, now: i64) -> (i64, i64) {
    let from = start.max(minute_of(account.created_ms));
    (from, end.min(minute_of(now)).max(from))
}

/// The whole minutes of [from, until).
fn minutes_of((from, until): (i64, i64)) -> u64 {
    u64::try_from((until - from).max(0) / MINUTE_MS).unwrap_or(0)
}

/// The account's down minutes in [start, end) before `now`, each with its causes.
async fn downtime(
    svc: &Services,
    account_id: &str,
    m: &SlaMonth,
    month: &str,
    start: i64,
    until: i64,
) -> Result<(Vec<DownMinute>, u64, u64), ServiceError> {
    let mut down: BTreeMap<i64, Vec<DownCause>> = BTreeMap::new();
    let minutes: Vec<i64> = m
        .server_errors
        .keys()
        .copied()
        .filter(|t| (start..until).contains(t))
        .collect();
    let counts = svc.sla.minutes(account_id, &minutes).await?;
    for t in &minutes {
        // Counts gone (past their keeping): the 5xx alone decide, in the customer's favour.
        let errors = m.server_errors.get(t).copied().unwrap_or(0);
        let c = counts.get(t).copied().unwrap_or(MinuteCounts {
            admitted: errors,
            client_errors: 0,
            server_errors: errors,
        });
        let c = MinuteCounts {
            server_errors: c.server_errors.max(errors),
            ..c
        };
        if c.is_down() {
            down.entry(*t).or_default().push(DownCause::ServerErrors {
                server_errors: c.server_errors,
                valid: c.valid(),
            });
        }
    }
    let probes = svc.sla.probes(month).await?;
    for (t, detail) in probes.failed.range(start..until) {
        down.entry(*t).or_default().push(DownCause::ProbeFailed {
            detail: detail.clone(),
        });
    }
    let list = down
        .into_iter()
        .map(|(t, causes)| DownMinute {
            minute: rfc3339_ms(t),
            causes,
        })
        .collect();
    Ok((list, probes.ok_minutes, probes.failed.len() as u64))
}

/// Credits charged in [start, end): pre-deducted less refunded and released, from the ledger.
async fn charged(
    svc: &Services,
    account_id: &str,
    start: i64,
    end: i64,
) -> Result<i64, ServiceError> {
    let range = TimeRange {
        from_ms: start,
        to_ms: end - 1,
    };
    let mut sum = 0i64;
    let mut entries = pin!(pages(|t| svc.ledger.page(account_id, range, t)));
    while let Some(page) = entries.try_next().await? {
        for e in page {
            if matches!(
                e.kind,
                EntryKind::PreDeduct | EntryKind::Refund | EntryKind::Release
            ) {
                sum -= e.amount.value();
            }
        }
    }
    Ok(sum.max(0))
}

fn figures(m: &SlaMonth) -> Vec<ModelFigures> {
    Model::ALL
        .into_iter()
        .map(|model| {
            let empty = Histogram::default();
            let h = m.processing.get(&model).unwrap_or(&empty);
            let q = m.queue.get(&model).unwrap_or(&empty);
            let target = rules::target_ms(model);
            let share = h.share_within(target);
            ModelFigures {
                model,
                tasks: h.total(),
                target_ms: target,
                p50: h.quantile(0.5).map(Figure::from),
                p95: h.quantile(0.95).map(Figure::from),
                p99: h.quantile(0.99).map(Figure::from),
                within_target_percent: share.map(ratio_percent),
                target_met: share.map(|s| s >= 0.95),
                queue_p50: q.quantile(0.5).map(Figure::from),
                queue_p95: q.quantile(0.95).map(Figure::from),
                platform_failures: m.platform_failures.get(&model).copied().unwrap_or(0),
                excluded: m
                    .excluded
                    .iter()
                    .filter(|((mm, _), _)| *mm == model)
                    .map(|((_, cause), n)| (cause.clone(), *n))
                    .collect(),
            }
        })
        .collect()
}

/// The availability of one month, from its close record once closed, else as measured.
async fn month_availability(
    svc: &Services,
    account: &AccountRecord,
    month: &str,
    now: i64,
) -> Result<(u64, u64), ServiceError> {
    let account_id = account.account_id.as_str();
    if let Some(c) = svc.sla.closed(account_id, month).await? {
        return Ok((c.minutes, c.down_minutes));
    }
    let (start, end) = period(month)?;
    let (from, until) = span(account, start, end, now);
    if from >= until {
        return Ok((0, 0));
    }
    let m = svc.sla.month(account_id, month).await?;
    let (down, _, _) = downtime(svc, account_id, &m, month, from, until).await?;
    Ok((minutes_of((from, until)), down.len() as u64))
}

/// The report of `account` for `month` at `now`. 404 for a month that has not begun.
pub async fn report(
    svc: &Services,
    account: &AccountRecord,
    month: &str,
) -> Result<Report, ServiceError> {
    build(svc, account, month, true).await
}

/// The report, with or without the trailing year (eleven more months to read).
async fn build(
    svc: &Services,
    account: &AccountRecord,
    month: &str,
    with_year: bool,
) -> Result<Report, ServiceError> {
    let now = svc.now_ms();
    let (start, end) = period(month)?;
    if start > now {
        return Err(ServiceError::reject(
            ErrorCode::NotFound,
            "SLA report not found: that month has not begun",
        ));
    }
    let id = account.account_id.as_str();
    let m = svc.sla.month(id, month).await?;
    let (from, until) = span(account, start, end, now);
    let (downtime, probe_ok, probe_failed) = downtime(svc, id, &m, month, from, until).await?;
    let minutes = minutes_of((from, until));
    let down = downtime.len() as u64;

    // The trailing year: this month and the eleven before it.
    let (mut year_minutes, mut year_down) = (minutes, down);
    let mut from = month.to_string();
    for _ in 0..if with_year { 11 } else { 0 } {
        let Some(prev) = previous(&from) else { break };
        // Not before the account existed.
        if period(&prev).map(|(_, end)| end <= account.created_ms)? {
            break;
        }
        let (mm, dd) = month_availability(svc, account, &prev, now).await?;
        year_minutes += mm;
        year_down += dd;
        from = prev;
    }

    let processing = figures(&m);
    let terms = account.sla_terms.clone().unwrap_or_default();
    let closed = svc.sla.closed(id, month).await?;
    let charged = match &closed {
        Some(c) => c.charged,
        None => charged(svc, id, start, end).await?,
    };
    let pct = terms
        .availability_percent(minutes, down)
        .max(
            terms.latency_percent(processing.iter().filter(|f| f.tasks > 0).filter_map(|f| {
                m.processing
                    .get(&f.model)
                    .and_then(|h| h.share_within(f.target_ms))
                    .map(|s| (s * 1_000_000.0) as u64)
            })),
        );
    let (percent_due, due) = match &closed {
        Some(c) => (c.percent, c.compensation),
        None => (pct, compensation(charged, pct)),
    };
    Ok(Report {
        account_id: id.to_string(),
        account_name: account.name.clone(),
        month: month.to_string(),
        period_start: rfc3339_ms(start),
        period_end: rfc3339_ms(end),
        status: if closed.is_some() { "closed" } else { "open" },
        relative_error_percent: format!("{:.2}", RELATIVE_ERROR * 100.0),
        availability: Availability {
            minutes,
            down_minutes: down,
            availability_percent: percent(availability_ppm(minutes, down)),
            target_percent: percent(TARGET_PPM),
            target_met: !below(minutes, down, TARGET_PPM),
            downtime,
            probe_ok_minutes: probe_ok,
            probe_failed_minutes: probe_failed,
        },
        trailing_year: YearFigures {
            from_month: from,
            to_month: month.to_string(),
            minutes: year_minutes,
            down_minutes: year_down,
            availability_percent: percent(availability_ppm(year_minutes, year_down)),
            target_met: !below(year_minutes, year_down, TARGET_PPM),
        },
        processing,
        incidents: incidents_in(svc, start, end)
            .await?
            .iter()
            .filter(|i| i.accounts.contains_key(id))
            .map(|i| IncidentView::of(i, Some(id)))
            .collect(),
        compensation: Compensation {
            terms,
            charged,
            percent: percent_due,
            due,
            issued: closed.map(|c| Issued {
                credits: c.compensation,
                ledger_entry: c.ledger_seq.map(entry_id),
                closed_at: rfc3339_ms(c.closed_ms),
            }),
        },
        generated_at: rfc3339_ms(now),
    })
}

/// One account's line in the platform's report.
#[derive(Debug, Serialize)]
pub struct AccountLine {
    pub account_id: String,
    pub account_name: String,
    pub status: &'static str,
    pub minutes: u64,
    pub down_minutes: u64,
    pub availability_percent: String,
    pub target_met: bool,
    pub tasks: u64,
    pub platform_failures: u64,
    pub compensation_due: i64,
    pub compensation_issued: Option<i64>,
}

/// The operators' view of a month over every account.
#[derive(Debug, Serialize)]
pub struct PlatformReport {
    pub month: String,
    pub relative_error_percent: String,
    pub probe_ok_minutes: u64,
    pub probe_failed_minutes: u64,
    /// The probe's failed minutes: down for every account.
    pub probe_failures: Vec<DownMinute>,
    /// Every account's tasks together.
    pub processing: Vec<ModelFigures>,
    pub accounts: Vec<AccountLine>,
    pub incidents: Vec<IncidentView>,
    pub accounts_below_target: u64,
    pub compensation_due: i64,
    pub compensation_issued: i64,
    pub generated_at: String,
}

/// The month over every account (a scan: the operators' view, not a hot path).
pub async fn platform(svc: &Services, month: &str) -> Result<PlatformReport, ServiceError> {
    let now = svc.now_ms();
    let (start, end) = period(month)?;
    if start > now {
        return Err(ServiceError::reject(
            ErrorCode::NotFound,
            "SLA report not found: that month has not begun",
        ));
    }
    let mut all = SlaMonth::default();
    let mut lines = Vec::new();
    let mut accounts = pin!(pages(|t| svc.accounts.scan(t)));
    while let Some(page) = accounts.try_next().await? {
        for a in page {
            let r = build(svc, &a, month, false).await?;
            let m = svc.sla.month(&a.account_id, month).await?;
            for (model, h) in &m.processing {
                all.processing.entry(*model).or_default().merge(h);
            }
            for (model, h) in &m.queue {
                all.queue.entry(*model).or_default().merge(h);
            }
            for (model, n) in &m.platform_failures {
                *all.platform_failures.entry(*model).or_default() += n;
            }
            for (k, n) in &m.excluded {
                *all.excluded.entry(k.clone()).or_default() += n;
            }
            lines.push(AccountLine {
                account_id: a.account_id.clone(),
                account_name: a.name.clone(),
                status: r.status,
                minutes: r.availability.minutes,
                down_minutes: r.availability.down_minutes,
                availability_percent: r.availability.availability_percent.clone(),
                target_met: r.availability.target_met,
                tasks: r.processing.iter().map(|f| f.tasks).sum(),
                platform_failures: r.processing.iter().map(|f| f.platform_failures).sum(),
                compensation_due: r.compensation.due,
                compensation_issued: r.compensation.issued.as_ref().map(|i| i.credits),
            });
        }
    }
    let probes = svc.sla.probes(month).await?;
    let until = end.min(minute_of(now));
    Ok(PlatformReport {
        month: month.to_string(),
        relative_error_percent: format!("{:.2}", RELATIVE_ERROR * 100.0),
        probe_ok_minutes: probes.ok_minutes,
        probe_failed_minutes: probes.failed.len() as u64,
        probe_failures: probes
            .failed
            .range(start..until)
            .map(|(t, d)| DownMinute {
                minute: rfc3339_ms(*t),
                causes: vec![DownCause::ProbeFailed { detail: d.clone() }],
            })
            .collect(),
        processing: figures(&all),
        incidents: incidents_in(svc, start, end)
            .await?
            .iter()
            .map(|i| IncidentView::of(i, None))
            .collect(),
        accounts_below_target: lines.iter().filter(|l| !l.target_met).count() as u64,
        compensation_due: lines.iter().map(|l| l.compensation_due).sum(),
        compensation_issued: lines.iter().filter_map(|l| l.compensation_issued).sum(),
        accounts: lines,
        generated_at: rfc3339_ms(now),
    })
}

/// The month a close at `now` is for: the one before the current month.
pub fn month_to_close(now: i64) -> String {
    let current = month_of(now);
    previous(&current).unwrap_or(current)
}

/// What closing a month did.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct CloseSummary {
    pub month: String,
    pub accounts: u64,
    /// Closed by this run (the others were closed before).
    pub closed: u64,
    pub compensated: u64,
    pub credits: i64,
    pub errors: u64,
    /// Monthly invoice summaries issued by this run (accounts that asked for them).
    pub invoice_summaries: u64,
}

/// Closes `month` for every account: once per account and month, the close record and, when
/// compensation is due, its ledger entry, in one transaction; then the
/// `sla.compensation_issued` event; and the month's invoice summary for accounts that asked
/// for monthly invoicing (once, too). Safe to run again at any point: a closed month is left
/// alone (its event sent again, which dispatch keeps once).
pub async fn close_month(svc: &Services, month: &str) -> Result<CloseSummary, ServiceError> {
    let (start, end) = period(month)?;
    if svc.now_ms() < end {
        return Err(ServiceError::reject(
            ErrorCode::MonthNotOver,
            format!(
                "{month} is not over yet; it can be closed from {}",
                rfc3339_ms(end)
            ),
        ));
    }
    let mut summary = CloseSummary {
        month: month.to_string(),
        ..Default::default()
    };
    let mut accounts = pin!(pages(|t| svc.accounts.scan(t)));
    while let Some(page) = accounts.try_next().await? {
        for account in page {
            // An account opened after the month has nothing to close for it.
            if account.created_ms >= end {
                continue;
            }
            summary.accounts += 1;
            match close_account(svc, &account, month).await {
                Ok(Some(c)) => {
                    summary.closed += 1;
                    if c.compensation > 0 {
                        summary.compensated += 1;
                        summary.credits += c.compensation;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    // One account's failure must not hold back the others; the next run
                    // retries it.
                    summary.errors += 1;
                    tracing::error!(account_id = %account.account_id, month, error = %e, "SLA close failed");
                }
            }
            // The monthly invoice summary (contract 8.2), for accounts that ask for one.
            match super::invoices::monthly_summary(svc, &account, month, (start, end)).await {
                Ok(Some(_)) => summary.invoice_summaries += 1,
                Ok(None) => {}
                Err(e) => {
                    summary.errors += 1;
                    tracing::error!(account_id = %account.account_id, month, error = %e, "invoice summary failed");
                }
            }
        }
    }
    tracing::info!(?summary, "SLA month closed");
    Ok(summary)
}

/// Closes one account's month; `Some` when this call closed it.
async fn close_account(
    svc: &Services,
    account: &AccountRecord,
    month: &str,
) -> Result<Option<SlaCloseRecord>, ServiceError> {
    let id = account.account_id.as_str();
    if let Some(c) = svc.sla.closed(id, month).await? {
        // A crash may have come between the close and its event.
        issued_event(svc, &c).await?;
        return Ok(None);
    }
    let r = report(svc, account, month).await?;
    let now = svc.now_ms();
    let mut rec = SlaCloseRecord {
        account_id: id.to_string(),
        month: month.to_string(),
        closed_ms: now,
        minutes: r.availability.minutes,
        down_minutes: r.availability.down_minutes,
        availability_ppm: availability_ppm(r.availability.minutes, r.availability.down_minutes),
        charged: r.compensation.charged,
        percent: r.compensation.percent,
        compensation: r.compensation.due,
        ledger_seq: None,
        report: serde_json::to_string(&r).map_err(|e| ServiceError::Internal(e.to_string()))?,
    };
    if rec.compensation == 0 {
        return match svc
            .requests
            .create_all(vec![NewRecord::SlaClose(rec.clone())])
            .await
        {
            Ok(()) => Ok(Some(rec)),
            Err(crate::ports::store::CommitError::Duplicate(_)) => Ok(None),
            Err(e) => Err(ServiceError::Internal(e.to_string())),
        };
    }
    let amount = Credits(rec.compensation);
    let reason = format!(
        "SLA {month}: availability {} % (target {} %), {} % of {} credits charged",
        r.availability.availability_percent,
        r.availability.target_percent,
        rec.percent,
        rec.charged
    );
    let moved = commit(svc, id, None, |acct, now| {
        let next = next_entry(acct.book(), amount, now)
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        rec.ledger_seq = Some(next.seq);
        let entry = LedgerRecord {
            account_id: id.to_string(),
            seq: next.seq,
            created_ms: next.created_ms,
            kind: EntryKind::Compensation,
            amount,
            balance_after: next.balance_after,
            batch_id: None,
            task_id: None,
            request_id: None,
            reason: Some(reason.clone()),
            actor: Some("sla".into()),
            pack: None,
            price_paid_usd_cents: None,
            refers_to: Some(format!("sla:{month}")),
            invoice: None,
        };
        let mv = MoneyMove {
            account_id: id.to_string(),
            expected: acct.book(),
            require_active: false,
            entry,
            held_delta: Credits::ZERO,
            granted_delta: Credits::ZERO,
            charged_delta: Credits::ZERO,
            refunded_delta: Credits::ZERO,
            released_delta: Credits::ZERO,
            creates: vec![NewRecord::SlaClose(rec.clone())],
            changes: vec![],
        };
        Ok((mv, rec.clone()))
    })
    .await?;
    match moved {
        Moved::Committed(rec) => {
            svc.faults.check("sla.after_close")?;
            issued_event(svc, &rec).await?;
            Ok(Some(rec))
        }
        // Another run closed it first.
        Moved::Replayed(_) | Moved::Duplicate(_) => Ok(None),
    }
}

async fn issued_event(svc: &Services, c: &SlaCloseRecord) -> Result<(), ServiceError> {
    if c.compensation == 0 {
        return Ok(());
    }
    let event = super::events::Event {
        id: format!("evt_{}_sla_{}", c.account_id, c.month),
        event_type: "sla.compensation_issued".into(),
        created_at: rfc3339_ms(c.closed_ms),
        account_id: c.account_id.clone(),
        data: serde_json::json!({
            "month": c.month,
            "credits": c.compensation,
            "percent": c.percent,
            "charged": c.charged,
            "availability_percent": percent(c.availability_ppm),
            "down_minutes": c.down_minutes,
            "minutes": c.minutes,
            "ledger_entry": c.ledger_seq.map(entry_id),
            "report": format!("/v1/sla/{}", c.month),
        }),
    };
    super::events::emit(svc, &[event]).await?;
    Ok(())
}

/// The report in the asked format: (content type, body).
pub async fn render(
    svc: &Services,
    account: &AccountRecord,
    month: &str,
    p: &Params,
) -> Result<(&'static str, String), ServiceError> {
    let format = p.format.as_deref().unwrap_or("json");
    if !matches!(format, "json" | "html") {
        return Err(ServiceError::reject(
            ErrorCode::InvalidParameter,
            "format must be json or html",
        ));
    }
    let r = report(svc, account, month).await?;
    Ok(match format {
        "html" => ("text/html; charset=utf-8", html(&r)),
        _ => (
            "application/json",
            serde_json::to_string(&r).map_err(|e| ServiceError::Internal(e.to_string()))?,
        ),
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn fig(f: &Option<Figure>) -> String {
    match f {
        Some(f) => format!(
            "{:.1} s ({:.1}–{:.1})",
            f.ms as f64 / 1000.0,
            f.low_ms as f64 / 1000.0,
            f.high_ms as f64 / 1000.0
        ),
        None => "—".into(),
    }
}

fn html(r: &Report) -> String {
    let a = &r.availability;
    let mut models = String::new();
    for m in &r.processing {
        models.push_str(&format!(
            "<tr><td>{}</td><td class=n>{}</td><td class=n>{} s</td><td>{}</td><td>{}</td><td>{}</td><td class=n>{}</td><td>{}</td><td>{}</td><td class=n>{}</td><td>{}</td></tr>\n",
            esc(m.model.as_str()),
            m.tasks,
            m.target_ms / 1000,
            fig(&m.p50),
            fig(&m.p95),
            fig(&m.p99),
            m.within_target_percent.as_deref().map_or("—".to_string(), |p| format!("{p} %")),
            fig(&m.queue_p50),
            fig(&m.queue_p95),
            m.platform_failures,
            esc(&m.excluded.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")),
        ));
    }
    let mut down = String::new();
    for d in &a.downtime {
        let causes = d
            .causes
            .iter()
            .map(|c| match c {
                DownCause::ServerErrors {
                    server_errors,
                    valid,
                } => {
                    format!("{server_errors} of {valid} requests answered 5xx")
                }
                DownCause::ProbeFailed { detail } => format!("probe failed: {detail}"),
            })
            .collect::<Vec<_>>()
            .join("; ");
        down.push_str(&format!(
            "<tr><td>{}</td><td>{}</td></tr>\n",
            esc(&d.minute),
            esc(&causes)
        ));
    }
    if down.is_empty() {
        down.push_str("<tr><td colspan=2>None</td></tr>\n");
    }
    let c = &r.compensation;
    let issued = match &c.issued {
        Some(i) => format!(
            "Issued {} credits ({}) on {}",
            i.credits,
            i.ledger_entry.as_deref().unwrap_or("no entry"),
            i.closed_at
        ),
        None => "Not issued yet: the month is issued when it closes".into(),
    };
    format!(
        "<!doctype html><html><head><meta charset=utf-8><title>SLA report {m} — {n}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:1.5em}}\
         td,th{{border:1px solid #999;padding:4px 8px}}.n{{text-align:right}}</style></head><body>\
         <h1>SLA report {m}</h1><p>{n} ({id}) — {status} — generated {g}</p>\
         <h2>Availability (contract 3.1)</h2><table>\
         <tr><th>Minutes measured</th><td class=n>{mins}</td></tr>\
         <tr><th>Minutes down</th><td class=n>{downs}</td></tr>\
         <tr><th>Availability</th><td class=n>{av} % (target {tg} %)</td></tr>\
         <tr><th>Trailing year ({yf} to {yt})</th><td class=n>{yav} %</td></tr>\
         <tr><th>Probe minutes ok / failed</th><td class=n>{pok} / {pf}</td></tr></table>\
         <h2>Downtime</h2><table><tr><th>Minute (UTC)</th><th>Cause</th></tr>\n{down}</table>\
         <h2>Processing time (contract 3.2)</h2><p>Each figure within {err} % of the exact value; the bounds are in brackets.</p>\
         <table><tr><th>Model</th><th>Tasks</th><th>Target</th><th>p50</th><th>p95</th><th>p99</th><th>Within target</th>\
         <th>Queue p50</th><th>Queue p95</th><th>Platform failures</th><th>Excluded</th></tr>\n{models}</table>\
         <h2>Compensation (contract 3.5)</h2><table>\
         <tr><th>Credits charged in the month</th><td class=n>{ch}</td></tr>\
         <tr><th>Percent</th><td class=n>{pct} %</td></tr>\
         <tr><th>Due</th><td class=n>{due}</td></tr>\
         <tr><th>Issued</th><td>{issued}</td></tr></table></body></html>",
        m = esc(&r.month),
        n = esc(&r.account_name),
        id = esc(&r.account_id),
        status = r.status,
        g = esc(&r.generated_at),
        mins = a.minutes,
        downs = a.down_minutes,
        av = a.availability_percent,
        tg = a.target_percent,
        yf = r.trailing_year.from_month,
        yt = r.trailing_year.to_month,
        yav = r.trailing_year.availability_percent,
        pok = a.probe_ok_minutes,
        pf = a.probe_failed_minutes,
        err = r.relative_error_percent,
        ch = c.charged,
        pct = c.percent,
        due = c.due,
        issued = esc(&issued),
    )
}

/// Records an ended task in its account's month. At most once per task: only the writer
/// whose end mark landed calls it; a crash between the mark and this add leaves the task out
/// of the figures (never in twice), and the report's task counts say how many went in. In
/// the task worker the add waits for the invocation's end (`HeldEnds`), so a worker that
/// dies leaves out the ends it held.
pub async fn record_task_end(
    svc: &Services,
    task: &crate::ports::records::TaskRecord,
    outcome: crate::domain::task::Outcome,
    ended_ms: i64,
) {
    let class = rules::classify(
        outcome,
        task.created_ms,
        task.started_ms,
        ended_ms,
        task.provider_job_id.is_some(),
    );
    let platform_failure = matches!(
        class,
        rules::TaskClass::Measured {
            platform_failure: true,
            ..
        }
    );
    if let rules::TaskClass::Measured { processing_ms, .. } = class {
        // The metric the per-model p95 alarms watch (template.yaml).
        super::metrics::emit(
            ended_ms,
            "ProcessingTime",
            "Milliseconds",
            processing_ms as f64,
            &[("Model", task.model.as_str())],
            serde_json::json!({"task_id": task.task_id}),
        );
    }
    let end = TaskEnd {
        account_id: task.account_id.clone(),
        month: month_of(ended_ms),
        model: task.model,
        class,
    };
    match &svc.held_ends {
        Some(held) => held.hold(end),
        None => add_ends(svc, &[end]).await,
    }
    if platform_failure {
        tracing::warn!(task_id = %task.task_id, account_id = %task.account_id, "platform-caused task failure");
        if let Err(e) = svc
            .sla
            .add_platform_failure(&task.account_id, minute_of(ended_ms))
            .await
        {
            tracing::error!(task_id = %task.task_id, error = %e, "platform failure not counted");
        }
    }
}

/// Task ends held over one task-worker invocation and added at its end in one call
/// (`Sla::add_tasks`): ends that fall in one stored item, as ends close in time mostly do,
/// cost one write between them instead of one each.
#[derive(Default)]
pub struct HeldEnds(super::Held<TaskEnd>);

impl HeldEnds {
    fn hold(&self, end: TaskEnd) {
        self.0.hold(end);
    }

    /// Adds every held end, once: what does not go in is logged and left out, as after a
    /// crash between an end mark and its add.
    pub async fn flush(&self, svc: &Services) {
        let ends = self.0.take();
        if !ends.is_empty() {
            add_ends(svc, &ends).await;
        }
    }
}

async fn add_ends(svc: &Services, ends: &[TaskEnd]) {
    if let Err(e) = svc.sla.add_tasks(ends).await {
        tracing::error!(tasks = ends.len(), error = %e, "task ends not added to the SLA figures");
    }
}

/// The incident watch (contract 3.5), once a minute from the sweeper: opens an incident when
/// platform-caused task failures reach the threshold within the window, keeps its counts
/// while they go on, and closes it after a whole quiet window. Each step is one conditional
/// write on the open incident, so two watchers at once cannot open two or close one twice.
pub async fn watch_incidents(svc: &Services) -> Result<IncidentStep, ServiceError> {
    let now = svc.now_ms();
    let until = minute_of(now) + MINUTE_MS;
    let window = svc
        .sla
        .platform_failures(until - INCIDENT_WINDOW_MS, until)
        .await?;
    let in_window: u64 = window.values().flat_map(|a| a.values()).sum();
    let open = svc.sla.open_incident().await?;
    let step = incident_step(in_window, open.is_some());
    // The metric PlatformIncidentAlarm watches: 1 while an incident is open.
    let is_open = matches!(step, IncidentStep::Open | IncidentStep::Continue);
    super::metrics::emit(
        now,
        "PlatformIncidentOpen",
        "Count",
        if is_open { 1.0 } else { 0.0 },
        &[],
        serde_json::json!({"platform_failures_in_window": in_window}),
    );
    match (step, open) {
        (IncidentStep::Open, _) => {
            let mut accounts: BTreeMap<String, u64> = BTreeMap::new();
            for per in window.values() {
                for (a, n) in per {
                    *accounts.entry(a.clone()).or_default() += n;
                }
            }
            let inc = Incident {
                incident_id: svc.new_id("inc"),
                started_ms: window.keys().next().copied().unwrap_or(now),
                ended_ms: None,
                last_failure_ms: window.keys().next_back().copied().unwrap_or(now),
                accounts,
            };
            if svc.sla.start_incident(&inc).await? {
                // The operators' alarm (template.yaml: PlatformIncidentAlarm) matches this line.
                tracing::error!(
                    incident_id = %inc.incident_id,
                    failures = inc.failures(),
                    accounts = inc.accounts.len(),
                    "platform incident opened"
                );
            }
        }
        (IncidentStep::Continue, Some(mut inc)) => {
            let since = svc.sla.platform_failures(inc.started_ms, until).await?;
            inc.accounts.clear();
            for per in since.values() {
                for (a, n) in per {
                    *inc.accounts.entry(a.clone()).or_default() += n;
                }
            }
            inc.last_failure_ms = since
                .keys()
                .next_back()
                .copied()
                .unwrap_or(inc.last_failure_ms);
            svc.sla.update_incident(&inc).await?;
        }
        (IncidentStep::Close, Some(mut inc)) => {
            inc.ended_ms = Some(inc.last_failure_ms + MINUTE_MS);
            if svc.sla.end_incident(&inc).await? {
                tracing::warn!(
                    incident_id = %inc.incident_id,
                    failures = inc.failures(),
                    "platform incident closed"
                );
            }
        }
        _ => {}
    }
    Ok(step)
}

/// Counts a 5xx answered to an account's request (the API's access log calls it).
pub async fn record_server_error(svc: &Services, account_id: &str, at_ms: i64) {
    let minute = minute_of(at_ms);
    if let Err(e) = svc
        .sla
        .add_server_error(account_id, minute, minute + KEEP_MINUTES_MS)
        .await
    {
        tracing::error!(account_id, error = %e, "5xx not counted for the SLA");
    }
}
