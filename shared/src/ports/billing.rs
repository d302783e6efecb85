//! Invoices and pro-forma invoices: numbered documents, immutable once issued.
//!
//! A document is created with `NewRecord::Invoice` beside `Change::NextNumber` in one
//! transaction: inside a purchase's money movement (`Money::commit`), or alone
//! (`Requests::change_and_create`) for documents that move no money. The counter's condition
//! makes numbers gap-free: a number is taken only by the transaction that writes its record.

use super::common::{Listed, PortResult};
use crate::domain::invoice::{BillingProfile, Line, Series};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Who issues: our company as it appears on every document (settings, not code).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issuer {
    pub name: String,
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_id: Option<String>,
    /// Where wire transfers go (on pro-forma invoices).
    pub bank: BankDetails,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankDetails {
    pub beneficiary: String,
    pub bank_name: String,
    pub account_number: String,
    pub swift: String,
}

/// How a document was (or is to be) paid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// `card`, `wire`.
    pub method: String,
    /// The checkout session, or the pro-forma number a wire quoted.
    pub reference: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    /// An invoice for a paid purchase.
    Purchase,
    /// The month's summary of an account's invoices (contract 8.2 月结发票).
    MonthlySummary,
    /// A request to pay a pack by wire, quoting its number as the reference.
    ProForma,
}

/// An issued document, never changed after it is written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceRecord {
    pub account_id: String,
    /// `INV-2026-000123`.
    pub number: String,
    pub series: Series,
    pub year: i32,
    pub seq: u64,
    pub kind: DocumentKind,
    pub issued_ms: i64,
    pub issuer: Issuer,
    /// The account's name when it had no billing profile.
    pub account_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<BillingProfile>,
    pub lines: Vec<Line>,
    pub subtotal_usd_cents: i64,
    /// Basis points (1 % = 100).
    pub tax_rate_bp: u32,
    pub tax_usd_cents: i64,
    pub total_usd_cents: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<Payment>,
    /// The ledger entry that granted what was paid (`le_...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_entry: Option<String>,
    /// A summary's month (`YYYY-MM`), or what a pro-forma sells (`pack_5000`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The invoices a monthly summary gathers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub includes: Vec<String>,
}

/// A card payment that granted Credits, found again by its PaymentIntent when Stripe reports
/// a refund or a dispute of it. `reversed_credits` is what refunds and disputes took back so
/// far; it only moves by `Change::PaymentReversed` in the transaction that takes them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    /// `pi_...`.
    pub payment_intent: String,
    pub account_id: String,
    /// The checkout session (`cs_...`).
    pub session_id: String,
    pub credits: i64,
    pub paid_usd_cents: i64,
    pub invoice: String,
    pub reversed_credits: i64,
}

/// Why the account needs an operator: a refund or dispute took back more than its balance
/// held (the rest was already spent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentIssue {
    /// `refund` or `dispute`.
    pub kind: String,
    /// The charge (`ch_...`) or dispute (`dp_...`) Stripe reported.
    pub reference: String,
    pub payment_intent: String,
    /// Credits that could not be taken back.
    pub shortfall_credits: i64,
    pub at_ms: i64,
}

#[async_trait]
pub trait Invoices: Send + Sync {
    /// The card payment with this PaymentIntent, if it granted Credits here.
    async fn payment(&self, payment_intent: &str) -> PortResult<Option<PaymentRecord>>;
    /// The last number taken in a series and year (0: none yet). Strongly consistent.
    async fn last_number(&self, series: Series, year: i32) -> PortResult<u64>;
    async fn get(&self, account_id: &str, number: &str) -> PortResult<Option<InvoiceRecord>>;
    /// An account's documents of one series, newest first, before `before` (a number), at
    /// most `limit`; and whether more follow.
    async fn list(
        &self,
        account_id: &str,
        series: Series,
        before: Option<&str>,
        limit: usize,
    ) -> PortResult<Listed<InvoiceRecord>>;
}

#[derive(Debug, thiserror::Error)]
pub enum TypesetError {
    #[error("the invoice font {path} cannot be read: {source}")]
    Font {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the invoice font {0} is not a font this renderer can use")]
    BadFont(String),
    #[error("the PDF could not be written: {0}")]
    Pdf(String),
}

/// Lays a document out as PDF. Pure computation over the record (and a font): the same
/// record always gives the same document.
pub trait Typesetter: Send + Sync {
    fn invoice_pdf(&self, doc: &InvoiceRecord) -> Result<Vec<u8>, TypesetError>;
}

/// A hosted checkout page at the card processor (Stripe Checkout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRequest {
    /// Sent as `Idempotency-Key`: the same request creates the same session, however often
    /// it is retried.
    pub idempotency_key: String,
    /// Our account; comes back in the paid event as `client_reference_id`.
    pub account_id: String,
    pub customer_email: Option<String>,
    /// (name, amount in US cents), one line each; the total is their sum.
    pub lines: Vec<(String, i64)>,
    /// What is bought, in our words; comes back signed in the paid event.
    pub metadata: std::collections::BTreeMap<String, String>,
    pub success_url: String,
    pub cancel_url: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckoutSession {
    pub id: String,
    /// Where the customer pays.
    pub url: String,
    pub amount_total: i64,
    /// Epoch seconds after which the page no longer takes a payment.
    pub expires_at: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("card payments are not configured on this deployment")]
    NotConfigured,
    /// The processor refused the request (a 4xx with its error object).
    #[error("the card processor refused the request ({status} {kind}): {message}")]
    Refused {
        status: u16,
        kind: String,
        message: String,
    },
    /// It could not be reached, or failed on its side: the same request may be retried.
    #[error("the card processor is unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Checkout: Send + Sync {
    async fn create_session(&self, req: &SessionRequest) -> Result<CheckoutSession, GatewayError>;
}
