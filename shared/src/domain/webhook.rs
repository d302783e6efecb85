//! Webhooks, as pure rules: Standard Webhooks signing, which endpoint URLs we may call, the
//! retry schedule and what each response means for a delivery and its endpoint.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Secrets read `whsec_` + base64 of the key bytes, as Standard Webhooks libraries expect.
pub const SECRET_PREFIX: &str = "whsec_";
/// Key length of a new secret (the spec asks for 24 to 64 bytes).
pub const SECRET_BYTES: usize = 32;
/// How long a replaced secret keeps signing beside its successor.
pub const ROTATION_OVERLAP_MS: i64 = 24 * 3_600_000;
/// How far a receiver should let `webhook-timestamp` drift (the spec's libraries use 5 min).
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 300;

/// The retry schedule, as delays after the previous attempt: attempt 1 at once, then 5 s,
/// 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (about 27.6 hours from first to last).
pub const SCHEDULE_SECS: [u64; 8] = [0, 5, 300, 1_800, 7_200, 18_000, 36_000, 36_000];
/// The longest `Retry-After` we honour; a longer one is cut to this.
pub const MAX_RETRY_AFTER_SECS: u64 = 3_600;
/// An endpoint whose deliveries have failed without a single success for this long is
/// disabled (and the account told).
pub const DISABLE_AFTER_FAILING_MS: i64 = 5 * 24 * 3_600_000;
/// How much of a receiver's response body the delivery log keeps.
pub const LOGGED_BODY_BYTES: usize = 1_024;
/// Attempts of one account in flight at once, across every dispatcher. Dispatch runs 20
/// instances of up to 10 concurrent attempts (template.yaml: `ReservedConcurrentExecutions`,
/// `BatchSize`): one account's slow receivers (15 s time-outs) can hold at most this many of
/// those 200, and its other attempts wait on the queue, so other accounts' deliveries are not
/// held up behind them. A fast receiver (100 ms) still gets about 100 deliveries a second.
pub const DISPATCH_SHARE: u32 = 10;
/// How long an attempt that found its account's share in use waits before it looks again,
/// plus up to [`SHARE_JITTER_MS`] so the waiting ones do not come back together. The wait
/// is not an attempt: the retry schedule and the attempt count are untouched.
pub const SHARE_WAIT_MS: i64 = 5_000;
pub const SHARE_JITTER_MS: u64 = 5_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("a webhook secret starts with whsec_")]
    Prefix,
    #[error("a webhook secret is base64 after its prefix")]
    Encoding,
    #[error("a webhook secret holds 24 to 64 bytes")]
    Length,
}

/// A secret in its display form, from random bytes.
pub fn secret_from(bytes: [u8; SECRET_BYTES]) -> String {
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

/// The key bytes of a `whsec_` secret.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, SecretError> {
    let b64 = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or(SecretError::Prefix)?;
    let key = STANDARD.decode(b64).map_err(|_| SecretError::Encoding)?;
    if !(24..=64).contains(&key.len()) {
        return Err(SecretError::Length);
    }
    Ok(key)
}

/// One signature: `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
pub fn sign(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        // HMAC takes keys of any length; this arm cannot run.
        Err(_) => return String::new(),
    };
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header: one signature per active secret, space-separated.
pub fn signature_header(keys: &[Vec<u8>], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|k| sign(k, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("the timestamp is outside the tolerance")]
    Stale,
    #[error("no signature matches")]
    NoMatch,
}

/// What a receiver does (docs, tests): accept when any `v1` signature in the header matches
/// the key and the timestamp is within tolerance of `now_secs`. Constant-time compare.
pub fn verify(
    key: &[u8],
    msg_id: &str,
    timestamp: i64,
    header: &str,
    body: &[u8],
    now_secs: i64,
) -> Result<(), VerifyError> {
    if (now_secs - timestamp).abs() > TIMESTAMP_TOLERANCE_SECS {
        return Err(VerifyError::Stale);
    }
    let expected = sign(key, msg_id, timestamp, body);
    let ok = header.split(' ').any(|sig| {
        use subtle::ConstantTimeEq;
        sig.len() == expected.len() && bool::from(sig.as_bytes().ct_eq(expected.as_bytes()))
    });
    if ok {
        Ok(())
    } else {
        Err(VerifyError::NoMatch)
    }
}

