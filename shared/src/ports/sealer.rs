//! Sealing: secrets we must be able to read back (webhook signing secrets) are stored only
//! encrypted, each bound to whose secret it is, and opened only where they are used.

use super::common::PortResult;
use async_trait::async_trait;

/// Whose secret a sealed value is: pairs that must match when it is opened (KMS's
/// encryption context), so a sealed value copied into another endpoint's record opens
/// nowhere.
pub type SealContext<'a> = [(&'a str, &'a str)];

#[async_trait]
pub trait Sealer: Send + Sync {
    /// `plaintext` encrypted for storage, bound to `context`. Text safe to store as is.
    async fn seal(&self, plaintext: &str, context: &SealContext<'_>) -> PortResult<String>;
    /// The plaintext of a value [`seal`](Sealer::seal) made with the same `context`; an error
    /// for anything else (another context, a damaged value, a key we may not use).
    async fn open(&self, sealed: &str, context: &SealContext<'_>) -> PortResult<String>;
}
