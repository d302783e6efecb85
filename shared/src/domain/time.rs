//! Timestamps: milliseconds since the Unix epoch inside, RFC 3339 UTC outside.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-24T21:15:08.123Z`.
pub fn rfc3339_ms(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => {
            let d = t.date();
            let tm = t.time();
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                d.year(),
                u8::from(d.month()),
                d.day(),
                tm.hour(),
                tm.minute(),
                tm.second(),
                tm.millisecond()
            )
        }
        // Out of the representable range: cannot come from our own clock.
        Err(_) => ms.to_string(),
    }
}

/// The UTC month (`YYYY-MM`) holding `ms`.
pub fn month_of(ms: i64) -> String {
    rfc3339_ms(ms).chars().take(7).collect()
}

/// Parses an RFC 3339 timestamp (any offset) into epoch milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_milliseconds() {
        let ms = 1_795_900_508_123;
        let s = rfc3339_ms(ms);
        assert_eq!(s, "2026-11-28T21:15:08.123Z");
        assert_eq!(parse_rfc3339_ms(&s), Some(ms));
        assert_eq!(parse_rfc3339_ms("2026-11-28T22:15:08.123+01:00"), Some(ms));
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }
}