/// One of an endpoint's signing secrets; `retires_ms` is set once a rotation replaced it.
/// Stored sealed (`ports::Sealer`, KMS in the cloud): only where a delivery is signed is it
/// opened, bound to [`secret_context`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SigningSecret {
    pub sealed: String,
    pub created_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retires_ms: Option<i64>,
}

/// The secrets that sign at `now_ms`: the current one and any replaced one still in overlap.
/// Newest first, so the first signature in the header is the current secret's.
pub fn active_secrets(secrets: &[SigningSecret], now_ms: i64) -> Vec<&SigningSecret> {
    let mut active: Vec<&SigningSecret> = secrets
        .iter()
        .filter(|s| s.retires_ms.is_none_or(|r| now_ms < r))
        .collect();
    active.sort_by_key(|s| std::cmp::Reverse(s.created_ms));
    active
}

/// Whose secret a sealed signing secret is: it opens only for this account's this endpoint.
pub fn secret_context<'a>(account_id: &'a str, endpoint_id: &'a str) -> [(&'a str, &'a str); 3] {
    [
        ("purpose", "webhook-signing"),
        ("account_id", account_id),
        ("endpoint_id", endpoint_id),
    ]
}

/// A rotation: the current secret retires in [`ROTATION_OVERLAP_MS`], secrets already retired
/// are dropped, and `new` (sealed) becomes current.
pub fn rotate(secrets: &[SigningSecret], new: String, now_ms: i64) -> Vec<SigningSecret> {
    let mut out: Vec<SigningSecret> = active_secrets(secrets, now_ms)
        .into_iter()
        .cloned()
        .map(|mut s| {
            let retire = now_ms + ROTATION_OVERLAP_MS;
            s.retires_ms = Some(s.retires_ms.map_or(retire, |r| r.min(retire)));
            s
        })
        .collect();
    out.insert(
        0,
        SigningSecret {
            sealed: new,
            created_ms: now_ms,
            retires_ms: None,
        },
    );
    out
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("the url is not a valid absolute URL")]
    Invalid,
    #[error("webhook endpoints must use https")]
    NotHttps,
    #[error("the url must not carry a user name or password")]
    Credentials,
    #[error("the url is longer than 2048 characters")]
    TooLong,
    #[error("the url's host is a loopback, private, link-local or metadata address")]
    ForbiddenAddress,
}

/// Where we may deliver: anywhere public over HTTPS in the cloud; plain HTTP and loopback too
/// in local mode (the README's first command, tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UrlPolicy {
    pub allow_private: bool,
}

/// Checks an endpoint URL's form; the address check after DNS is [`forbidden_ip`]'s.
pub fn check_url(raw: &str, policy: UrlPolicy) -> Result<url::Url, UrlError> {
    if raw.len() > 2_048 {
        return Err(UrlError::TooLong);
    }
    let url = url::Url::parse(raw).map_err(|_| UrlError::Invalid)?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_private => {}
        _ => return Err(UrlError::NotHttps),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Credentials);
    }
    match url.host() {
        None => return Err(UrlError::Invalid),
        Some(url::Host::Ipv4(ip)) if !policy.allow_private && forbidden_ip(IpAddr::V4(ip)) => {
            return Err(UrlError::ForbiddenAddress)
        }
        Some(url::Host::Ipv6(ip)) if !policy.allow_private && forbidden_ip(IpAddr::V6(ip)) => {
            return Err(UrlError::ForbiddenAddress)
        }
        Some(url::Host::Domain(d)) if !policy.allow_private && forbidden_name(d) => {
            return Err(UrlError::ForbiddenAddress)
        }
        _ => {}
    }
    Ok(url)
}

/// Names that mean "this machine" or a cloud metadata service whatever DNS says.
fn forbidden_name(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    h == "localhost"
        || h.ends_with(".localhost")
        || h == "metadata.google.internal"
        || h.ends_with(".internal")
}

