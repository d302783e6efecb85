//! Invoices (contract 8.2, 1.4): one per paid purchase, numbered without gaps, immutable.
//!
//! The record is written in the purchase's own money transaction (see `credits::purchase`):
//! the grant and its invoice land together or not at all, and the number is taken by a
//! conditional move of the series' counter in that same transaction. Its documents (PDF and
//! JSON in S3) are a pure function of the record: written right after the commit, and made
//! again by a read that finds them missing (a crash in between loses nothing).

use super::credits::Purchase;
use super::events::Event;
use super::{ErrorCode, Page, ServiceError, Services};
use crate::domain::invoice::{tax_cents, usd, BillingProfile, Line, Number, Series};
use crate::domain::ledger::entry_id;
use crate::domain::time::rfc3339_ms;
use crate::ports::billing::{DocumentKind, InvoiceRecord, Payment};
use crate::ports::blobs::Presigned;
use crate::ports::records::{AccountRecord, LedgerRecord};
use serde::{Deserialize, Serialize};

/// The UTC calendar year holding `ms` (numbers restart each year).
pub fn year_of(ms: i64) -> i32 {
    rfc3339_ms(ms)
        .get(..4)
        .and_then(|y| y.parse().ok())
        .unwrap_or(1970)
}

/// The invoice of a purchase, as the purchase's transaction writes it.
pub(super) fn purchase_invoice(
    svc: &Services,
    account: &AccountRecord,
    number: Number,
    now_ms: i64,
    p: &Purchase,
    entry: &LedgerRecord,
) -> InvoiceRecord {
    let description = match p.pack {
        Some(pack) => format!("Prepaid pack {} 预付套餐", pack.id()),
        None => "Credits top-up 点数充值".to_string(),
    };
    let line = Line::new(
        description,
        p.pack.map(|k| k.id().to_string()),
        p.credits.value(),
        p.subtotal_usd_cents,
    );
    InvoiceRecord {
        account_id: account.account_id.clone(),
        number: number.to_string(),
        series: number.series,
        year: number.year,
        seq: number.seq,
        kind: DocumentKind::Purchase,
        issued_ms: now_ms,
        issuer: svc.settings.issuer.clone(),
        account_name: account.name.clone(),
        customer: account.billing_profile.clone(),
        lines: vec![line],
        subtotal_usd_cents: p.subtotal_usd_cents,
        tax_rate_bp: p.tax_rate_bp,
        tax_usd_cents: p.paid_usd_cents - p.subtotal_usd_cents,
        total_usd_cents: p.paid_usd_cents,
        payment: Some(Payment {
            method: p.method.to_string(),
            reference: p.reference.clone(),
        }),
        ledger_entry: Some(entry_id(entry.seq)),
        subject: p.pack.map(|k| k.id().to_string()),
        includes: vec![],
    }
}

/// What a purchase of `subtotal` costs with tax at `rate_bp`.
pub fn total_with_tax(subtotal_cents: i64, rate_bp: u32) -> i64 {
    subtotal_cents + tax_cents(subtotal_cents, rate_bp)
}

/// Where a document's files live. Outside the retention-tagged prefixes: invoices are kept.
fn blob_key(doc: &InvoiceRecord, ext: &str) -> String {
    format!("invoices/{}/{}.{ext}", doc.account_id, doc.number)
}

/// Writes a document's PDF and then its JSON (so a JSON file means both are there).
async fn store_documents(svc: &Services, doc: &InvoiceRecord) -> Result<(), ServiceError> {
    let pdf = svc
        .typesetter
        .invoice_pdf(doc)
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
    let json = serde_json::to_vec_pretty(&InvoiceView::from(doc))
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
    svc.blobs
        .put(&blob_key(doc, "pdf"), pdf, "application/pdf", None)
        .await?;
    svc.blobs
        .put(&blob_key(doc, "json"), json, "application/json", None)
        .await?;
    Ok(())
}

/// Writes the files unless a write after the commit already did (one HEAD of the JSON,
/// which is written last): for reads and replays, which find them there almost always.
async fn ensure_documents(svc: &Services, doc: &InvoiceRecord) -> Result<(), ServiceError> {
    if svc.blobs.size(&blob_key(doc, "json")).await?.is_none() {
        store_documents(svc, doc).await?;
    }
    Ok(())
}

/// After a document's commit: its files and its `invoice.issued` event. Neither can undo
/// the document; what fails here is logged, and a read or a replay makes the files again.
pub(super) async fn published(svc: &Services, doc: &InvoiceRecord) {
    if let Err(e) = store_documents(svc, doc).await {
        tracing::warn!(invoice = %doc.number, error = %e, "invoice documents not stored yet");
    }
    announce(svc, doc).await;
}

