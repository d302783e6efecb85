//! Invoices as PDF, laid out with `krilla`, which embeds only the glyphs a document uses: a
//! Chinese company name costs a few kilobytes of font, not the 19 MB of the whole face.
//!
//! The font is Noto Sans CJK (SIL Open Font License 1.1), Simplified Chinese face of the
//! collection: Debian's `fonts-noto-cjk` locally, a Lambda layer in the cloud (see
//! `docs/BILLING.md`). It is read once, on the first document a process lays out.

use crate::domain::invoice::{usd, Series};
use crate::domain::time::rfc3339_ms;
use crate::ports::billing::{DocumentKind, InvoiceRecord, TypesetError, Typesetter};
use krilla::color::rgb;
use krilla::geom::{PathBuilder, Point, Rect};
use krilla::num::NormalizedF32;
use krilla::page::PageSettings;
use krilla::paint::Fill;
use krilla::text::{Font, TextDirection};
use krilla::Document;
use std::sync::{Arc, OnceLock};

/// Where Debian's `fonts-noto-cjk` puts the face.
pub const DEFAULT_FONT_PATH: &str = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc";
/// The Simplified Chinese face in the collection (0 JP, 1 KR, 2 SC, 3 TC, 4 HK): the same
/// glyph set, with the mainland forms.
const FACE_INDEX: u32 = 2;

/// A4 in points.
const PAGE_W: f32 = 595.0;
const PAGE_H: f32 = 842.0;
const MARGIN: f32 = 56.0;

pub struct KrillaTypesetter {
    path: String,
    font: OnceLock<Result<Arc<Vec<u8>>, String>>,
}

impl KrillaTypesetter {
    pub fn new(path: impl Into<String>) -> Self {
        KrillaTypesetter {
            path: path.into(),
            font: OnceLock::new(),
        }
    }

    fn font(&self) -> Result<Font, TypesetError> {
        let bytes = self
            .font
            .get_or_init(|| {
                std::fs::read(&self.path)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(|e| TypesetError::Font {
                path: self.path.clone(),
                source: std::io::Error::other(e),
            })?;
        Font::new(bytes.into(), FACE_INDEX).ok_or_else(|| TypesetError::BadFont(self.path.clone()))
    }
}

/// Text laid top-down on one page: `y` is the distance from the top.
struct Writer<'s, 'a, 'f> {
    surface: &'s mut krilla::surface::Surface<'a>,
    font: &'f Font,
    y: f32,
}

impl Writer<'_, '_, '_> {
    fn text(&mut self, x: f32, size: f32, s: &str) {
        self.surface.draw_text(
            Point::from_xy(x, self.y),
            self.font.clone(),
            size,
            s,
            false,
            TextDirection::Auto,
        );
    }

    /// One line at the left margin, then down.
    fn line(&mut self, size: f32, s: &str) {
        for part in wrap(s, 90) {
            self.text(MARGIN, size, &part);
            self.y += size * 1.45;
        }
    }

    fn gap(&mut self, pt: f32) {
        self.y += pt;
    }

    fn rule(&mut self) {
        let mut pb = PathBuilder::new();
        if let Some(r) = Rect::from_xywh(MARGIN, self.y - 8.0, PAGE_W - 2.0 * MARGIN, 0.6) {
            pb.push_rect(r);
        }
        if let Some(path) = pb.finish() {
            self.surface.set_fill(Some(Fill {
                paint: rgb::Color::new(120, 120, 120).into(),
                opacity: NormalizedF32::ONE,
                rule: Default::default(),
            }));
            self.surface.draw_path(&path);
            self.surface.set_fill(Some(Fill::default()));
        }
    }

    /// A table row: description, credits, unit price, amount.
    fn row(&mut self, size: f32, cells: [&str; 4]) {
        let xs = [MARGIN, 300.0, 390.0, 470.0];
        let desc = wrap(cells[0], 40);
        for (i, part) in desc.iter().enumerate() {
            self.text(xs[0], size, part);
            if i == 0 {
                for (x, c) in xs.iter().zip(cells).skip(1) {
                    self.text(*x, size, c);
                }
            }
            self.y += size * 1.45;
        }
    }
}

/// Breaks `s` into pieces of at most `width` units (a CJK character counts two).
fn wrap(s: &str, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = if c.is_ascii() { 1 } else { 2 };
        if used + w > width && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
            used = 0;
        }
        cur.push(c);
        used += w;
    }
    if !cur.is_empty() || out.is_empty() {
        out.push(cur);
    }
    out
}

fn title(doc: &InvoiceRecord) -> &'static str {
    match doc.kind {
        DocumentKind::Purchase => "Invoice 发票",
        DocumentKind::MonthlySummary => "Monthly invoice summary 月结发票汇总",
        DocumentKind::ProForma => "Pro-forma invoice 形式发票 (not a tax invoice)",
    }
}

