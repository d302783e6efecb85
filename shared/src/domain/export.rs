//! Export files as pure code: which datasets and formats exist, and how a row becomes a CSV
//! line (RFC 4180, spreadsheet-safe) or a JSON line.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dataset {
    Ledger,
    Batches,
    Tasks,
    Usage,
    WebhookDeliveries,
    /// GDPR: everything we hold about the account, one JSON Lines file.
    AccountArchive,
}

impl Dataset {
    pub fn as_str(self) -> &'static str {
        match self {
            Dataset::Ledger => "ledger",
            Dataset::Batches => "batches",
            Dataset::Tasks => "tasks",
            Dataset::Usage => "usage",
            Dataset::WebhookDeliveries => "webhook_deliveries",
            Dataset::AccountArchive => "account_archive",
        }
    }

    /// The scope a key needs to export (or download) this dataset: what the matching API
    /// routes need. Usage (addresses, user agents), webhook deliveries (endpoint URLs) and
    /// the archive (keys' allowlists, endpoints) are admin data; the money and the work are
    /// for any reader.
    pub fn required_scope(self) -> super::access::KeyScope {
        use super::access::KeyScope;
        match self {
            Dataset::Ledger | Dataset::Batches | Dataset::Tasks => KeyScope::Read,
            Dataset::Usage | Dataset::WebhookDeliveries | Dataset::AccountArchive => {
                KeyScope::Admin
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Csv,
    /// JSON Lines: one object per line.
    Json,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "jsonl",
        }
    }
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/jsonl",
        }
    }
}

/// One value of a row. Numbers stay numbers in both formats; text is neutralised in CSV.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Text(String),
    Int(i64),
    /// A decimal amount such as `-4.90`: written as a number, never neutralised.
    Decimal(String),
    Null,
}

impl Cell {
    /// US-dollar text (`-4.90`) as a number cell; anything else stays text.
    pub fn money(s: &str) -> Cell {
        let digits = s.strip_prefix('-').unwrap_or(s);
        let ok = matches!(digits.split_once('.'), Some((a, b))
            if !a.is_empty() && a.bytes().all(|c| c.is_ascii_digit())
                && b.len() == 2 && b.bytes().all(|c| c.is_ascii_digit()));
        if ok {
            Cell::Decimal(s.to_string())
        } else {
            Cell::Text(s.to_string())
        }
    }
}

impl From<&str> for Cell {
    fn from(s: &str) -> Self {
        Cell::Text(s.to_string())
    }
}
impl From<String> for Cell {
    fn from(s: String) -> Self {
        Cell::Text(s)
    }
}
impl From<i64> for Cell {
    fn from(n: i64) -> Self {
        Cell::Int(n)
    }
}
impl<T: Into<Cell>> From<Option<T>> for Cell {
    fn from(v: Option<T>) -> Self {
        v.map_or(Cell::Null, Into::into)
    }
}

/// A UTF-8 byte-order mark: without it Excel reads UTF-8 CSV as the local code page.
pub const UTF8_BOM: &str = "\u{feff}";

/// A text cell as a spreadsheet may not execute it: a leading `=`, `+`, `-`, `@`, tab or
/// carriage return (formula injection, OWASP) gets a `'` in front. Numbers are written as
/// numbers and never pass through here, so `-490` stays a number.
pub fn neutralise(s: &str) -> std::borrow::Cow<'_, str> {
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}").into(),
        _ => s.into(),
    }
}

/// RFC 4180: a field with a comma, quote, CR or LF is quoted, quotes doubled.
fn quote(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

/// One CSV record, CRLF-terminated.
pub fn csv_line<'a>(cells: impl IntoIterator<Item = &'a Cell>) -> String {
    let mut out = String::new();
    for (i, c) in cells.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match c {
            Cell::Text(s) => out.push_str(&quote(&neutralise(s))),
            Cell::Int(n) => out.push_str(&n.to_string()),
            Cell::Decimal(d) => out.push_str(d),
            Cell::Null => {}
        }
    }
    out.push_str("\r\n");
    out
}

