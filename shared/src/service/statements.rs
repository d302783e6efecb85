//! Monthly statements (contract 8.2): opening balance, what moved in the month by kind,
//! invoices for packs bought, usage by model, one line per batch, closing balance. Everything
//! is computed from the ledger (and the batches it names), so the closing balance of a month
//! is the ledger's running balance at its end and the opening balance of the next.

use super::{pages, ErrorCode, ServiceError, Services};
use crate::domain::export::{csv_line, Cell};
use crate::domain::ledger::{entry_id, EntryKind, Tally};
use crate::domain::money::Credits;
use crate::domain::time::rfc3339_ms;
use crate::ports::records::AccountRecord;
use crate::ports::TimeRange;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::pin::pin;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// `json` (default), `csv` or `html` (printable).
    pub format: Option<String>,
}

/// `YYYY-MM` as [start, end) in epoch milliseconds, UTC.
pub fn month_range(month: &str) -> Option<(i64, i64)> {
    let (y, m) = month.split_once('-')?;
    if y.len() != 4 || m.len() != 2 {
        return None;
    }
    let (y, m): (i32, u8) = (y.parse().ok()?, m.parse().ok()?);
    let start = |y: i32, m: u8| -> Option<i64> {
        let month = time::Month::try_from(m).ok()?;
        let d = time::Date::from_calendar_date(y, month, 1).ok()?;
        let t = d.midnight().assume_utc();
        i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
    };
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    Some((start(y, m)?, start(ny, nm)?))
}

#[derive(Debug, Serialize, Default)]
pub struct Movements {
    pub grants: i64,
    pub pre_deducts: i64,
    pub refunds: i64,
    /// Cancelled tasks that never reached a provider, given back.
    pub releases: i64,
    pub adjustments: i64,
    pub compensation: i64,
}

/// A paid purchase of the month and its numbered invoice (`GET /v1/invoices/{invoice_id}`).
#[derive(Debug, Serialize)]
pub struct Invoice {
    pub invoice_id: String,
    /// `card` or `wire`.
    pub paid_by: &'static str,
    pub entry_id: String,
    pub date: String,
    pub pack: Option<String>,
    pub credits: i64,
    /// What the customer paid (packs carry a discount against 1 credit = US$0.01).
    pub amount_paid_usd: Option<String>,
    pub list_value_usd: String,
}

/// A free grant of the month (an operator's): credits, but no invoice.
#[derive(Debug, Serialize)]
pub struct GrantLine {
    pub entry_id: String,
    pub date: String,
    pub pack: Option<String>,
    pub credits: i64,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, Default)]
pub struct ModelUsage {
    pub model: String,
    pub batches_settled: u64,
    pub videos_succeeded: u64,
    pub unit_price: i64,
    /// videos_succeeded x unit price.
    pub succeeded_value: i64,
    pub charged: i64,
    pub refunded: i64,
    pub released: i64,
}