/// The `invoice.issued` event (dispatch keeps one per id, so sending it again is harmless).
async fn announce(svc: &Services, doc: &InvoiceRecord) {
    if doc.series == Series::Invoice {
        if let Err(e) = super::events::emit(svc, &[invoice_issued(doc)]).await {
            tracing::warn!(invoice = %doc.number, error = %e, "invoice.issued event not sent");
        }
    }
}

/// For a replayed purchase: publishes its invoice again (the stored reply names it).
pub(super) async fn republish(svc: &Services, account_id: &str, reply: &super::Reply) {
    let number = serde_json::from_str::<serde_json::Value>(&reply.body)
        .ok()
        .and_then(|v| v["entry"]["invoice_id"].as_str().map(str::to_string));
    let Some(number) = number else { return };
    match svc.invoices.get(account_id, &number).await {
        Ok(Some(doc)) => {
            if let Err(e) = ensure_documents(svc, &doc).await {
                tracing::warn!(invoice = %number, error = %e, "invoice documents not stored yet");
            }
            announce(svc, &doc).await;
        }
        Ok(None) => {
            tracing::error!(invoice = %number, "a replayed purchase names a missing invoice")
        }
        Err(e) => tracing::warn!(invoice = %number, error = %e, "invoice not republished"),
    }
}

pub fn invoice_issued(doc: &InvoiceRecord) -> Event {
    Event {
        id: format!("evt_{}_{}_issued", doc.account_id, doc.number),
        event_type: "invoice.issued".into(),
        created_at: rfc3339_ms(doc.issued_ms),
        account_id: doc.account_id.clone(),
        data: serde_json::to_value(InvoiceView::from(doc)).unwrap_or_default(),
    }
}

/// A document as the API shows it (and as its JSON file holds it).
#[derive(Debug, Serialize)]
pub struct InvoiceView {
    pub id: String,
    pub kind: DocumentKind,
    pub issued_at: String,
    pub account_id: String,
    pub issuer: crate::ports::billing::Issuer,
    /// The billing profile as it was when the document was issued.
    pub customer: Option<BillingProfile>,
    pub account_name: String,
    pub lines: Vec<LineView>,
    pub subtotal_usd: String,
    /// Percent, two decimals (`"0.00"`).
    pub tax_rate_percent: String,
    pub tax_usd: String,
    pub total_usd: String,
    pub currency: &'static str,
    pub payment: Option<Payment>,
    pub ledger_entry_id: Option<String>,
    /// A summary's month, or what a pro-forma sells.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub includes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct LineView {
    pub description: String,
    pub pack: Option<String>,
    pub credits: i64,
    pub unit_price_usd: String,
    pub amount_usd: String,
}

/// `1234567` cents as `"12345.67"` (no grouping: a machine reads this).
fn plain_usd(cents: i64) -> String {
    usd(cents).replace(',', "")
}

impl From<&InvoiceRecord> for InvoiceView {
    fn from(d: &InvoiceRecord) -> Self {
        InvoiceView {
            id: d.number.clone(),
            kind: d.kind,
            issued_at: rfc3339_ms(d.issued_ms),
            account_id: d.account_id.clone(),
            issuer: d.issuer.clone(),
            customer: d.customer.clone(),
            account_name: d.account_name.clone(),
            lines: d
                .lines
                .iter()
                .map(|l| LineView {
                    description: l.description.clone(),
                    pack: l.pack.clone(),
                    credits: l.credits,
                    unit_price_usd: l.unit_price_usd.clone(),
                    amount_usd: plain_usd(l.amount_usd_cents),
                })
                .collect(),
            subtotal_usd: plain_usd(d.subtotal_usd_cents),
            tax_rate_percent: format!("{}.{:02}", d.tax_rate_bp / 100, d.tax_rate_bp % 100),
            tax_usd: plain_usd(d.tax_usd_cents),
            total_usd: plain_usd(d.total_usd_cents),
            currency: "USD",
            payment: d.payment.clone(),
            ledger_entry_id: d.ledger_entry.clone(),
            subject: d.subject.clone(),
            includes: d.includes.clone(),
        }
    }
}

/// One document with fresh links to its files.
#[derive(Debug, Serialize)]
pub struct InvoiceDetail {
    #[serde(flatten)]
    pub invoice: InvoiceView,
    pub pdf: Link,
    pub json: Link,
}

#[derive(Debug, Serialize)]
pub struct Link {
    pub url: String,
    pub expires_in_secs: u64,
}

