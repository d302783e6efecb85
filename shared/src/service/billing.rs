//! Card payments through Stripe (contract 8.2: a prepaid pack paid once, "Credits 即时到账").
//! Stripe's signed webhook events grant what a checkout session paid for, exactly once per
//! session however often Stripe retries or reorders its events: the grant's idempotency
//! record is keyed by the session id and created in the same transaction as the ledger
//! entry. The answer is 2xx only once the grant has committed, so an event that found us
//! down or crashed half way is simply delivered again by Stripe.
//!
//! What is bought comes from the session's `metadata`, which only our server writes when it
//! creates the session (`pack`, or `kind: top_up` for an amount), and what was paid from
//! `amount_total`; the signature proves Stripe sent both.

use super::{ErrorCode, ServiceError, Services};
use crate::domain::money::Credits;
use crate::domain::pricing::Pack;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Deserialize)]
struct StripeEvent {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    object: serde_json::Value,
}

/// The fields of a Checkout Session that say who paid what.
#[derive(Deserialize)]
struct CheckoutSession {
    id: String,
    client_reference_id: Option<String>,
    payment_status: Option<String>,
    amount_total: Option<i64>,
    currency: Option<String>,
    payment_intent: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

/// The fields of a Charge (`charge.refunded`) that say what was given back.
#[derive(Deserialize)]
struct Charge {
    id: String,
    payment_intent: Option<String>,
    /// Cumulative: every refund of the charge so far, in cents.
    #[serde(default)]
    amount_refunded: i64,
}

/// The fields of a Dispute (`charge.dispute.created`).
#[derive(Deserialize)]
struct Dispute {
    id: String,
    payment_intent: Option<String>,
    amount: i64,
}

/// How many times a reversal reads the payment again after a concurrent report of it moved.
const MAX_REVERSAL_ATTEMPTS: u32 = 20;

/// Takes back the Credits a refunded or disputed card payment granted, in proportion to the
/// amount reversed (`reversed_cents`, cumulative), once however often Stripe reports it: the
/// payment record's `reversed_credits` moves only from what was read, in the same transaction
/// as the negative adjustment. What the balance no longer holds (spent already) is not taken
/// below zero: the account is flagged for an operator with the shortfall, and an event says so.
async fn reverse(
    svc: &Services,
    payment_intent: &str,
    reversed_cents: i64,
    kind: &'static str,
    reference: &str,
) -> Result<&'static str, ServiceError> {
    use super::money::{self, Moved};
    use crate::domain::ledger::{next_entry, EntryKind};
    use crate::ports::store::{Change, MoneyMove};
    for attempt in 0..MAX_REVERSAL_ATTEMPTS {
        let Some(rec) = svc.invoices.payment(payment_intent).await? else {
            // Not a payment that granted Credits here (or from before this record existed).
            return Ok("ignored");
        };
        let share = reversed_cents.clamp(0, rec.paid_usd_cents);
        let target = i64::try_from(
            i128::from(rec.credits) * i128::from(share) / i128::from(rec.paid_usd_cents.max(1)),
        )
        .unwrap_or(rec.credits);
        let delta = target - rec.reversed_credits;
        if delta <= 0 {
            return Ok("already_reversed");
        }
        let change = Change::PaymentReversed {
            payment_intent: payment_intent.to_string(),
            from: rec.reversed_credits,
            to: target,
        };
        let account = svc
            .accounts
            .get(&rec.account_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("account"))?;
        let (taken, entry) = if account.balance.value() <= 0 {
            // Nothing left to take: the reversal is recorded, the operator is told.
            match svc.requests.change_and_create(change, vec![]).await {
                Ok(()) => (0, None),
                Err(crate::ports::store::CommitError::Stale) => {
                    svc.backoff(attempt).await;
                    continue;
                }
                Err(e) => return Err(ServiceError::Internal(e.to_string())),
            }
        } else {
            let reason = format!(
                "card payment {kind}: {reference} ({} of US${} paid; invoice {})",
                crate::domain::invoice::usd(share),
                crate::domain::invoice::usd(rec.paid_usd_cents),
                rec.invoice
            );
            let moved = money::commit(svc, &rec.account_id, None, |account, now| {
                let take = delta.min(account.balance.value().max(0));
                let amount = Credits(-take);
                let next = next_entry(account.book(), amount, now)
                    .map_err(|e| ServiceError::Internal(e.to_string()))?;
                let entry = crate::ports::records::LedgerRecord {
                    account_id: account.account_id.clone(),
                    seq: next.seq,
                    created_ms: next.created_ms,
                    kind: EntryKind::Adjustment,
                    amount,
                    balance_after: next.balance_after,
                    batch_id: None,
                    task_id: None,
                    request_id: None,
                    reason: Some(reason.clone()),
                    actor: Some(format!("stripe:{kind}")),
                    pack: None,
                    price_paid_usd_cents: None,
                    refers_to: Some(format!("card:{}", rec.session_id)),
                    invoice: Some(rec.invoice.clone()),
                };
                let mv = MoneyMove {
                    account_id: account.account_id.clone(),
                    expected: account.book(),
                    require_active: false,
                    entry: entry.clone(),
                    held_delta: Credits::ZERO,
                    granted_delta: Credits::ZERO,
                    charged_delta: Credits::ZERO,
                    refunded_delta: Credits::ZERO,
                    released_delta: Credits::ZERO,
                    creates: vec![],
                    changes: vec![change.clone()],
                };
                Ok((mv, (take, entry)))
            })
            .await?;
            match moved {
                Moved::Committed((take, entry)) => (take, Some(entry)),
                // Another report of the same reversal moved the payment first: read again.
                Moved::Duplicate(_) | Moved::Replayed(_) => {
                    svc.backoff(attempt).await;
                    continue;
                }
            }
        };
        let shortfall = delta - taken;
        if shortfall > 0 {
            let issue = crate::ports::billing::PaymentIssue {
                kind: kind.to_string(),
                reference: reference.to_string(),
                payment_intent: payment_intent.to_string(),
                shortfall_credits: shortfall,
                at_ms: svc.now_ms(),
            };
            let patch = crate::ports::store::TermsPatch {
                payment_issue: Some(issue),
                ..Default::default()
            };
            svc.accounts.change_terms(&rec.account_id, &patch).await?;
            tracing::warn!(account = %rec.account_id, payment_intent, shortfall, "a card {kind} could not be covered by the balance; account flagged");
        }
        let event = super::events::Event {
            id: format!("evt_{}_{reference}_reversed_{target}", rec.account_id),
            event_type: "payment.reversed".into(),
            created_at: crate::domain::time::rfc3339_ms(svc.now_ms()),
            account_id: rec.account_id.clone(),
            data: serde_json::json!({
                "kind": kind,
                "reference": reference,
                "payment_intent": payment_intent,
                "checkout_session": rec.session_id,
                "invoice_id": rec.invoice,
                "credits_reversed": taken,
                "shortfall_credits": shortfall,
                "entry": entry.as_ref().map(super::views::LedgerEntryView::from),
            }),
        };
        if let Err(e) = super::events::emit(svc, &[event]).await {
            tracing::warn!(error = %e, "payment.reversed event not sent");
        }
        return Ok(if shortfall > 0 {
            "reversed_partly"
        } else {
            "reversed"
        });
    }
    Err(ServiceError::reject(
        ErrorCode::RequestInProgress,
        "the payment is being reversed by another delivery; retry",
    ))
}

