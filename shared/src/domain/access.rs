//! Access rules for API keys, as pure code: scopes, IP allowlists, the per-key rate limit
//! (a sliding window estimated from two fixed windows) and the anomaly rules that throttle a
//! key or block an address.

use std::net::IpAddr;

/// What a key may do. `admin` implies the others; `batches:write` implies `read`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyScope {
    Read,
    BatchesWrite,
    Admin,
}

impl KeyScope {
    pub const ALL: [KeyScope; 3] = [KeyScope::Read, KeyScope::BatchesWrite, KeyScope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyScope::Read => "read",
            KeyScope::BatchesWrite => "batches:write",
            KeyScope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether holding `self` grants `needed`.
    pub fn grants(self, needed: KeyScope) -> bool {
        self >= needed
    }
}

/// The scope a route needs. Reads need `read`; creating and cancelling batches and files,
/// `batches:write`; keys, webhooks and account settings, `admin`; paying and what invoices
/// say (checkout, the billing profile, pro-forma requests) too, while reading them is `read`.
pub fn required_scope(method: &str, route: &str) -> KeyScope {
    let billing = route.starts_with("/v1/checkout")
        || route.starts_with("/v1/billing-profile")
        || route.starts_with("/v1/proforma-invoices");
    let admin_area = route.starts_with("/v1/api-keys")
        || route.starts_with("/v1/webhook-endpoints")
        || route == "/v1/account"
        || billing
        || route.starts_with("/v1/usage")
        || route.ends_with("/redeliver");
    // Asking for an export reads data, whatever the method; any key may open and close a
    // console session (the console then offers what the key's scopes allow).
    let reads = method.eq_ignore_ascii_case("GET")
        || method.eq_ignore_ascii_case("HEAD")
        || route == "/v1/exports"
        || route.starts_with("/v1/console/");
    match (admin_area, reads) {
        // Listing keys or endpoints shows configuration: admin too.
        (true, _) if route != "/v1/account" && !billing => KeyScope::Admin,
        (true, false) => KeyScope::Admin,
        (_, true) => KeyScope::Read,
        (false, false) => KeyScope::BatchesWrite,
    }
}

/// Whether any of `held` grants `needed`.
pub fn allowed(held: &[KeyScope], needed: KeyScope) -> bool {
    held.iter().any(|s| s.grants(needed))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not an IPv4 or IPv6 address or CIDR block")]
pub struct CidrError(pub String);

/// Maps `::ffff:a.b.c.d` to `a.b.c.d`, so one rule matches a client however it arrives.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// What an address block applies to: an IPv4 address, or the /64 network of an IPv6 one
/// (one subscriber usually holds a whole /64, so blocking a single address of it would let
/// the same client go on from the next one).
pub fn block_subject(ip: IpAddr) -> String {
    match canonical_ip(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        v4 => v4.to_string(),
    }
}

impl Cidr {
    /// `10.0.0.0/8`, `2001:db8::/32`, or a single address.
    pub fn parse(s: &str) -> Result<Cidr, CidrError> {
        let bad = || CidrError(s.to_string());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr = canonical_ip(addr.parse::<IpAddr>().map_err(|_| bad())?);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical_ip(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// At most this many CIDR blocks per key.
pub const MAX_ALLOWLIST: usize = 50;

/// An empty list allows every address; otherwise the client must match one block. An unknown
/// client address never matches.
pub fn ip_allowed(allowlist: &[Cidr], client: Option<IpAddr>) -> bool {
    allowlist.is_empty() || client.is_some_and(|ip| allowlist.iter().any(|c| c.contains(ip)))
}

/// The rate-limit window.
pub const WINDOW_MS: i64 = 60_000;
pub const DEFAULT_RATE_LIMIT_PER_MIN: u32 = 600;
/// An account's request budget per minute, over all its keys, unless its contract says
/// otherwise: ten keys at the default limit.
pub const DEFAULT_REQUEST_BUDGET_PER_MIN: u32 = 6_000;
/// The highest budget, and so the highest key limit: one account's minute is one DynamoDB
/// item, and one item takes about 1,000 writes a second.
pub const MAX_REQUEST_BUDGET_PER_MIN: u32 = 60_000;
pub const MAX_RATE_LIMIT_PER_MIN: u32 = MAX_REQUEST_BUDGET_PER_MIN;

/// Where `now_ms` falls: the start of its fixed window and how far into it.
pub fn window_of(now_ms: i64) -> (i64, i64) {
    let start = now_ms - now_ms.rem_euclid(WINDOW_MS);
    (start, now_ms - start)
}

/// The sliding-window estimate: the current window's count plus the previous window's,
/// weighted by how much of it still lies within the last 60 seconds.
pub fn estimate(prev: u64, curr: u64, elapsed_ms: i64) -> f64 {
    let weight = 1.0 - (elapsed_ms.clamp(0, WINDOW_MS) as f64 / WINDOW_MS as f64);
    prev as f64 * weight + curr as f64
}

/// How many requests the current window may hold in all at this moment: the limit minus the
/// previous window's weighted share. The store admits a request only while the current count
/// is below this (one conditional increment), so concurrent instances cannot overshoot.
pub fn current_window_cap(limit: u32, prev: u64, elapsed_ms: i64) -> u64 {
    let room = f64::from(limit) - estimate(prev, 0, elapsed_ms);
    if room <= 0.0 {
        0
    } else {
        room.floor() as u64
    }
}

/// Seconds until one more request fits, given the counts at `elapsed_ms`.
pub fn retry_after_secs(limit: u32, prev: u64, curr: u64, elapsed_ms: i64) -> u64 {
    let limit = f64::from(limit);
    let w = WINDOW_MS as f64;
    let e = elapsed_ms.clamp(0, WINDOW_MS) as f64;
    let ms = if (curr as f64) < limit && prev > 0 {
        // Within this window, once the previous window's weight has shrunk enough.
        let at = w * (1.0 - (limit - curr as f64 - 1.0).max(0.0) / prev as f64);
        (at - e).max(0.0)
    } else {
        // After the roll, once this window's count (now the previous) has shrunk enough.
        let rest = w - e;
        let at = if curr == 0 {
            0.0
        } else {
            w * (1.0 - (limit - 1.0).max(0.0) / curr as f64)
        };
        rest + at.max(0.0)
    };
    ((ms / 1_000.0).ceil() as u64).max(1)
}

/// What a request's rate-limit headers say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateState {
    pub limit: u32,
    pub remaining: u64,
    /// Seconds until the current window ends.
    pub reset_secs: u64,
}

pub fn rate_state(limit: u32, prev: u64, curr: u64, elapsed_ms: i64) -> RateState {
    let used = estimate(prev, curr, elapsed_ms).ceil() as u64;
    RateState {
        limit,
        remaining: u64::from(limit).saturating_sub(used),
        reset_secs: ((WINDOW_MS - elapsed_ms.clamp(0, WINDOW_MS)) as u64).div_ceil(1_000),
    }
}

/// One minute of a key's traffic, as the anomaly rules see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyMinute {
    pub requests: u64,
    /// 4xx answers other than 429.
    pub client_errors: u64,
    pub payment_required: u64,
}

/// Why a key was throttled or an address blocked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anomaly {
    /// At least 30 requests in a minute, half or more of them refused as bad (4xx).
    ErrorRate,
    /// At least 20 answers of 402 in a minute: something spends without looking.
    PaymentFlood,
    /// At least 20 failed authentications from one address in a minute.
    AuthFailures,
}

impl Anomaly {
    pub fn as_str(self) -> &'static str {
        match self {
            Anomaly::ErrorRate => "error_rate",
            Anomaly::PaymentFlood => "payment_flood",
            Anomaly::AuthFailures => "auth_failures",
        }
    }
}

pub const ERROR_RATE_MIN_REQUESTS: u64 = 30;
pub const PAYMENT_FLOOD: u64 = 20;
pub const AUTH_FAILURES_PER_IP: u64 = 20;
/// How long a throttle or a block lasts unless an operator lifts it first.
pub const THROTTLE_MS: i64 = 15 * 60_000;
/// A throttled key keeps a tenth of its limit (at least one request a minute).
pub fn throttled_limit(limit: u32) -> u32 {
    (limit / 10).max(1)
}

/// The rule a key's minute breaks, if any.
pub fn key_anomaly(m: KeyMinute) -> Option<Anomaly> {
    if m.payment_required >= PAYMENT_FLOOD {
        return Some(Anomaly::PaymentFlood);
    }
    if m.requests >= ERROR_RATE_MIN_REQUESTS && m.client_errors * 2 >= m.requests {
        return Some(Anomaly::ErrorRate);
    }
    None
}

pub fn ip_anomaly(auth_failures: u64) -> Option<Anomaly> {
    (auth_failures >= AUTH_FAILURES_PER_IP).then_some(Anomaly::AuthFailures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_an_ipv6_slash_64_and_a_single_ipv4_address() {
        assert_eq!(block_subject(ip("203.0.113.7")), "203.0.113.7");
        assert_eq!(block_subject(ip("::ffff:203.0.113.7")), "203.0.113.7");
        assert_eq!(
            block_subject(ip("2001:db8:85a3:12::8a2e:370:7334")),
            "2001:db8:85a3:12::/64"
        );
        assert_eq!(
            block_subject(ip("2001:db8:85a3:12:ffff::1")),
            block_subject(ip("2001:db8:85a3:12::2")),
            "one /64, one block"
        );
        assert_ne!(
            block_subject(ip("2001:db8:85a3:12::1")),
            block_subject(ip("2001:db8:85a3:13::1"))
        );
    }

    fn ip(s: &str) -> IpAddr {
        s.parse()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn scopes_nest_and_routes_need_the_right_one() {
        assert!(allowed(&[KeyScope::Admin], KeyScope::BatchesWrite));
        assert!(allowed(&[KeyScope::BatchesWrite], KeyScope::Read));
        assert!(!allowed(&[KeyScope::Read], KeyScope::BatchesWrite));
        assert!(!allowed(&[KeyScope::BatchesWrite], KeyScope::Admin));
        assert_eq!(required_scope("GET", "/v1/batches"), KeyScope::Read);
        assert_eq!(
            required_scope("POST", "/v1/batches"),
            KeyScope::BatchesWrite
        );
        assert_eq!(
            required_scope("POST", "/v1/batches/{batch_id}/cancel"),
            KeyScope::BatchesWrite
        );
        assert_eq!(required_scope("GET", "/v1/api-keys"), KeyScope::Admin);
        assert_eq!(
            required_scope("POST", "/v1/webhook-endpoints"),
            KeyScope::Admin
        );
        assert_eq!(required_scope("GET", "/v1/account"), KeyScope::Read);
        assert_eq!(required_scope("PATCH", "/v1/account"), KeyScope::Admin);
        assert_eq!(
            required_scope("PUT", "/v1/billing-profile"),
            KeyScope::Admin
        );
        assert_eq!(required_scope("GET", "/v1/billing-profile"), KeyScope::Read);
        assert_eq!(required_scope("POST", "/v1/checkout"), KeyScope::Admin);
        assert_eq!(
            required_scope("POST", "/v1/proforma-invoices"),
            KeyScope::Admin
        );
        assert_eq!(
            required_scope("GET", "/v1/proforma-invoices"),
            KeyScope::Read
        );
        assert_eq!(
            required_scope("GET", "/v1/invoices/{invoice_id}"),
            KeyScope::Read
        );
        assert_eq!(
            required_scope("POST", "/v1/events/{event_id}/redeliver"),
            KeyScope::Admin
        );
        assert_eq!(
            KeyScope::parse("batches:write"),
            Some(KeyScope::BatchesWrite)
        );
        assert_eq!(KeyScope::parse("root"), None);
    }

    #[test]
    fn cidrs_match_v4_v6_and_mapped_addresses() {
        let v4 = Cidr::parse("203.0.113.0/24").map_err(|e| e.to_string());
        let v6 = Cidr::parse("2001:db8:abcd::/48").map_err(|e| e.to_string());
        let (v4, v6) = (
            v4.unwrap_or(Cidr {
                addr: ip("0.0.0.0"),
                prefix: 32,
            }),
            v6.unwrap_or(Cidr {
                addr: ip("::"),
                prefix: 128,
            }),
        );
        assert!(v4.contains(ip("203.0.113.77")));
        assert!(!v4.contains(ip("203.0.114.1")));
        assert!(v4.contains(ip("::ffff:203.0.113.9")));
        assert!(v6.contains(ip("2001:db8:abcd:12::1")));
        assert!(!v6.contains(ip("2001:db8:abce::1")));
        assert!(!v6.contains(ip("203.0.113.77")));
        assert_eq!(
            Cidr::parse("127.0.0.1").map(|c| c.to_string()),
            Ok("127.0.0.1/32".into())
        );
        assert_eq!(
            Cidr::parse("::1").map(|c| c.to_string()),
            Ok("::1/128".into())
        );
        assert_eq!(
            Cidr::parse("0.0.0.0/0").map(|c| c.contains(ip("8.8.8.8"))),
            Ok(true)
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("example.com").is_err());
        assert!(Cidr::parse("10.0.0.0/").is_err());
        assert!(ip_allowed(&[], None));
        assert!(!ip_allowed(&[v4], None));
        assert!(ip_allowed(&[v6, v4], Some(ip("203.0.113.1"))));
    }

    #[test]
    fn the_sliding_window_weights_the_previous_minute() {
        // 60 last minute, 15 s into this one: 45 still count.
        assert_eq!(estimate(60, 0, 15_000), 45.0);
        assert_eq!(current_window_cap(60, 60, 15_000), 15);
        assert_eq!(current_window_cap(60, 0, 0), 60);
        assert_eq!(current_window_cap(60, 60, 0), 0);
        assert_eq!(current_window_cap(60, 200, 30_000), 0);
        assert_eq!(window_of(125_000), (120_000, 5_000));
        let s = rate_state(60, 60, 10, 15_000);
        assert_eq!((s.remaining, s.reset_secs), (5, 45));
    }

    #[test]
    fn retry_after_points_at_the_next_free_slot() {
        // Full this window, nothing before: wait for the roll and then some.
        let wait = retry_after_secs(10, 0, 10, 0);
        assert!(wait >= 60, "{wait}");
        assert!(estimate(10, 0, (wait as i64 - 60) * 1_000) <= 9.0);
        // Previous window full, 5 used now at 30 s: estimate 10 until ~36 s.
        let w = retry_after_secs(10, 10, 5, 30_000);
        assert!((6..=7).contains(&w), "{w}");
        assert!(estimate(10, 5, 30_000 + w as i64 * 1_000) <= 9.0);
    }

    #[test]
    fn anomaly_rules() {
        let m = |requests, client_errors, payment_required| KeyMinute {
            requests,
            client_errors,
            payment_required,
        };
        assert_eq!(key_anomaly(m(29, 29, 0)), None, "too few to judge");
        assert_eq!(key_anomaly(m(30, 15, 0)), Some(Anomaly::ErrorRate));
        assert_eq!(key_anomaly(m(100, 49, 0)), None);
        assert_eq!(key_anomaly(m(25, 20, 20)), Some(Anomaly::PaymentFlood));
        assert_eq!(ip_anomaly(19), None);
        assert_eq!(ip_anomaly(20), Some(Anomaly::AuthFailures));
        assert_eq!(throttled_limit(600), 60);
        assert_eq!(throttled_limit(5), 1);
    }
}