impl From<Presigned> for Link {
    fn from(p: Presigned) -> Self {
        Link {
            url: p.url,
            expires_in_secs: p.expires_in_secs,
        }
    }
}

pub use super::PageParams as ListParams;

/// `GET /v1/invoices` (and pro-formas): newest first.
pub async fn list(
    svc: &Services,
    account_id: &str,
    series: Series,
    p: &ListParams,
) -> Result<Page<InvoiceView>, ServiceError> {
    let limit = super::parse_limit(p.limit.as_deref())?;
    let before = super::decode_cursor::<String>(p.cursor.as_deref())?;
    if let Some(b) = &before {
        if Number::parse(b).map(|n| n.series) != Ok(series) {
            return Err(ServiceError::reject(
                ErrorCode::InvalidCursor,
                "cursor is not valid",
            ));
        }
    }
    let (recs, more) = svc
        .invoices
        .list(account_id, series, before.as_deref(), limit)
        .await?;
    Ok(Page {
        next_cursor: match (more, recs.last()) {
            (true, Some(l)) => Some(crate::domain::cursor::encode(&l.number)),
            _ => None,
        },
        has_more: more,
        data: recs.iter().map(InvoiceView::from).collect(),
    })
}

/// `GET /v1/invoices/{id}`: the document, with fresh links to its PDF and JSON (made now if
/// the write after the commit was lost).
pub async fn get(
    svc: &Services,
    account_id: &str,
    id: &str,
    series: Series,
) -> Result<InvoiceDetail, ServiceError> {
    let what = match series {
        Series::Invoice => "invoice",
        Series::ProForma => "pro-forma invoice",
        Series::Summary => "invoice summary",
    };
    if Number::parse(id).map(|n| n.series) != Ok(series) {
        return Err(ServiceError::not_found(what));
    }
    let doc = svc
        .invoices
        .get(account_id, id)
        .await?
        .ok_or_else(|| ServiceError::not_found(what))?;
    ensure_documents(svc, &doc).await?;
    Ok(InvoiceDetail {
        pdf: svc
            .blobs
            .presign_get(&blob_key(&doc, "pdf"), &format!("{}.pdf", doc.number))
            .await?
            .into(),
        json: svc
            .blobs
            .presign_get(&blob_key(&doc, "json"), &format!("{}.json", doc.number))
            .await?
            .into(),
        invoice: InvoiceView::from(&doc),
    })
}

/// `PUT /v1/billing-profile`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileRequest {
    pub company: String,
    #[serde(default)]
    pub tax_id: Option<String>,
    pub address: String,
    pub billing_email: String,
    #[serde(default)]
    pub monthly_invoicing: bool,
}

/// The profile future invoices are issued to; issued ones keep the profile they had.
pub async fn set_profile(
    svc: &Services,
    account_id: &str,
    req: ProfileRequest,
) -> Result<BillingProfile, ServiceError> {
    let profile = BillingProfile::parse(
        &req.company,
        req.tax_id.as_deref(),
        &req.address,
        &req.billing_email,
        req.monthly_invoicing,
    )
    .map_err(|e| ServiceError::reject(ErrorCode::InvalidBillingProfile, e.to_string()))?;
    let patch = crate::ports::store::TermsPatch {
        billing_profile: Some(profile.clone()),
        ..Default::default()
    };
    svc.accounts
        .change_terms(account_id, &patch)
        .await?
        .ok_or_else(|| ServiceError::not_found("account"))?;
    Ok(profile)
}

/// `GET /v1/billing-profile`: `null` until one is set.
pub async fn profile(
    svc: &Services,
    account_id: &str,
) -> Result<Option<BillingProfile>, ServiceError> {
    let account = super::accounts::get_account(svc, account_id).await?;
    Ok(account.billing_profile)
}

/// `POST /v1/proforma-invoices` (and the operator's twin): a pack, to be paid by wire.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProFormaRequest {
    pub request_id: String,
    pub pack: crate::domain::pricing::Pack,
}

/// How many times a document reads its series' counter again after losing the number.
const MAX_NUMBER_ATTEMPTS: u32 = 200;

/// What a numbered document that moves no money is issued under: its idempotency key.
struct Issue<'a> {
    account: &'a AccountRecord,
    scope: crate::domain::idempotency::Scope,
    request_id: &'a str,
    fingerprint: &'a str,
    series: Series,
}