/// What became of an event.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct StripeAck {
    pub received: bool,
    pub event_id: String,
    /// `granted`, `already_granted`, `awaiting_payment` (an asynchronous method has not
    /// paid yet; its `async_payment_succeeded` event grants), `reversed` / `reversed_partly`
    /// (a refund or dispute took the Credits back, partly when some were spent),
    /// `already_reversed`, or `ignored` (a type we do not act on).
    pub outcome: &'static str,
}

fn bad_event(message: impl Into<String>) -> ServiceError {
    ServiceError::reject(ErrorCode::InvalidStripeEvent, message)
}

/// Verifies and handles one webhook delivery from Stripe.
pub async fn stripe_webhook(
    svc: &Services,
    signature: Option<&str>,
    body: &[u8],
) -> Result<StripeAck, ServiceError> {
    let Some(secret) = svc.settings.stripe_webhook_secret.as_deref() else {
        return Err(ServiceError::reject(
            ErrorCode::NotFound,
            "card payments are not enabled on this deployment",
        ));
    };
    // Before anything in the body is read.
    crate::domain::stripe::verify(signature, body, secret, svc.now_ms().div_euclid(1_000))
        .map_err(|e| ServiceError::reject(ErrorCode::InvalidSignature, e.to_string()))?;
    let event: StripeEvent =
        serde_json::from_slice(body).map_err(|e| bad_event(format!("not a Stripe event: {e}")))?;
    let ack = |outcome| StripeAck {
        received: true,
        event_id: event.id.clone(),
        outcome,
    };
    match event.event_type.as_str() {
        "charge.refunded" => {
            let c: Charge = serde_json::from_value(event.data.object.clone())
                .map_err(|e| bad_event(format!("not a charge: {e}")))?;
            let Some(pi) = c.payment_intent else {
                return Ok(ack("ignored"));
            };
            return Ok(ack(
                reverse(svc, &pi, c.amount_refunded, "refund", &c.id).await?
            ));
        }
        "charge.dispute.created" => {
            let d: Dispute = serde_json::from_value(event.data.object.clone())
                .map_err(|e| bad_event(format!("not a dispute: {e}")))?;
            let Some(pi) = d.payment_intent else {
                return Ok(ack("ignored"));
            };
            return Ok(ack(reverse(svc, &pi, d.amount, "dispute", &d.id).await?));
        }
        _ => {}
    }
    let completed = event.event_type == "checkout.session.completed";
    if !completed && event.event_type != "checkout.session.async_payment_succeeded" {
        return Ok(ack("ignored"));
    }
    let session: CheckoutSession = serde_json::from_value(event.data.object.clone())
        .map_err(|e| bad_event(format!("not a checkout session: {e}")))?;
    if completed && session.payment_status.as_deref() != Some("paid") {
        return Ok(ack("awaiting_payment"));
    }
    let account_id = session
        .client_reference_id
        .as_deref()
        .ok_or_else(|| bad_event("the session names no account (client_reference_id)"))?;
    if session.currency.as_deref().is_some_and(|c| c != "usd") {
        return Err(bad_event("only US$ sessions are ours"));
    }
    let paid = session
        .amount_total
        .filter(|a| *a > 0)
        .ok_or_else(|| bad_event("the session has no amount paid"))?;
    // The tax rate the session was created with (our metadata; absent: none).
    let tax_rate_bp: u32 = match session.metadata.get("tax_rate_bp") {
        Some(t) => t
            .parse()
            .ok()
            .filter(|bp| *bp <= 10_000)
            .ok_or_else(|| bad_event(format!("tax_rate_bp {t:?} is not a rate")))?,
        None => 0,
    };
    let (pack, subtotal) = match (
        session.metadata.get("pack").map(String::as_str),
        session.metadata.get("kind").map(String::as_str),
    ) {
        (Some(p), _) => {
            let pack: Pack = serde_json::from_value(serde_json::Value::String(p.to_string()))
                .map_err(|_| bad_event(format!("unknown pack {p:?}")))?;
            (Some(pack), pack.price_usd_cents())
        }
        // A top-up: one credit per US cent before tax.
        (None, Some("top_up")) => match session.metadata.get("amount_usd_cents") {
            Some(a) => (
                None,
                a.parse::<i64>()
                    .ok()
                    .filter(|a| *a > 0)
                    .ok_or_else(|| bad_event(format!("amount_usd_cents {a:?} is not an amount")))?,
            ),
            None if tax_rate_bp == 0 => (None, paid),
            None => return Err(bad_event("a taxed top-up must name its amount_usd_cents")),
        },
        _ => return Err(bad_event("the session's metadata names nothing we sell")),
    };
    let due = super::invoices::total_with_tax(subtotal, tax_rate_bp);
    if due != paid {
        return Err(bad_event(format!(
            "{} costs {due} cents with tax; the session paid {paid}",
            pack.map_or("the top-up", Pack::id)
        )));
    }
    let credits = pack.map_or(Credits(subtotal), Pack::credits);
    let reply = super::credits::purchase(
        svc,
        account_id,
        &session.id,
        super::credits::Purchase {
            pack,
            credits,
            subtotal_usd_cents: subtotal,
            tax_rate_bp,
            paid_usd_cents: paid,
            method: "card",
            reference: session.id.clone(),
            payment_intent: session.payment_intent.clone(),
        },
    )
    .await
    .map_err(|e| {
        tracing::error!(session = %session.id, account_id, error = %e, "a paid checkout could not be granted");
        e
    })?;
    Ok(ack(if reply.replayed {
        "already_granted"
    } else {
        "granted"
    }))
}

