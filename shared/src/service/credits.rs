//! Credits: grants (packs and operator grants), the balance, and the ledger listing.

use super::accounts::{get_account, OPERATOR};
use super::idempotency::{check_request_id, record, replay};
use super::json;
use super::money::{self, Idempotent, Moved};
use super::views::{CreditsView, LedgerEntryView};
use super::{ErrorCode, Page, Reply, ServiceError, Services};
use crate::domain::cursor;
use crate::domain::idempotency::Scope;
use crate::domain::invoice::{Number, Series};
use crate::domain::ledger::{next_entry, EntryKind};
use crate::domain::money::Credits;
use crate::domain::pricing::Pack;
use crate::domain::time::parse_rfc3339_ms;
use crate::ports::records::{AccountRecord, LedgerRecord};
use crate::ports::store::{Change, LedgerPos, LedgerQuery, MoneyMove, NewRecord};
use crate::ports::TimeRange;
use serde::{Deserialize, Serialize};

/// The largest explicit grant in one request: US$1,000,000.
pub const MAX_GRANT: i64 = 100_000_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    pub request_id: String,
    #[serde(default)]
    pub pack: Option<Pack>,
    #[serde(default)]
    pub amount: Option<i64>,
    pub reason: String,
}

#[derive(Serialize)]
struct GrantReply<'a> {
    entry: LedgerEntryView,
    credits: &'a CreditsView,
}

fn bounded(field: &str, v: &str, max: usize) -> Result<(), ServiceError> {
    let n = v.trim().chars().count();
    if n == 0 || v.chars().count() > max {
        return Err(ServiceError::reject(
            ErrorCode::InvalidGrant,
            format!("{field} must be 1 to {max} characters"),
        ));
    }
    Ok(())
}

/// Credits an account (a prepaid pack, or an explicit amount), as one ledger entry whose
/// `actor` is the operator who asked (authenticated, never a field of the request).
pub async fn grant(
    svc: &Services,
    account_id: &str,
    req: GrantRequest,
    fingerprint: &str,
    actor: &str,
) -> Result<Reply, ServiceError> {
    check_request_id(&req.request_id)?;
    bounded("reason", &req.reason, 500)?;
    let (amount, pack) = match (req.pack, req.amount) {
        (Some(p), None) => (p.credits(), Some(p)),
        (None, Some(a)) if (1..=MAX_GRANT).contains(&a) => (Credits(a), None),
        (None, Some(_)) => {
            return Err(ServiceError::reject(
                ErrorCode::InvalidGrant,
                format!("amount must be between 1 and {MAX_GRANT} credits"),
            ))
        }
        _ => {
            return Err(ServiceError::reject(
                ErrorCode::InvalidGrant,
                "give exactly one of pack or amount",
            ))
        }
    };
    post(
        svc,
        account_id,
        Scope::Grant,
        &req.request_id,
        fingerprint,
        Posting {
            kind: EntryKind::Grant,
            amount,
            reason: req.reason.trim().to_string(),
            actor: actor.to_string(),
            pack,
            refers_to: None,
            paid_usd_cents: None,
            invoice: None,
        },
    )
    .await
    .map_err(Posted::into_error)
}

/// What a payment bought (card checkout, wire transfer).
pub struct Purchase {
    pub pack: Option<Pack>,
    pub credits: Credits,
    /// Before tax: the pack's price, or the top-up's amount.
    pub subtotal_usd_cents: i64,
    /// The tax rate the customer was charged at (basis points).
    pub tax_rate_bp: u32,
    /// What was paid: subtotal and tax.
    pub paid_usd_cents: i64,
    /// `card` or `wire`.
    pub method: &'static str,
    /// The payment's own id: the checkout session, the wire's reference.
    pub reference: String,
    /// A card payment's PaymentIntent (`pi_...`): how its refunds and disputes find it.
    pub payment_intent: Option<String>,
}

/// How many times a purchase reads the invoice counter again after another invoice took
/// the number it planned with (every such loss means someone else's invoice committed).
const MAX_NUMBER_ATTEMPTS: u32 = 200;