pub fn csv_header(columns: &[&str]) -> String {
    let cells: Vec<Cell> = columns.iter().map(|c| Cell::from(*c)).collect();
    csv_line(&cells)
}

/// One JSON Lines record: the columns as keys, numbers as numbers, null as null.
pub fn json_line(columns: &[&str], cells: &[Cell]) -> String {
    let mut m = serde_json::Map::new();
    for (k, c) in columns.iter().zip(cells) {
        let v = match c {
            Cell::Text(s) => serde_json::Value::String(s.clone()),
            Cell::Int(n) => serde_json::Value::from(*n),
            Cell::Decimal(d) => serde_json::Value::String(d.clone()),
            Cell::Null => serde_json::Value::Null,
        };
        m.insert((*k).to_string(), v);
    }
    let mut s = serde_json::Value::Object(m).to_string();
    s.push('\n');
    s
}

/// Credits as US dollars for the `_usd` columns ("-4.90").
pub fn usd(credits: i64) -> String {
    crate::domain::money::Credits(credits).usd()
}

/// How much an export buffers before it uploads a part (S3's minimum part is 5 MiB).
pub const PART_BYTES: usize = 8 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_neutralises_text_but_not_numbers() {
        let cells = vec![
            Cell::from("plain"),
            Cell::from("a,b"),
            Cell::from("say \"hi\""),
            Cell::from("two\nlines"),
            Cell::from("=HYPERLINK(\"http://x\")"),
            Cell::from("+1"),
            Cell::from("-cmd"),
            Cell::from("@SUM(A1)"),
            Cell::Int(-490),
            Cell::money("-4.90"),
            Cell::money("-4.9x"),
            Cell::Null,
            Cell::from("日本語 ✓"),
        ];
        assert_eq!(
            csv_line(&cells),
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",\"'=HYPERLINK(\"\"http://x\"\")\",'+1,'-cmd,'@SUM(A1),-490,-4.90,'-4.9x,,日本語 ✓\r\n"
        );
        assert_eq!(csv_header(&["id", "amount"]), "id,amount\r\n");
    }

    /// Benchmark of our side of an export (encoding and hashing), apart from the store:
    /// `cargo test -p shared --release encode_a_million -- --ignored --nocapture`.
    #[test]
    #[ignore = "benchmark"]
    fn encode_a_million_ledger_rows() {
        use sha2::Digest;
        let started = std::time::Instant::now();
        let mut hasher = sha2::Sha256::new();
        let (mut buf, mut peak, mut bytes) = (Vec::new(), 0usize, 0usize);
        for i in 0..1_000_000i64 {
            let cells = [
                Cell::from(format!("le_{i:012}")),
                Cell::Int(i),
                Cell::from("2026-11-24T21:15:08.123Z"),
                Cell::from("pre_deduct"),
                Cell::Int(-490),
                Cell::money(&usd(-490)),
                Cell::Int(100_000 - i),
                Cell::money(&usd(100_000 - i)),
                Cell::from("bat_01M87QK0NREPX2ZHGKMMS7YBB3"),
                Cell::Null,
                Cell::from(format!("req-{i}")),
            ];
            let line = csv_line(&cells);
            hasher.update(line.as_bytes());
            buf.extend_from_slice(line.as_bytes());
            bytes += line.len();
            peak = peak.max(buf.len());
            if buf.len() >= PART_BYTES {
                buf.clear();
            }
        }
        let secs = started.elapsed().as_secs_f64();
        let _ = hasher.finalize();
        println!(
            "BENCH encode rows=1000000 bytes={bytes} seconds={secs:.2} rows_per_s={:.0} peak_buffer={peak}",
            1e6 / secs
        );
        assert!(peak <= PART_BYTES + 1_024);
    }

    #[test]
    fn json_lines_keep_types() {
        let line = json_line(
            &["a", "b", "c"],
            &[Cell::from("=x"), Cell::Int(-5), Cell::Null],
        );
        assert_eq!(line, "{\"a\":\"=x\",\"b\":-5,\"c\":null}\n");
        assert_eq!(usd(-490), "-4.90");
    }
}