/// The smallest and largest pay-as-you-go top-up by card, whole US$.
pub const MIN_TOP_UP_USD: i64 = 50;
pub const MAX_TOP_UP_USD: i64 = 100_000;

/// `POST /v1/checkout`: a pack, or a top-up of `amount_usd` whole dollars (1 credit per cent).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    pub request_id: String,
    #[serde(default)]
    pub pack: Option<Pack>,
    #[serde(default)]
    pub amount_usd: Option<i64>,
}

#[derive(Debug, Serialize)]
struct CheckoutView {
    /// The Checkout Session (`cs_...`); the statement and invoice name it as the payment.
    id: String,
    /// Where the customer pays; Credits arrive when the processor reports the payment.
    url: String,
    expires_at: Option<String>,
    pack: Option<Pack>,
    credits: Credits,
    subtotal_usd: String,
    tax_rate_percent: String,
    tax_usd: String,
    total_usd: String,
}

fn bad_checkout(message: impl Into<String>) -> ServiceError {
    ServiceError::reject(ErrorCode::InvalidCheckout, message)
}

/// Opens a card checkout page at Stripe for what our price table says the pack or top-up
/// costs (never a price from the client). Idempotent by `request_id`: a retry answers the
/// same page, and Stripe's `Idempotency-Key` (derived from it) keeps a retry that raced
/// the first from opening a second one.
pub async fn checkout(
    svc: &Services,
    account: &crate::ports::records::AccountRecord,
    req: CheckoutRequest,
    fingerprint: &str,
) -> Result<super::Reply, ServiceError> {
    use crate::domain::account::AccountStatus;
    use crate::domain::invoice::{tax_cents, usd};
    if account.status != AccountStatus::Active {
        return Err(ServiceError::reject(
            ErrorCode::AccountTerminated,
            "this account is terminated; it cannot buy credits",
        ));
    }
    let (pack, subtotal, credits, name) = match (req.pack, req.amount_usd) {
        (Some(p), None) => (
            Some(p),
            p.price_usd_cents(),
            p.credits(),
            format!("Prepaid pack {} ({} credits)", p.id(), p.credits().value()),
        ),
        (None, Some(a)) if (MIN_TOP_UP_USD..=MAX_TOP_UP_USD).contains(&a) => (
            None,
            a * 100,
            Credits(a * 100),
            format!("Credits top-up ({} credits)", a * 100),
        ),
        (None, Some(_)) => {
            return Err(bad_checkout(format!(
                "amount_usd must be a whole number of US$ from {MIN_TOP_UP_USD} to {MAX_TOP_UP_USD}"
            )))
        }
        _ => return Err(bad_checkout("give exactly one of pack or amount_usd")),
    };
    let rate = svc.settings.tax_rate_bp;
    let tax = tax_cents(subtotal, rate);
    let mut metadata = BTreeMap::from([
        ("tax_rate_bp".to_string(), rate.to_string()),
        ("request_id".to_string(), req.request_id.clone()),
    ]);
    match pack {
        Some(p) => metadata.insert("pack".into(), p.id().into()),
        None => {
            metadata.insert("kind".into(), "top_up".into());
            metadata.insert("amount_usd_cents".into(), subtotal.to_string())
        }
    };
    let mut lines = vec![(name, subtotal)];
    if tax > 0 {
        lines.push((format!("Tax {}.{:02} %", rate / 100, rate % 100), tax));
    }
    let back = &svc.settings.checkout_return_url;
    let sep = if back.contains('?') { '&' } else { '?' };
    let session_req = crate::ports::billing::SessionRequest {
        idempotency_key: format!("checkout:{}:{}", account.account_id, req.request_id),
        account_id: account.account_id.clone(),
        customer_email: account
            .billing_profile
            .as_ref()
            .map(|p| p.billing_email.clone()),
        lines,
        metadata,
        success_url: format!("{back}{sep}checkout=paid&session_id={{CHECKOUT_SESSION_ID}}"),
        cancel_url: format!("{back}{sep}checkout=cancelled"),
    };
    let owner = account.account_id.clone();
    super::idempotency::create_once(
        svc,
        &owner,
        account.retention_days,
        crate::domain::idempotency::Scope::Checkout,
        &req.request_id,
        fingerprint,
        |_now| {
            let session_req = session_req.clone();
            async move {
                let s = svc
                    .checkout
                    .create_session(&session_req)
                    .await
                    .map_err(gateway_error)?;
                let view = CheckoutView {
                    id: s.id.clone(),
                    url: s.url,
                    expires_at: s
                        .expires_at
                        .map(|t| crate::domain::time::rfc3339_ms(t.saturating_mul(1_000))),
                    pack,
                    credits,
                    subtotal_usd: usd(subtotal).replace(',', ""),
                    tax_rate_percent: format!("{}.{:02}", rate / 100, rate % 100),
                    tax_usd: usd(tax).replace(',', ""),
                    total_usd: usd(subtotal + tax).replace(',', ""),
                };
                Ok(super::idempotency::Creation {
                    creates: vec![],
                    reply: super::Reply {
                        status: 201,
                        body: super::json(&view)?,
                        replayed: false,
                    },
                    replayed: None,
                    resource_id: s.id,
                })
            }
        },
    )
    .await
}

fn gateway_error(e: crate::ports::billing::GatewayError) -> ServiceError {
    use crate::ports::billing::GatewayError;
    match e {
        GatewayError::NotConfigured => ServiceError::reject(
            ErrorCode::NotFound,
            "card payments are not enabled on this deployment",
        ),
        GatewayError::Refused { .. } => {
            tracing::error!(error = %e, "Stripe refused a checkout session");
            ServiceError::reject(
                ErrorCode::PaymentProviderError,
                "the card processor refused to open a checkout page; nothing was charged",
            )
        }
        GatewayError::Unavailable(_) => {
            tracing::warn!(error = %e, "Stripe unavailable for a checkout session");
            ServiceError::reject(
                ErrorCode::PaymentProviderError,
                "the card processor is unavailable; retry with the same request_id",
            )
        }
    }
}