/// Credits bought: a grant entry that names how it was paid, and the invoice for it with the
/// next number, in one transaction; once per payment (`payment_id` is its idempotency key,
/// so the same payment reported again replays the first grant).
pub async fn purchase(
    svc: &Services,
    account_id: &str,
    payment_id: &str,
    p: Purchase,
) -> Result<Reply, ServiceError> {
    check_request_id(payment_id)?;
    let fp = crate::domain::idempotency::fingerprint(&serde_json::json!({
        "credits": p.credits, "paid": p.paid_usd_cents, "method": p.method,
    }));
    for attempt in 0..MAX_NUMBER_ATTEMPTS {
        let year = super::invoices::year_of(svc.now_ms());
        let last = svc.invoices.last_number(Series::Invoice, year).await?;
        svc.faults.check("purchase.after_number_read")?;
        let number = Number {
            series: Series::Invoice,
            year,
            seq: last + 1,
        };
        let posting = Posting {
            kind: EntryKind::Grant,
            amount: p.credits,
            reason: format!("paid by {}: {}", p.method, p.reference),
            actor: p.method.to_string(),
            pack: p.pack,
            refers_to: Some(format!("{}:{}", p.method, p.reference)),
            paid_usd_cents: Some(p.paid_usd_cents),
            invoice: Some((number, &p)),
        };
        match post(svc, account_id, Scope::Purchase, payment_id, &fp, posting).await {
            Err(Posted::NumberTaken) => svc.backoff(attempt.min(6)).await,
            Err(Posted::Failed(e)) => return Err(e),
            Ok(reply) if reply.replayed => {
                // Stripe (or an operator) reports a payment again, perhaps because our answer
                // was lost in a crash right after the commit: make sure the invoice's files
                // and event exist (both idempotent: same keys, same event id).
                super::invoices::republish(svc, account_id, &reply).await;
                return Ok(reply);
            }
            Ok(reply) => return Ok(reply),
        }
    }
    Err(ServiceError::reject(
        ErrorCode::RequestInProgress,
        "invoices are being issued faster than we can number them; retry",
    ))
}

/// What an operator writes into an account's ledger.
struct Posting<'a> {
    kind: EntryKind,
    amount: Credits,
    reason: String,
    actor: String,
    pack: Option<Pack>,
    refers_to: Option<String>,
    /// What the customer paid, when it was not a pack's list price (a top-up).
    paid_usd_cents: Option<i64>,
    /// A purchase: its invoice, with the number the plan takes.
    invoice: Option<(Number, &'a Purchase)>,
}

/// Why a posting did not land.
enum Posted {
    /// Another invoice took the planned number first: read the counter again.
    NumberTaken,
    Failed(ServiceError),
}

impl Posted {
    /// For postings without an invoice, which cannot lose a number.
    fn into_error(self) -> ServiceError {
        match self {
            Posted::Failed(e) => e,
            Posted::NumberTaken => {
                ServiceError::Internal("an invoice number without an invoice".into())
            }
        }
    }
}

impl<E: Into<ServiceError>> From<E> for Posted {
    fn from(e: E) -> Self {
        Posted::Failed(e.into())
    }
}