impl Typesetter for KrillaTypesetter {
    fn invoice_pdf(&self, doc: &InvoiceRecord) -> Result<Vec<u8>, TypesetError> {
        let font = self.font()?;
        let mut document = Document::new();
        let settings = PageSettings::from_wh(PAGE_W, PAGE_H)
            .ok_or_else(|| TypesetError::Pdf("page size".into()))?;
        let mut page = document.start_page_with(settings);
        let mut surface = page.surface();
        lay_out(&mut surface, &font, doc);
        surface.finish();
        page.finish();
        document
            .finish()
            .map_err(|e| TypesetError::Pdf(format!("{e:?}")))
    }
}

fn lay_out(surface: &mut krilla::surface::Surface<'_>, font: &Font, doc: &InvoiceRecord) {
    let mut w = Writer {
        surface,
        font,
        y: MARGIN + 10.0,
    };
    w.line(20.0, title(doc));
    w.gap(6.0);
    w.line(11.0, &format!("Number 编号: {}", doc.number));
    let date = rfc3339_ms(doc.issued_ms);
    w.line(
        11.0,
        &format!("Issued 开具日期: {} (UTC)", date.get(..10).unwrap_or(&date)),
    );
    w.line(10.0, &format!("Account 账户: {}", doc.account_id));
    if let Some(p) = &doc.payment {
        let how = match p.method.as_str() {
            "card" => "card 银行卡",
            "wire" => "wire transfer 电汇",
            other => other,
        };
        w.line(
            10.0,
            &format!("Paid by 付款方式: {how}, ref. {}", p.reference),
        );
    }
    if let Some(s) = &doc.subject {
        if doc.kind == DocumentKind::MonthlySummary {
            w.line(10.0, &format!("Period 期间: {s}"));
        }
    }
    w.gap(10.0);
    w.line(10.0, "From 开票方");
    w.line(11.0, &doc.issuer.name);
    for l in doc.issuer.address.lines() {
        w.line(10.0, l);
    }
    if let Some(t) = &doc.issuer.tax_id {
        w.line(10.0, &format!("Tax ID 税号: {t}"));
    }
    w.gap(8.0);
    w.line(10.0, "Bill to 购买方");
    match &doc.customer {
        Some(c) => {
            w.line(11.0, &c.company);
            for l in c.address.lines() {
                w.line(10.0, l);
            }
            if let Some(t) = &c.tax_id {
                w.line(10.0, &format!("Tax ID 税号: {t}"));
            }
            w.line(10.0, &c.billing_email);
        }
        None => w.line(11.0, &doc.account_name),
    }
    w.gap(14.0);
    w.row(
        9.5,
        ["Description 项目", "Credits 点数", "Unit US$", "Amount US$"],
    );
    w.rule();
    w.gap(4.0);
    for l in &doc.lines {
        let credits = l.credits.to_string();
        let amount = usd(l.amount_usd_cents);
        w.row(9.5, [&l.description, &credits, &l.unit_price_usd, &amount]);
    }
    w.rule();
    w.gap(6.0);
    let rate = format!("{}.{:02} %", doc.tax_rate_bp / 100, doc.tax_rate_bp % 100);
    let subtotal = usd(doc.subtotal_usd_cents);
    let tax = usd(doc.tax_usd_cents);
    let total = usd(doc.total_usd_cents);
    w.row(10.0, ["Subtotal 小计", "", "", &subtotal]);
    w.row(10.0, [&format!("Tax 税额 ({rate})"), "", "", &tax]);
    w.row(11.0, ["Total 合计 (US$)", "", "", &total]);
    if doc.series == Series::ProForma {
        let b = &doc.issuer.bank;
        w.gap(14.0);
        w.line(10.0, "Pay by wire transfer to 电汇收款账户");
        w.line(10.0, &format!("Beneficiary 收款人: {}", b.beneficiary));
        w.line(10.0, &format!("Bank 开户行: {}", b.bank_name));
        w.line(10.0, &format!("Account 账号: {}", b.account_number));
        w.line(10.0, &format!("SWIFT: {}", b.swift));
        w.line(
            11.0,
            &format!("Payment reference 付款附言 (required): {}", doc.number),
        );
        w.line(
            9.0,
            "Credits arrive when the transfer is recorded against this reference.",
        );
    }
    if !doc.includes.is_empty() {
        w.gap(10.0);
        w.line(
            9.0,
            &format!("Invoices 包含发票: {}", doc.includes.join(", ")),
        );
    }
    w.gap(14.0);
    w.line(8.5, "Credits never expire (contract 1.4). 点数永不过期。");
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn wrapping_counts_wide_characters_double() {
        assert_eq!(wrap("abcdef", 4), vec!["abcd", "ef"]);
        assert_eq!(wrap("北京视频", 4), vec!["北京", "视频"]);
        assert_eq!(wrap("", 4), vec![""]);
    }
}