#[derive(Debug, Serialize)]
pub struct BatchLine {
    pub batch_id: String,
    pub model: String,
    pub unit_price: i64,
    pub task_count: u32,
    pub status: String,
    pub pre_deducted_in_month: i64,
    pub refunded_in_month: i64,
    pub released_in_month: i64,
    /// Once settled: charged + refunded + released == held.
    pub charged: Option<i64>,
    pub settled_at: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Statement {
    pub account_id: String,
    pub account_name: String,
    pub month: String,
    pub period_start: String,
    pub period_end: String,
    pub opening_balance: i64,
    pub closing_balance: i64,
    pub opening_balance_usd: String,
    pub closing_balance_usd: String,
    pub movements: Movements,
    pub entries: u64,
    pub invoices: Vec<Invoice>,
    pub free_grants: Vec<GrantLine>,
    pub usage_by_model: Vec<ModelUsage>,
    pub batches: Vec<BatchLine>,
    /// The month's SLA report (availability, processing times, compensation).
    pub sla_report: String,
    pub generated_at: String,
}

pub async fn build(
    svc: &Services,
    account: &AccountRecord,
    month: &str,
) -> Result<Statement, ServiceError> {
    let (start, end) = month_range(month).ok_or_else(|| {
        ServiceError::reject(
            ErrorCode::NotFound,
            "statement not found: months are YYYY-MM",
        )
    })?;
    let account_id = account.account_id.as_str();
    let opening = svc
        .ledger
        .last_before(account_id, start)
        .await?
        .map_or(Credits::ZERO, |e| e.balance_after);

    let period = TimeRange {
        from_ms: start,
        to_ms: end - 1,
    };
    let mut mv = Movements::default();
    let mut invoices = Vec::new();
    let mut free_grants = Vec::new();
    // Per batch: (pre-deducted, refunded, released) in the month.
    let mut per_batch: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    let mut tally = Tally::after(opening);
    let mut entries = pin!(pages(|t| svc.ledger.page(account_id, period, t)));
    while let Some(page) = entries.try_next().await? {
        for e in page {
            tally
                .add(e.seq, e.amount, e.balance_after)
                .map_err(|err| ServiceError::Internal(err.to_string()))?;
            let amount = e.amount.value();
            match e.kind {
                EntryKind::Grant => {
                    mv.grants += amount;
                    match (&e.invoice, super::views::paid_by(&e)) {
                        (Some(number), Some(how @ ("card" | "wire"))) => invoices.push(Invoice {
                            invoice_id: number.clone(),
                            paid_by: how,
                            entry_id: entry_id(e.seq),
                            date: rfc3339_ms(e.created_ms),
                            pack: e.pack.clone(),
                            credits: amount,
                            amount_paid_usd: e.price_paid_usd_cents.map(|c| Credits(c).usd()),
                            list_value_usd: e.amount.usd(),
                        }),
                        _ => free_grants.push(GrantLine {
                            entry_id: entry_id(e.seq),
                            date: rfc3339_ms(e.created_ms),
                            pack: e.pack.clone(),
                            credits: amount,
                            reason: e.reason.clone(),
                        }),
                    }
                }
                EntryKind::PreDeduct => mv.pre_deducts += amount,
                EntryKind::Refund => mv.refunds += amount,
                EntryKind::Release => mv.releases += amount,
                EntryKind::Adjustment => mv.adjustments += amount,
                EntryKind::Compensation => mv.compensation += amount,
            }
            if let Some(b) = &e.batch_id {
                let line = per_batch.entry(b.clone()).or_default();
                match e.kind {
                    EntryKind::PreDeduct => line.0 += amount,
                    EntryKind::Refund => line.1 += amount,
                    EntryKind::Release => line.2 += amount,
                    _ => {}
                }
            }
        }
    }
    if !tally.is_clean() {
        return Err(ServiceError::Internal(format!(
            "statement {month:?} of {account_id} does not add up: {:?}",
            tally.findings
        )));
    }
    let (opening, closing, count) = (opening.value(), tally.closing.value(), tally.count);

    // Batches active in the month: named by its entries, or settled in it.
    let mut usage: BTreeMap<String, ModelUsage> = BTreeMap::new();
    let mut lines = Vec::new();
    let mut batches = pin!(pages(|t| svc.batches.page(account_id, t)));
    while let Some(page) = batches.try_next().await? {
        for b in page {
            let settled_here = b.completed_ms.is_some_and(|c| (start..end).contains(&c));
            let moved = per_batch.get(&b.batch_id).copied();
            if !settled_here && moved.is_none() {
                continue;
            }
            let model = b.model.as_str().to_string();
            if settled_here {
                if let Some(s) = &b.settlement {
                    let u = usage.entry(model.clone()).or_insert_with(|| ModelUsage {
                        model: model.clone(),
                        unit_price: b.unit_price.value(),
                        ..Default::default()
                    });
                    u.batches_settled += 1;
                    u.videos_succeeded += u64::from(s.counts.succeeded);
                    u.succeeded_value += i64::from(s.counts.succeeded) * b.unit_price.value();
                    u.charged += s.charged.value();
                    u.refunded += s.refunded.value();
                    u.released += s.released.value();
                }
            }
            let (pre, refunded, released) = moved.unwrap_or_default();
            lines.push(BatchLine {
                batch_id: b.batch_id.clone(),
                model,
                unit_price: b.unit_price.value(),
                task_count: b.task_count,
                status: b.status.as_str().to_string(),
                pre_deducted_in_month: pre,
                refunded_in_month: refunded,
                released_in_month: released,
                charged: b.settlement.map(|s| s.charged.value()),
                settled_at: b.completed_ms.map(rfc3339_ms),
            });
        }
    }
    Ok(Statement {
        account_id: account.account_id.clone(),
        account_name: account.name.clone(),
        month: month.to_string(),
        period_start: rfc3339_ms(start),
        period_end: rfc3339_ms(end),
        opening_balance: opening,
        closing_balance: closing,
        opening_balance_usd: Credits(opening).usd(),
        closing_balance_usd: Credits(closing).usd(),
        movements: mv,
        entries: count,
        invoices,
        free_grants,
        usage_by_model: usage.into_values().collect(),
        batches: lines,
        sla_report: format!("/v1/sla/{month}"),
        generated_at: rfc3339_ms(svc.now_ms()),
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn csv(s: &Statement) -> String {
    let mut out = String::from(crate::domain::export::UTF8_BOM);
    let row = |cells: Vec<Cell>| csv_line(&cells);
    out.push_str(&row(vec![
        "section".into(),
        "item".into(),
        "credits".into(),
        "usd".into(),
        "detail".into(),
    ]));
    let money = |sec: &str, item: &str, v: i64, detail: String| {
        row(vec![
            sec.into(),
            item.into(),
            Cell::Int(v),
            Cell::money(&Credits(v).usd()),
            detail.into(),
        ])
    };
    out.push_str(&money(
        "balance",
        "opening",
        s.opening_balance,
        s.period_start.clone(),
    ));
    let m = &s.movements;
    for (k, v) in [
        ("grants", m.grants),
        ("pre_deducts", m.pre_deducts),
        ("refunds", m.refunds),
        ("releases", m.releases),
        ("adjustments", m.adjustments),
        ("compensation", m.compensation),
    ] {
        out.push_str(&money("movement", k, v, String::new()));
    }
    for i in &s.invoices {
        out.push_str(&money(
            "invoice",
            &i.invoice_id,
            i.credits,
            format!(
                "{} paid by {} US${} ({})",
                i.pack.clone().unwrap_or_else(|| "top-up".into()),
                i.paid_by,
                i.amount_paid_usd.clone().unwrap_or_else(|| "0.00".into()),
                i.entry_id
            ),
        ));
    }
    for g in &s.free_grants {
        out.push_str(&money(
            "free_grant",
            &g.entry_id,
            g.credits,
            g.pack.clone().unwrap_or_else(|| "grant".into()),
        ));
    }
    for u in &s.usage_by_model {
        out.push_str(&money(
            "usage",
            &u.model,
            u.succeeded_value,
            format!("{} videos x {}", u.videos_succeeded, u.unit_price),
        ));
    }
    for b in &s.batches {
        out.push_str(&money(
            "batch",
            &b.batch_id,
            b.pre_deducted_in_month + b.refunded_in_month + b.released_in_month,
            format!("{} {} tasks, {}", b.model, b.task_count, b.status),
        ));
    }
    out.push_str(&money(
        "balance",
        "closing",
        s.closing_balance,
        s.period_end.clone(),
    ));
    out
}

fn html(s: &Statement) -> String {
    let mut rows = String::new();
    let mut add = |a: &str, b: &str, v: i64| {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td></tr>\n",
            esc(a),
            esc(b),
            v,
            Credits(v).usd()
        ));
    };
    add("Opening balance", &s.period_start, s.opening_balance);
    let m = &s.movements;
    add("Credits purchased / granted", "", m.grants);
    add("Pre-deducted for batches", "", m.pre_deducts);
    add("Refunded (failed, timed out)", "", m.refunds);
    add(
        "Released (cancelled before reaching a provider)",
        "",
        m.releases,
    );
    add("Adjustments", "", m.adjustments);
    add("Compensation", "", m.compensation);
    for i in &s.invoices {
        add(
            &format!("Invoice {} (paid by {})", i.invoice_id, i.paid_by),
            i.pack.as_deref().unwrap_or("top-up"),
            i.credits,
        );
    }
    for g in &s.free_grants {
        add(
            &format!("Grant {} (no invoice)", g.entry_id),
            g.pack.as_deref().unwrap_or("grant"),
            g.credits,
        );
    }
    for u in &s.usage_by_model {
        add(
            &format!("Usage {}", u.model),
            &format!("{} videos x {}", u.videos_succeeded, u.unit_price),
            u.succeeded_value,
        );
    }
    for b in &s.batches {
        add(
            &format!("Batch {}", b.batch_id),
            &b.status,
            b.pre_deducted_in_month + b.refunded_in_month,
        );
    }
    add("Closing balance", &s.period_end, s.closing_balance);
    format!(
        "<!doctype html><html><head><meta charset=utf-8><title>Statement {m} — {n}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #999;padding:4px 8px}}.n{{text-align:right}}</style></head><body>\
         <h1>Statement {m}</h1><p>{n} ({id}) — 1 credit = US$0.01 — generated {g}</p>\
         <table><tr><th>Item</th><th>Detail</th><th>Credits</th><th>US$</th></tr>\n{rows}</table>\
         <p>Service levels this month: <a href=\"/v1/sla/{m}?format=html\">SLA report {m}</a></p></body></html>",
        m = esc(&s.month),
        n = esc(&s.account_name),
        id = esc(&s.account_id),
        g = esc(&s.generated_at),
    )
}

/// The statement in the asked format: (content type, body).
pub async fn render(
    svc: &Services,
    account: &AccountRecord,
    month: &str,
    p: &Params,
) -> Result<(&'static str, String), ServiceError> {
    let format = p.format.as_deref().unwrap_or("json");
    if !matches!(format, "json" | "csv" | "html") {
        return Err(ServiceError::reject(
            ErrorCode::InvalidParameter,
            "format must be json, csv or html",
        ));
    }
    let s = build(svc, account, month).await?;
    Ok(match format {
        "csv" => ("text/csv; charset=utf-8", csv(&s)),
        "html" => ("text/html; charset=utf-8", html(&s)),
        _ => (
            "application/json",
            serde_json::to_string(&s).map_err(|e| ServiceError::Internal(e.to_string()))?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::month_range;

    #[test]
    fn months_are_utc_and_roll_over_the_year() {
        assert_eq!(
            month_range("2026-11"),
            Some((1_793_491_200_000, 1_796_083_200_000))
        );
        let dec = month_range("2026-12");
        assert_eq!(dec.map(|d| d.1), month_range("2027-01").map(|j| j.0));
        assert_eq!(month_range("2026-13"), None);
        assert_eq!(month_range("26-11"), None);
        assert_eq!(month_range("2026-1"), None);
    }
}