/// Issues a document that moves no money (a pro-forma, a monthly summary): the counter's
/// move, the document and the request's idempotency record in one transaction, retried
/// when another document took the number. `Ok(None)`: the same request was issued before
/// (its reply is the stored one).
async fn issue_numbered(
    svc: &Services,
    i: Issue<'_>,
    build: impl Fn(Number, i64) -> InvoiceRecord,
) -> Result<(super::Reply, Option<InvoiceRecord>), ServiceError> {
    use crate::ports::store::{Change, CommitError, NewRecord};
    let owner = i.account.account_id.as_str();
    for attempt in 0..MAX_NUMBER_ATTEMPTS {
        if let Some((reply, _)) =
            super::idempotency::replay(svc, owner, i.scope, i.request_id, i.fingerprint).await?
        {
            return Ok((reply, None));
        }
        let now = svc.now_ms();
        let year = year_of(now);
        let seq = svc.invoices.last_number(i.series, year).await? + 1;
        let number = Number {
            series: i.series,
            year,
            seq,
        };
        let doc = build(number, now);
        let reply = super::Reply {
            status: 201,
            body: super::json(&InvoiceView::from(&doc))?,
            replayed: false,
        };
        let record = super::idempotency::record(
            owner,
            i.scope,
            i.request_id,
            i.fingerprint,
            &reply,
            &doc.number,
            now,
            i.account.retention_days,
        );
        let change = Change::NextNumber {
            series: i.series,
            year,
            seq,
        };
        let creates = vec![NewRecord::Invoice(doc.clone()), NewRecord::Request(record)];
        match svc.requests.change_and_create(change, creates).await {
            Ok(()) => {
                published(svc, &doc).await;
                return Ok((reply, Some(doc)));
            }
            // The number went to another document, or the same request landed first (the
            // replay at the top of the loop answers that).
            Err(CommitError::Stale) | Err(CommitError::Duplicate(_)) => {
                svc.backoff(attempt.min(6)).await;
            }
            Err(CommitError::Store(e)) => return Err(e.into()),
        }
    }
    Err(ServiceError::reject(
        ErrorCode::RequestInProgress,
        "documents are being issued faster than we can number them; retry",
    ))
}

/// A document's fields that come from who it is for and when, and its lines with their tax
/// (`(rate in basis points, tax in cents)`).
fn document(
    svc: &Services,
    account: &AccountRecord,
    (number, kind, now): (Number, DocumentKind, i64),
    lines: Vec<Line>,
    (tax_rate_bp, tax_usd_cents): (u32, i64),
) -> InvoiceRecord {
    let subtotal: i64 = lines.iter().map(|l| l.amount_usd_cents).sum();
    InvoiceRecord {
        account_id: account.account_id.clone(),
        number: number.to_string(),
        series: number.series,
        year: number.year,
        seq: number.seq,
        kind,
        issued_ms: now,
        issuer: svc.settings.issuer.clone(),
        account_name: account.name.clone(),
        customer: account.billing_profile.clone(),
        lines,
        subtotal_usd_cents: subtotal,
        tax_rate_bp,
        tax_usd_cents,
        total_usd_cents: subtotal + tax_usd_cents,
        payment: None,
        ledger_entry: None,
        subject: None,
        includes: vec![],
    }
}

/// A pro-forma invoice for a pack: a numbered request for a wire transfer quoting our bank
/// details and its own number as the payment reference. Moves no money; idempotent by
/// `request_id`.
pub async fn request_pro_forma(
    svc: &Services,
    account_id: &str,
    req: ProFormaRequest,
    fingerprint: &str,
) -> Result<super::Reply, ServiceError> {
    super::idempotency::check_request_id(&req.request_id)?;
    let account = super::accounts::get_account(svc, account_id).await?;
    let pack = req.pack;
    let rate = svc.settings.tax_rate_bp;
    let issue = Issue {
        account: &account,
        scope: crate::domain::idempotency::Scope::ProForma,
        request_id: &req.request_id,
        fingerprint,
        series: Series::ProForma,
    };
    let (reply, _) = issue_numbered(svc, issue, |number, now| {
        let line = Line::new(
            format!("Prepaid pack {} 预付套餐", pack.id()),
            Some(pack.id().to_string()),
            pack.credits().value(),
            pack.price_usd_cents(),
        );
        let tax = tax_cents(pack.price_usd_cents(), rate);
        let mut doc = document(
            svc,
            &account,
            (number, DocumentKind::ProForma, now),
            vec![line],
            (rate, tax),
        );
        doc.subject = Some(pack.id().to_string());
        doc
    })
    .await?;
    Ok(reply)
}

