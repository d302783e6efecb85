//! Invoices (contract 8.2, 1.4): what a numbered invoice says, and the rules of its number.
//!
//! A number is `INV-<year>-<nnnnnn>`: gap-free per issuer and year, allocated by a
//! conditional counter in the same transaction that writes the invoice (see
//! `service::invoices`), so neither concurrency nor a crash skips or repeats one. Pro-forma
//! invoices for wire transfers have their own series (`PF-`), since they are requests for
//! payment, not invoices. An invoice is immutable once issued: its documents (PDF, JSON) are
//! a pure function of the record.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Which numbering series a document belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Series {
    /// An invoice for something paid (`INV-`).
    Invoice,
    /// A request for a wire transfer (`PF-`).
    ProForma,
    /// A month's summary of an account's invoices (`MS-`; contract 8.2 月结发票).
    Summary,
}

impl Series {
    pub fn prefix(self) -> &'static str {
        match self {
            Series::Invoice => "INV",
            Series::ProForma => "PF",
            Series::Summary => "MS",
        }
    }
}

/// `INV-2026-000123`: series, calendar year (UTC) of issue, and the place in that year.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Number {
    pub series: Series,
    pub year: i32,
    pub seq: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a document number (INV-, PF- or MS-YYYY-NNNNNN)")]
pub struct BadNumber(pub String);

impl Number {
    pub fn parse(s: &str) -> Result<Self, BadNumber> {
        let bad = || BadNumber(s.chars().take(40).collect());
        let mut parts = s.split('-');
        let series = match parts.next() {
            Some("INV") => Series::Invoice,
            Some("PF") => Series::ProForma,
            Some("MS") => Series::Summary,
            _ => return Err(bad()),
        };
        let (Some(y), Some(n), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        if y.len() != 4 || n.len() < 6 || !(y.bytes().chain(n.bytes())).all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let year = y.parse().map_err(|_| bad())?;
        let seq = n.parse().map_err(|_| bad())?;
        if seq == 0 {
            return Err(bad());
        }
        Ok(Number { series, year, seq })
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{:06}", self.series.prefix(), self.year, self.seq)
    }
}

/// Who is invoiced: the account's billing profile, copied into each invoice when it is issued
/// (a later edit of the profile never changes an issued invoice).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingProfile {
    /// Legal name of the company; any script (Chinese names render in the PDF).
    pub company: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_id: Option<String>,
    /// Postal address, lines separated by `\n`.
    pub address: String,
    /// Where finance wants invoices sent.
    pub billing_email: String,
    /// The account asks for a monthly invoice summary (contract 8.2 月结发票).
    #[serde(default)]
    pub monthly_invoicing: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct BadProfile(pub String);

impl BillingProfile {
    /// Parses what a customer sent: trimmed, bounded, no control characters but the
    /// address's line breaks, an email that has the shape of one.
    pub fn parse(
        company: &str,
        tax_id: Option<&str>,
        address: &str,
        billing_email: &str,
        monthly_invoicing: bool,
    ) -> Result<Self, BadProfile> {
        fn field(name: &str, v: &str, max: usize, lines: bool) -> Result<String, BadProfile> {
            let v = v.trim();
            if v.is_empty() || v.chars().count() > max {
                return Err(BadProfile(format!("{name} must be 1 to {max} characters")));
            }
            if v.chars().any(|c| c.is_control() && !(lines && c == '\n')) {
                return Err(BadProfile(format!(
                    "{name} may not hold control characters"
                )));
            }
            Ok(v.to_string())
        }
        let company = field("company", company, 200, false)?;
        let tax_id = match tax_id.map(str::trim).filter(|t| !t.is_empty()) {
            Some(t) => Some(field("tax_id", t, 64, false)?),
            None => None,
        };
        let address = field("address", &address.replace("\r\n", "\n"), 500, true)?;
        if address.lines().count() > 8 {
            return Err(BadProfile("address may have at most 8 lines".into()));
        }
        let billing_email = field("billing_email", billing_email, 254, false)?;
        let shaped = billing_email.split_once('@').is_some_and(|(user, host)| {
            !user.is_empty()
                && host.contains('.')
                && !host.starts_with('.')
                && !host.ends_with('.')
                && !billing_email.contains(char::is_whitespace)
                && !host.contains('@')
        });
        if !shaped {
            return Err(BadProfile(
                "billing_email must be an address like finance@example.com".into(),
            ));
        }
        Ok(BillingProfile {
            company,
            tax_id,
            address,
            billing_email,
            monthly_invoicing,
        })
    }
}

/// One line of an invoice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack: Option<String>,
    pub credits: i64,
    /// US$ per credit, four decimals (a pack's discount shows here).
    pub unit_price_usd: String,
    pub amount_usd_cents: i64,
}