/// Addresses a webhook must never reach from inside our network (SSRF): loopback, private,
/// link-local (which holds the cloud metadata service, 169.254.169.254), carrier-grade NAT,
/// unspecified, multicast, broadcast, documentation and benchmark ranges, and their IPv6
/// counterparts including IPv4-mapped forms.
pub fn forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            forbidden_v6(v6)
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240 // reserved
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00 // unique local
        || (seg[0] & 0xffc0) == 0xfe80 // link-local
        || (seg[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
        || (seg[0] == 0x0064 && seg[1] == 0xff9b) // NAT64 can reach private IPv4
        || seg[0] == 0x2002 // 6to4 embeds an IPv4 address
        || (seg[0..4] == [0, 0, 0, 0] && seg[4] == 0xffff && seg[5] == 0) // IPv4-translated
        || (seg[0..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible (deprecated)
}

/// What one attempt's result means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: delivered.
    Delivered,
    /// Try again after this many seconds.
    Retry { after_secs: u64 },
    /// No attempts left (or nothing more to try): the delivery failed.
    Failed,
    /// 410 Gone: the receiver asked us to stop; the endpoint is disabled.
    Gone,
}

/// What an attempt saw: an HTTP status (with `Retry-After` seconds if given) or no response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    Status {
        code: u16,
        retry_after_secs: Option<u64>,
    },
    /// Timeout, refused connection, TLS or DNS failure, forbidden address.
    NoResponse,
}

/// The verdict on attempt `n` (1-based, counted within its schedule).
pub fn judge(n: u32, result: AttemptResult) -> Verdict {
    let next = SCHEDULE_SECS.get(n as usize).copied();
    match result {
        AttemptResult::Status { code, .. } if (200..300).contains(&code) => Verdict::Delivered,
        AttemptResult::Status { code: 410, .. } => Verdict::Gone,
        AttemptResult::Status {
            code: 429 | 502 | 503 | 504,
            retry_after_secs: Some(ra),
        } => match next {
            Some(scheduled) => Verdict::Retry {
                after_secs: ra.clamp(scheduled.max(1), MAX_RETRY_AFTER_SECS.max(scheduled)),
            },
            None => Verdict::Failed,
        },
        _ => match next {
            Some(after_secs) => Verdict::Retry { after_secs },
            None => Verdict::Failed,
        },
    }
}

