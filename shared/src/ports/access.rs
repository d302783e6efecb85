//! Access: API keys, rate-limit windows and address blocks, and the usage log
//! (`enterprise_api_usage`). All of it is shared across Lambda instances.

use super::common::{Listed, PageToken, PortResult, Slice, TimeRange};
use super::records::{AccountRecord, ApiKeyRecord, SessionRecord, Throttle, UsageRecord};
use crate::domain::access::KeyMinute;
use async_trait::async_trait;

/// A change to a key; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub rate_limit_per_min: Option<u32>,
    /// `Some(empty)` removes the allowlist.
    pub ip_allowlist: Option<Vec<String>>,
    /// An operator's change: a key an operator disabled only an operator enables again.
    pub by_operator: bool,
}

#[async_trait]
pub trait Keys: Send + Sync {
    /// By the SHA-256 of the secret, strongly consistent (a disabled key stops at once).
    async fn get(&self, key_hash: &str) -> PortResult<Option<ApiKeyRecord>>;
    /// The key and an account in one round trip, both strongly consistent: the account the
    /// caller knows the key belongs to (a key never changes account), so that admitting a
    /// request needs one read instead of two. Either may be absent.
    async fn get_with_account(
        &self,
        key_hash: &str,
        account_id: &str,
    ) -> PortResult<(Option<ApiKeyRecord>, Option<AccountRecord>)>;
    /// Creates a key (its hash must be new).
    async fn put(&self, rec: &ApiKeyRecord) -> PortResult<()>;
    /// All of an account's keys, through an index: eventually consistent.
    async fn list(&self, account_id: &str) -> PortResult<Vec<ApiKeyRecord>>;
    /// One key of an account by its id, in its current state; `None` for another account's
    /// key or none at all.
    async fn find(&self, account_id: &str, key_id: &str) -> PortResult<Option<ApiKeyRecord>>;
    /// Applies a change to a key that is not revoked (and, for a customer's change, not
    /// disabled by an operator or by termination); `None` if refused or gone.
    async fn patch(
        &self,
        key_hash: &str,
        patch: &KeyPatch,
        now_ms: i64,
    ) -> PortResult<Option<ApiKeyRecord>>;
    /// Revokes for good; `None` if it was revoked already or is gone.
    async fn revoke(&self, key_hash: &str, now_ms: i64) -> PortResult<Option<ApiKeyRecord>>;
    /// Throttles a key unless a throttle is in force at `t.since_ms`; true when this did it.
    async fn throttle(&self, key_hash: &str, t: &Throttle) -> PortResult<bool>;
    async fn lift_throttle(&self, key_hash: &str) -> PortResult<bool>;
    /// Termination and reinstatement: disables the account's enabled keys with `reason`, or
    /// re-enables the (unrevoked) ones disabled for `reason`. Returns how many changed.
    async fn set_all_for_account(
        &self,
        account_id: &str,
        enable: bool,
        reason: &str,
        now_ms: i64,
    ) -> PortResult<usize>;
}

/// An address block in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpBlock {
    pub until_ms: i64,
    pub reason: String,
}

/// An address range an operator exempted from address blocks: a fuzzer in CI, a monitoring
/// probe, an office's shared address. Its failed authentications are still counted and
/// still refused; only the block does not follow.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlockExemption {
    /// A CIDR block (`203.0.113.0/24`, `2001:db8::/48`) or one address.
    pub cidr: String,
    pub reason: String,
    pub created_ms: i64,
}

/// The whole list (it is short, and changes rarely) with the version it was read at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exemptions {
    pub version: u64,
    pub list: Vec<BlockExemption>,
}

/// Requests admitted in one minute: by the key, and by its whole account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowCounts {
    pub key: u64,
    pub account: u64,
}

/// What a minute may still hold in all: the key's cap and its account's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    pub key: u64,
    pub account: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Counted: the counts with this request.
    Admitted(WindowCounts),
    /// Refused by the key's own limit; nothing counted. With the window's counts as they
    /// stood when the refusal read them (`None` when a cap of zero refused it unread).
    KeyFull(Option<WindowCounts>),
    /// Refused by the account's budget; nothing counted. Counts as for `KeyFull`.
    AccountFull(Option<WindowCounts>),
}

/// A minute's error classes, for the anomaly rules: the key's and its account's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MinuteErrors {
    pub key: KeyMinute,
    pub account: KeyMinute,
}