/// An operator's ledger entry (grant, adjustment, compensation): one entry, idempotent by
/// request_id, through the money loop.
async fn post(
    svc: &Services,
    account_id: &str,
    scope: Scope,
    request_id: &str,
    fingerprint: &str,
    p: Posting<'_>,
) -> Result<Reply, Posted> {
    // Scoped per account so that two accounts may use the same request_id.
    let owner = format!("{OPERATOR}#{account_id}");
    get_account(svc, account_id).await?;
    if let Some((reply, _)) = replay(svc, &owner, scope, request_id, fingerprint).await? {
        return Ok(reply);
    }
    let code = if p.kind == EntryKind::Grant {
        ErrorCode::InvalidGrant
    } else {
        ErrorCode::InvalidAdjustment
    };
    let idem = Idempotent {
        owner: &owner,
        scope,
        request_id,
        fingerprint,
    };
    let number_at = match &p.invoice {
        Some((_, purchase)) if purchase.payment_intent.is_some() => 3,
        _ => 2,
    };
    let moved = money::commit(svc, account_id, Some(idem), |account, now| {
        let next = next_entry(account.book(), p.amount, now)
            .map_err(|e| ServiceError::reject(code, e.to_string()))?;
        let entry = LedgerRecord {
            account_id: account.account_id.clone(),
            seq: next.seq,
            created_ms: next.created_ms,
            kind: p.kind,
            amount: p.amount,
            balance_after: next.balance_after,
            batch_id: None,
            task_id: None,
            request_id: Some(request_id.to_string()),
            reason: Some(p.reason.clone()),
            actor: Some(p.actor.clone()),
            pack: p.pack.map(|k| k.id().to_string()),
            price_paid_usd_cents: p.paid_usd_cents.or(p.pack.map(Pack::price_usd_cents)),
            refers_to: p.refers_to.clone(),
            invoice: p.invoice.as_ref().map(|(n, _)| n.to_string()),
        };
        let granted = if p.kind == EntryKind::Grant {
            p.amount
        } else {
            Credits::ZERO
        };
        let mut after = account.clone();
        after.balance = next.balance_after;
        after.lifetime_granted += granted;
        after.ledger_seq = next.seq;
        let body = json(&GrantReply {
            entry: LedgerEntryView::from(&entry),
            credits: &CreditsView::from(&after),
        })?;
        let reply = Reply {
            status: 201,
            body,
            replayed: false,
        };
        let req_rec = record(
            &owner,
            scope,
            request_id,
            fingerprint,
            &reply,
            &crate::domain::ledger::entry_id(next.seq),
            now,
            account.retention_days,
        );
        let mut creates = vec![NewRecord::Request(req_rec)];
        let mut changes = vec![];
        let mut doc = None;
        if let Some((number, purchase)) = &p.invoice {
            let rec =
                super::invoices::purchase_invoice(svc, account, *number, now, purchase, &entry);
            changes.push(Change::NextNumber {
                series: number.series,
                year: number.year,
                seq: number.seq,
            });
            creates.push(NewRecord::Invoice(rec.clone()));
            if let Some(pi) = &purchase.payment_intent {
                creates.push(NewRecord::Payment(crate::ports::billing::PaymentRecord {
                    payment_intent: pi.clone(),
                    account_id: account.account_id.clone(),
                    session_id: purchase.reference.clone(),
                    credits: purchase.credits.value(),
                    paid_usd_cents: purchase.paid_usd_cents,
                    invoice: rec.number.clone(),
                    reversed_credits: 0,
                }));
            }
            doc = Some(rec);
        }
        let mv = MoneyMove {
            account_id: account.account_id.clone(),
            expected: account.book(),
            require_active: false,
            entry: entry.clone(),
            held_delta: Credits::ZERO,
            granted_delta: granted,
            charged_delta: Credits::ZERO,
            refunded_delta: Credits::ZERO,
            released_delta: Credits::ZERO,
            creates,
            changes,
        };
        Ok((mv, (reply, entry, doc)))
    })
    .await?;
    match moved {
        Moved::Committed((reply, posted, doc)) => {
            if let Some(doc) = doc {
                // The invoice stands in the table; its documents and event follow (a replay
                // or a read makes them again if this is lost).
                svc.faults.check("purchase.after_commit")?;
                super::invoices::published(svc, &doc).await;
            }
            if p.kind == EntryKind::Grant {
                // Notification only: the grant stands whether or not this goes out.
                if let Err(e) =
                    super::events::emit(svc, &[super::events::credits_granted(&posted)]).await
                {
                    tracing::warn!(error = %e, "credits.granted event not sent");
                }
            }
            Ok(reply)
        }
        Moved::Replayed(reply) => Ok(reply),
        // creates: [request, invoice, payment?], changes: [counter]: the number was taken.
        Moved::Duplicate(i) if p.invoice.is_some() && (i == 1 || i == number_at) => {
            Err(Posted::NumberTaken)
        }
        Moved::Duplicate(_) => Err(Posted::Failed(ServiceError::reject(
            ErrorCode::RequestInProgress,
            "a request with this request_id is being processed; retry shortly",
        ))),
    }
}

/// How long after an entry a customer may dispute it (contract 7.1); adjustments that refer
/// to an older entry are refused.
pub const DISPUTE_WINDOW_DAYS: i64 = 30;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdjustRequest {
    pub request_id: String,
    /// Credits, positive (in the customer's favour) or negative; never zero.
    pub amount: i64,
    pub reason: String,
    /// `adjustment` (default) or `compensation` (SLA credits).
    #[serde(default)]
    pub kind: Option<String>,
    /// The disputed ledger entry (`le_...`), if this settles a dispute.
    #[serde(default)]
    pub refers_to: Option<String>,
}