impl Line {
    pub fn new(description: String, pack: Option<String>, credits: i64, amount_cents: i64) -> Self {
        Line {
            description,
            pack,
            credits,
            unit_price_usd: unit_price(amount_cents, credits),
            amount_usd_cents: amount_cents,
        }
    }
}

/// `amount / credits` in US$ with four decimals, rounded half up.
fn unit_price(amount_cents: i64, credits: i64) -> String {
    if credits <= 0 {
        return "0.0000".into();
    }
    // Hundredths of a cent: cents * 100 / credits.
    let num = i128::from(amount_cents) * 100;
    let d = i128::from(credits);
    let q = (num * 2 + d) / (2 * d);
    format!("{}.{:04}", q / 10_000, q % 10_000)
}

/// Tax on `subtotal` at `rate_bp` basis points (1 % = 100), rounded half up to the cent.
pub fn tax_cents(subtotal_cents: i64, rate_bp: u32) -> i64 {
    let t = i128::from(subtotal_cents) * i128::from(rate_bp);
    i64::try_from((t * 2 + 10_000) / 20_000).unwrap_or(i64::MAX)
}

/// `1234567` cents as `12,345.67`.
pub fn usd(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let c = cents.unsigned_abs();
    let whole = (c / 100).to_string();
    let mut grouped = String::new();
    for (i, ch) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    format!("{sign}{grouped}.{:02}", c % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_and_parse_both_ways() {
        let n = Number {
            series: Series::Invoice,
            year: 2026,
            seq: 123,
        };
        assert_eq!(n.to_string(), "INV-2026-000123");
        assert_eq!(Number::parse("INV-2026-000123"), Ok(n));
        let big = Number {
            series: Series::ProForma,
            year: 2027,
            seq: 1_234_567,
        };
        assert_eq!(Number::parse(&big.to_string()), Ok(big));
        for bad in [
            "",
            "INV-2026-0001",
            "INV-26-000001",
            "INV-2026-000000",
            "XX-2026-000001",
            "INV-2026-00000a",
            "INV-2026-000001-1",
            "inv-2026-000001",
        ] {
            assert!(Number::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unit_prices_and_tax_round_half_up() {
        // pack_5000: US$5,000 for 628,950 credits.
        assert_eq!(unit_price(500_000, 628_950), "0.0079");
        assert_eq!(unit_price(2_500, 2_500), "0.0100");
        assert_eq!(tax_cents(500_000, 0), 0);
        assert_eq!(tax_cents(500_000, 600), 30_000);
        assert_eq!(tax_cents(5, 1_000), 1); // 0.5 cent rounds up
        assert_eq!(tax_cents(4, 1_000), 0);
        assert_eq!(usd(123_456_789), "1,234,567.89");
        assert_eq!(usd(5), "0.05");
        assert_eq!(usd(-100_000), "-1,000.00");
    }

    #[test]
    fn profiles_accept_chinese_and_refuse_junk() {
        let p = BillingProfile::parse(
            " 北京视频科技有限公司 ",
            Some("91110000MA01ABCD2X"),
            "北京市朝阳区建国路 88 号\r\n100022",
            "finance@example.cn",
            true,
        );
        let p = match p {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(p.company, "北京视频科技有限公司");
        assert_eq!(p.address, "北京市朝阳区建国路 88 号\n100022");
        assert!(BillingProfile::parse("", None, "a", "a@b.c", false).is_err());
        assert!(BillingProfile::parse("Co", None, "a", "not-an-email", false).is_err());
        assert!(BillingProfile::parse("Co", None, "a", "a@b", false).is_err());
        assert!(BillingProfile::parse("Co\u{7}", None, "a", "a@b.c", false).is_err());
        assert!(BillingProfile::parse("Co", None, &"x\n".repeat(9), "a@b.c", false).is_err());
        assert!(BillingProfile::parse("Co", Some("  "), "a", "a@b.c", false)
            .is_ok_and(|p| p.tax_id.is_none()));
    }
}