/// One item per account and minute holds the account's counts and each key's, so admitting
/// a request against both the key's limit and the account's budget is one conditional write.
/// Console sessions (see `service::console`).
#[async_trait]
pub trait Sessions: Send + Sync {
    /// Stores a new session (its hash is fresh randomness: never there before).
    async fn create(&self, rec: &SessionRecord) -> PortResult<()>;
    /// By the SHA-256 of its id, strongly consistent (a signed-out session stops at once).
    async fn get(&self, session_hash: &str) -> PortResult<Option<SessionRecord>>;
    /// Ends a session; true if it was still open.
    async fn end(&self, session_hash: &str, now_ms: i64) -> PortResult<bool>;
}

#[async_trait]
pub trait RateWindows: Send + Sync {
    /// Admits one request if the key's count is below `caps.key` and the account's below
    /// `caps.account`.
    async fn admit(
        &self,
        account_id: &str,
        key_id: &str,
        window_start: i64,
        caps: Caps,
    ) -> PortResult<Admission>;
    /// Requests admitted in one minute.
    async fn count(
        &self,
        account_id: &str,
        key_id: &str,
        window_start: i64,
    ) -> PortResult<WindowCounts>;
    /// Counts an answered request's error class; returns the minute so far.
    async fn count_errors(
        &self,
        account_id: &str,
        key_id: &str,
        window_start: i64,
        client_error: bool,
        payment_required: bool,
    ) -> PortResult<MinuteErrors>;
    /// Blocks an address until `until_ms` unless a block is in force; true when this did it.
    async fn block_ip(
        &self,
        ip: &str,
        reason: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> PortResult<bool>;
    /// The block in force on an address at `now_ms`.
    async fn ip_block(&self, ip: &str, now_ms: i64) -> PortResult<Option<IpBlock>>;
    /// Lifts a block; true if there was one.
    async fn unblock_ip(&self, ip: &str) -> PortResult<bool>;
    /// Takes one of the `cap` shares of `pool` for `holder` until `until_ms`: a lease, so the
    /// share of a holder that died frees itself then. The share's number, or `None` when all
    /// `cap` are held at `now_ms`. Strongly consistent: at most `cap` holders at any time.
    async fn take_share(
        &self,
        pool: &str,
        holder: &str,
        cap: u32,
        now_ms: i64,
        until_ms: i64,
    ) -> PortResult<Option<u32>>;
    /// Gives share `slot` of `pool` back if `holder` still holds it.
    async fn give_back_share(&self, pool: &str, slot: u32, holder: &str) -> PortResult<()>;
    /// The operator's exemptions from address blocks (version 0: none ever set).
    async fn exemptions(&self) -> PortResult<Exemptions>;
    /// Replaces the list if it is still at `expected_version`; false if it changed meanwhile.
    async fn set_exemptions(
        &self,
        expected_version: u64,
        list: &[BlockExemption],
    ) -> PortResult<bool>;
}

/// Filters of the usage log; `None` matches anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageFilter {
    pub key_id: Option<String>,
    pub route: Option<String>,
    pub status: Option<u16>,
    pub kind: Option<String>,
}

impl UsageFilter {
    pub fn matches(&self, u: &UsageRecord) -> bool {
        self.key_id
            .as_ref()
            .is_none_or(|k| u.key_id.as_ref() == Some(k))
            && self.route.as_ref().is_none_or(|r| &u.route == r)
            && self.status.is_none_or(|s| u.status == s)
            && self.kind.as_ref().is_none_or(|k| &u.kind == k)
    }
}

#[async_trait]
pub trait Usage: Send + Sync {
    /// One call (or anomaly action). A request record is written once; an anomaly record
    /// may be written again (its id is derived from what happened).
    async fn put(&self, rec: &UsageRecord) -> PortResult<()>;
    /// An account's records at times within `range`, newest first, after filters.
    async fn list(
        &self,
        account_id: &str,
        range: TimeRange,
        filter: &UsageFilter,
        limit: usize,
        before: Option<String>,
    ) -> PortResult<Listed<UsageRecord>>;
    /// Oldest first, a page at a time; eventually consistent.
    async fn page(
        &self,
        account_id: &str,
        range: TimeRange,
        after: Option<PageToken>,
    ) -> PortResult<Slice<UsageRecord>>;
}