/// Operators: a correction is a new ledger entry, never an edit of an old one.
pub async fn adjust(
    svc: &Services,
    account_id: &str,
    req: AdjustRequest,
    fingerprint: &str,
    actor: &str,
) -> Result<Reply, ServiceError> {
    check_request_id(&req.request_id)?;
    let bad = |m: String| ServiceError::reject(ErrorCode::InvalidAdjustment, m);
    bounded("reason", &req.reason, 500)
        .map_err(|_| bad("reason must be 1 to 500 characters".into()))?;
    if req.amount == 0 || req.amount.abs() > MAX_GRANT {
        return Err(bad(format!(
            "amount must be non-zero and at most {MAX_GRANT} credits either way"
        )));
    }
    let kind = match req.kind.as_deref() {
        None | Some("adjustment") => EntryKind::Adjustment,
        Some("compensation") if req.amount > 0 => EntryKind::Compensation,
        Some("compensation") => return Err(bad("compensation credits are positive".into())),
        Some(other) => {
            return Err(bad(format!(
                "kind must be adjustment or compensation, not {other:?}"
            )))
        }
    };
    if let Some(r) = &req.refers_to {
        let seq = crate::domain::ledger::parse_entry_id(r)
            .ok_or_else(|| bad(format!("refers_to {r:?} is not a ledger entry id")))?;
        let disputed = svc.ledger.get(account_id, seq).await?.ok_or_else(|| {
            bad(format!(
                "refers_to {r}: no such entry in this account's ledger"
            ))
        })?;
        if svc.now_ms() - disputed.created_ms > DISPUTE_WINDOW_DAYS * 86_400_000 {
            return Err(bad(format!(
                "{r} is older than the {DISPUTE_WINDOW_DAYS}-day dispute window"
            )));
        }
    }
    post(
        svc,
        account_id,
        Scope::Adjustment,
        &req.request_id,
        fingerprint,
        Posting {
            kind,
            amount: Credits(req.amount),
            reason: req.reason.trim().to_string(),
            actor: actor.to_string(),
            pack: None,
            refers_to: req.refers_to.clone(),
            paid_usd_cents: None,
            invoice: None,
        },
    )
    .await
    .map_err(Posted::into_error)
}

pub fn summary(account: &AccountRecord) -> CreditsView {
    CreditsView::from(account)
}

/// Query parameters of `GET /v1/credits/ledger`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerParams {
    pub limit: Option<String>,
    pub cursor: Option<String>,
    pub kind: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerCursor {
    s: u64,
    t: i64,
}

fn parse_time(name: &str, v: Option<&str>) -> Result<Option<i64>, ServiceError> {
    v.map(|s| {
        parse_rfc3339_ms(s).ok_or_else(|| {
            ServiceError::reject(
                ErrorCode::InvalidParameter,
                format!("{name} must be an RFC 3339 timestamp, e.g. 2026-11-01T00:00:00Z"),
            )
        })
    })
    .transpose()
}

/// Newest first. `from` is inclusive, `to` exclusive.
pub async fn ledger(
    svc: &Services,
    account_id: &str,
    p: &LedgerParams,
) -> Result<Page<LedgerEntryView>, ServiceError> {
    // Where the SLA tests break a read the way a failing dependency would (a 500).
    svc.faults.check("ledger.read")?;
    let limit = super::parse_limit(p.limit.as_deref())?;
    let kind = p
        .kind
        .as_deref()
        .map(|k| {
            EntryKind::parse(k).ok_or_else(|| {
                ServiceError::reject(
                    ErrorCode::InvalidParameter,
                    "kind must be one of grant, pre_deduct, refund, adjustment, compensation",
                )
            })
        })
        .transpose()?;
    let from_ms = parse_time("from", p.from.as_deref())?;
    let to_ms = parse_time("to", p.to.as_deref())?.map(|t| t - 1);
    let range = TimeRange {
        from_ms: from_ms.unwrap_or(0),
        to_ms: to_ms.unwrap_or(i64::MAX),
    };
    let after = p
        .cursor
        .as_deref()
        .map(|c| {
            cursor::decode::<LedgerCursor>(c)
                .map(|c| LedgerPos {
                    seq: c.s,
                    created_ms: c.t,
                })
                .ok_or_else(|| {
                    ServiceError::reject(
                        ErrorCode::InvalidCursor,
                        "cursor is not one this API issued",
                    )
                })
        })
        .transpose()?;
    let q = LedgerQuery {
        account_id: account_id.to_string(),
        range,
        kind,
        limit,
        after,
    };
    let (entries, has_more) = svc.ledger.list(&q).await?;
    let next_cursor = match (has_more, entries.last()) {
        (true, Some(e)) => Some(cursor::encode(&LedgerCursor {
            s: e.seq,
            t: e.created_ms,
        })),
        _ => None,
    };
    Ok(Page {
        data: entries.iter().map(LedgerEntryView::from).collect(),
        has_more: next_cursor.is_some(),
        next_cursor,
    })
}