/// The month's invoice summary (contract 8.2 月结发票) for an account that asked for monthly
/// invoicing: one `MS-` document listing the month's invoices, once per account and month
/// (the month is its idempotency key). None when the account does not ask for one, had no
/// invoice that month, or has its summary already.
pub async fn monthly_summary(
    svc: &Services,
    account: &AccountRecord,
    month: &str,
    (start, end): (i64, i64),
) -> Result<Option<InvoiceRecord>, ServiceError> {
    if !account
        .billing_profile
        .as_ref()
        .is_some_and(|p| p.monthly_invoicing)
    {
        return Ok(None);
    }
    // The month's invoices, newest first until the month began.
    let mut month_docs = Vec::new();
    let mut before: Option<String> = None;
    'pages: loop {
        let (page, more) = svc
            .invoices
            .list(&account.account_id, Series::Invoice, before.as_deref(), 200)
            .await?;
        for d in &page {
            if d.issued_ms < start {
                break 'pages;
            }
            if d.issued_ms < end && d.kind == DocumentKind::Purchase {
                month_docs.push(d.clone());
            }
        }
        match (more, page.last()) {
            (true, Some(l)) => before = Some(l.number.clone()),
            _ => break,
        }
    }
    if month_docs.is_empty() {
        return Ok(None);
    }
    month_docs.reverse();
    let request_id = format!("summary-{month}");
    let fingerprint = crate::domain::idempotency::fingerprint(&serde_json::json!({"month": month}));
    let issue = Issue {
        account,
        scope: crate::domain::idempotency::Scope::MonthlySummary,
        request_id: &request_id,
        fingerprint: &fingerprint,
        series: Series::Summary,
    };
    let (_, doc) = issue_numbered(svc, issue, |number, now| {
        let lines = month_docs
            .iter()
            .flat_map(|d| {
                d.lines.iter().map(|l| {
                    Line::new(
                        format!("{} · {}", d.number, l.description),
                        l.pack.clone(),
                        l.credits,
                        l.amount_usd_cents,
                    )
                })
            })
            .collect();
        let tax = month_docs.iter().map(|d| d.tax_usd_cents).sum();
        let rate = month_docs.first().map_or(0, |d| d.tax_rate_bp);
        let mut doc = document(
            svc,
            account,
            (number, DocumentKind::MonthlySummary, now),
            lines,
            (rate, tax),
        );
        doc.subject = Some(month.to_string());
        doc.includes = month_docs.iter().map(|d| d.number.clone()).collect();
        doc
    })
    .await?;
    Ok(doc)
}

/// `POST /admin/v1/accounts/{id}/wire-receipts`: a wire transfer arrived quoting a
/// pro-forma's number.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireReceipt {
    /// The pro-forma's number, as the transfer quoted it (`PF-YYYY-NNNNNN`).
    pub reference: String,
    /// What arrived, in US cents: must be the pro-forma's total.
    pub amount_usd_cents: i64,
}

/// An operator records a wire transfer against its pro-forma: the amount is checked, and the
/// Credits and the invoice arrive in one transaction, once per pro-forma (recording it again
/// answers the first grant).
pub async fn record_wire(
    svc: &Services,
    account_id: &str,
    w: WireReceipt,
) -> Result<super::Reply, ServiceError> {
    let bad = |m: String| ServiceError::reject(ErrorCode::InvalidWireReceipt, m);
    let reference = w.reference.trim();
    if Number::parse(reference).map(|n| n.series) != Ok(Series::ProForma) {
        return Err(bad(format!(
            "reference {reference:?} is not a pro-forma number (PF-YYYY-NNNNNN)"
        )));
    }
    let pf = svc
        .invoices
        .get(account_id, reference)
        .await?
        .ok_or_else(|| bad(format!("no pro-forma {reference} for this account")))?;
    if w.amount_usd_cents != pf.total_usd_cents {
        return Err(bad(format!(
            "{reference} asks for {} cents; the transfer brought {}: record it once the \
             difference is settled, or issue a new pro-forma",
            pf.total_usd_cents, w.amount_usd_cents
        )));
    }
    let pack = pf
        .subject
        .as_deref()
        .and_then(|p| serde_json::from_value(serde_json::Value::String(p.into())).ok());
    let credits = pf.lines.iter().map(|l| l.credits).sum();
    super::credits::purchase(
        svc,
        account_id,
        reference,
        super::credits::Purchase {
            pack,
            credits: crate::domain::money::Credits(credits),
            subtotal_usd_cents: pf.subtotal_usd_cents,
            tax_rate_bp: pf.tax_rate_bp,
            paid_usd_cents: pf.total_usd_cents,
            method: "wire",
            reference: reference.to_string(),
            payment_intent: None,
        },
    )
    .await
}