/// Cuts a response body for the log at a character boundary.
pub fn truncate_body(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(LOGGED_BODY_BYTES)]);
    let text = text.trim_end_matches('\u{FFFD}');
    // Replacement characters take three bytes: cut again, by bytes, at a char boundary.
    let mut end = text.len().min(LOGGED_BODY_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// A delivery keeps at most this many attempts (about 110 KB of log, well under DynamoDB's
/// item limit); redelivery beyond it is refused.
pub const MAX_ATTEMPTS_PER_DELIVERY: u32 = 100;

/// Every event type a customer can subscribe to, with what it carries.
pub const EVENT_TYPES: &[(&str, &str)] = &[
    (
        "task.succeeded",
        "a task produced its video; data is the task",
    ),
    (
        "task.failed",
        "a task failed and its unit price was refunded; data is the task",
    ),
    (
        "task.rejected",
        "the provider refused the prompt under its content policy (charged); data is the task",
    ),
    (
        "task.timed_out",
        "a task passed its deadline and was refunded; data is the task",
    ),
    (
        "task.cancelled",
        "a task was cancelled; data is the task, whose `charged` says whether its unit is \
         charged (it had reached a provider, contract 2.2) or was released",
    ),
    (
        "batch.completed",
        "every task of a batch ended and the batch settled; data is the batch",
    ),
    (
        "credits.refunded",
        "credits came back for a failed or timed-out task; data is the refund",
    ),
    (
        "credits.released",
        "credits came back for a task cancelled before it reached a provider; data is the release",
    ),
    (
        "credits.granted",
        "credits were added (a pack or a grant); data is the ledger entry",
    ),
    (
        "invoice.issued",
        "a paid purchase was invoiced (a numbered, immutable invoice); data is the invoice",
    ),
    (
        "payment.reversed",
        "a card payment was refunded or disputed and its credits taken back (as far as the \
         balance allowed; a shortfall flags the account); data names the payment and the entry",
    ),
    (
        "credits.low_balance",
        "the balance fell below the account's threshold; data is the credits summary",
    ),
    (
        "sla.compensation_issued",
        "a closed month earned SLA compensation and the credits were added (contract 3.5); \
         data names the month, the credits, the figures and the report",
    ),
    (
        "api_key.throttled",
        "an anomaly rule lowered an API key's rate limit for a while; data is the key",
    ),
    (
        "webhook_endpoint.disabled",
        "an endpoint was disabled (410 Gone, or failing for 5 days); data is the endpoint",
    ),
];

pub fn is_event_type(t: &str) -> bool {
    EVENT_TYPES.iter().any(|(name, _)| *name == t)
}

/// Whether an endpoint subscribed to `types` (None: everything) receives `event_type`.
pub fn subscribed(types: Option<&[String]>, event_type: &str) -> bool {
    types.is_none_or(|ts| ts.iter().any(|t| t == event_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Standard Webhooks specification's published example.
    const SPEC_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const SPEC_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const SPEC_TS: i64 = 1_649_367_553;
    const SPEC_BODY: &str = r#"{"email":"test@example.com","username":"test_user"}"#;
    const SPEC_SIG: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    #[test]
    fn signs_the_specifications_example() {
        let key = decode_secret(SPEC_SECRET).map_err(|e| e.to_string());
        assert_eq!(
            key.map(|k| sign(&k, SPEC_ID, SPEC_TS, SPEC_BODY.as_bytes())),
            Ok(SPEC_SIG.to_string())
        );
    }

    #[test]
    fn verifies_and_refuses() {
        let key = decode_secret(SPEC_SECRET).unwrap_or_default();
        let body = SPEC_BODY.as_bytes();
        assert_eq!(
            verify(&key, SPEC_ID, SPEC_TS, SPEC_SIG, body, SPEC_TS + 10),
            Ok(())
        );
        let both = format!("v1,bm90IHRoaXM= {SPEC_SIG}");
        assert_eq!(verify(&key, SPEC_ID, SPEC_TS, &both, body, SPEC_TS), Ok(()));
        assert_eq!(
            verify(&key, SPEC_ID, SPEC_TS, SPEC_SIG, b"{\"email\":1}", SPEC_TS),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(&key, "msg_other", SPEC_TS, SPEC_SIG, body, SPEC_TS),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(&key, SPEC_ID, SPEC_TS, SPEC_SIG, body, SPEC_TS + 301),
            Err(VerifyError::Stale)
        );
        let other = decode_secret(&secret_from([1; SECRET_BYTES])).unwrap_or_default();
        assert_eq!(
            verify(&other, SPEC_ID, SPEC_TS, SPEC_SIG, body, SPEC_TS),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn secrets_round_trip_and_bad_ones_are_refused() {
        let s = secret_from([2; SECRET_BYTES]);
        assert!(s.starts_with("whsec_"));
        assert_eq!(decode_secret(&s).map(|k| k.len()), Ok(32));
        assert_eq!(decode_secret("sk_abc"), Err(SecretError::Prefix));
        assert_eq!(decode_secret("whsec_!!!"), Err(SecretError::Encoding));
        assert_eq!(decode_secret("whsec_c2hvcnQ="), Err(SecretError::Length));
    }

    #[test]
    fn two_secrets_sign_side_by_side_during_a_rotation() {
        let old = SigningSecret {
            sealed: secret_from([3; SECRET_BYTES]),
            created_ms: 0,
            retires_ms: None,
        };
        let rotated = rotate(
            std::slice::from_ref(&old),
            secret_from([4; SECRET_BYTES]),
            1_000,
        );
        assert_eq!(rotated.len(), 2);
        let at = |t| {
            active_secrets(&rotated, t)
                .iter()
                .map(|s| s.sealed.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            at(1_000),
            vec![rotated[0].sealed.clone(), old.sealed.clone()]
        );
        assert_eq!(at(1_000 + ROTATION_OVERLAP_MS - 1).len(), 2);
        assert_eq!(
            at(1_000 + ROTATION_OVERLAP_MS),
            vec![rotated[0].sealed.clone()]
        );
        // Rotating twice in the overlap keeps the first retirement time and drops nothing early.
        let again = rotate(&rotated, secret_from([5; SECRET_BYTES]), 2_000);
        assert_eq!(again.len(), 3);
        assert_eq!(again[2].retires_ms, Some(1_000 + ROTATION_OVERLAP_MS));
        // After the overlap, a rotation forgets the retired secret.
        let later = rotate(
            &rotated,
            secret_from([6; SECRET_BYTES]),
            1_000 + ROTATION_OVERLAP_MS,
        );
        assert_eq!(later.len(), 2);
        let keys: Vec<Vec<u8>> = at(1_000)
            .iter()
            .map(|s| decode_secret(s).unwrap_or_default())
            .collect();
        let header = signature_header(&keys, "msg_1", 5, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        for k in &keys {
            assert_eq!(verify(k, "msg_1", 5, &header, b"{}", 5), Ok(()));
        }
    }

    #[test]
    fn urls_are_checked_for_scheme_and_address() {
        let cloud = UrlPolicy {
            allow_private: false,
        };
        let local = UrlPolicy {
            allow_private: true,
        };
        assert!(check_url("https://hooks.example.com/video", cloud).is_ok());
        assert_eq!(
            check_url("http://hooks.example.com/", cloud).err(),
            Some(UrlError::NotHttps)
        );
        assert!(check_url("http://127.0.0.1:8080/hook", local).is_ok());
        assert_eq!(
            check_url("ftp://example.com/", local).err(),
            Some(UrlError::NotHttps)
        );
        assert_eq!(
            check_url("https://user:pw@example.com/", cloud).err(),
            Some(UrlError::Credentials)
        );
        assert_eq!(check_url("not a url", cloud).err(), Some(UrlError::Invalid));
        for bad in [
            "https://127.0.0.1/",
            "https://10.1.2.3/",
            "https://172.16.0.1/",
            "https://192.168.1.1/",
            "https://169.254.169.254/latest/meta-data/",
            "https://100.64.0.1/",
            "https://0.0.0.0/",
            "https://[::1]/",
            "https://[fd00::1]/",
            "https://[fe80::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://[::ffff:a9fe:a9fe]/",
            "https://localhost/",
            "https://api.localhost/",
            "https://metadata.google.internal/",
            "https://2130706433/",
        ] {
            assert_eq!(
                check_url(bad, cloud).err(),
                Some(UrlError::ForbiddenAddress),
                "{bad}"
            );
        }
        assert!(!forbidden_ip(
            "93.184.216.34"
                .parse()
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
        ));
        assert!(!forbidden_ip(
            "2606:4700::1111"
                .parse()
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
        ));
    }

    #[test]
    fn the_schedule_spans_more_than_a_day_and_ends() {
        let total: u64 = SCHEDULE_SECS.iter().sum();
        assert!(total > 24 * 3_600, "{total}");
        let fail = AttemptResult::Status {
            code: 500,
            retry_after_secs: None,
        };
        assert_eq!(judge(1, fail), Verdict::Retry { after_secs: 5 });
        assert_eq!(judge(2, fail), Verdict::Retry { after_secs: 300 });
        assert_eq!(judge(7, fail), Verdict::Retry { after_secs: 36_000 });
        assert_eq!(judge(8, fail), Verdict::Failed);
        assert_eq!(
            judge(3, AttemptResult::NoResponse),
            Verdict::Retry { after_secs: 1_800 }
        );
        // 3xx is a failure: redirects are not followed.
        assert_eq!(
            judge(
                1,
                AttemptResult::Status {
                    code: 301,
                    retry_after_secs: None
                }
            ),
            Verdict::Retry { after_secs: 5 }
        );
        assert_eq!(
            judge(
                1,
                AttemptResult::Status {
                    code: 204,
                    retry_after_secs: None
                }
            ),
            Verdict::Delivered
        );
        assert_eq!(
            judge(
                4,
                AttemptResult::Status {
                    code: 410,
                    retry_after_secs: None
                }
            ),
            Verdict::Gone
        );
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let busy = |ra| AttemptResult::Status {
            code: 429,
            retry_after_secs: Some(ra),
        };
        // Longer than the schedule: wait as asked.
        assert_eq!(judge(1, busy(60)), Verdict::Retry { after_secs: 60 });
        // Absurdly long: capped at an hour.
        assert_eq!(judge(1, busy(86_400)), Verdict::Retry { after_secs: 3_600 });
        // Shorter than the schedule: the schedule still holds.
        assert_eq!(judge(3, busy(1)), Verdict::Retry { after_secs: 1_800 });
        // A late step longer than the cap keeps its own delay.
        assert_eq!(judge(6, busy(10)), Verdict::Retry { after_secs: 36_000 });
        assert_eq!(judge(8, busy(10)), Verdict::Failed);
    }

    #[test]
    fn subscriptions_and_bodies() {
        assert!(subscribed(None, "task.failed"));
        let only = vec!["batch.completed".to_string()];
        assert!(subscribed(Some(&only), "batch.completed"));
        assert!(!subscribed(Some(&only), "task.failed"));
        assert!(is_event_type("credits.low_balance"));
        assert!(!is_event_type("task.exploded"));
        let long = "é".repeat(600);
        let cut = truncate_body(long.as_bytes());
        assert!(cut.len() <= LOGGED_BODY_BYTES && cut.chars().all(|c| c == 'é'));
    }
}
