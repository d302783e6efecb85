//! What every `Sealer` adapter is wrapped in: opened secrets are remembered for the life of
//! the instance (a warm Lambda signs every delivery to an endpoint with one KMS `Decrypt`,
//! not one per delivery), and a function with no key refuses clearly.

use crate::ports::sealer::{SealContext, Sealer};
use crate::ports::{PortResult, StoreError};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

/// Opened secrets kept at most (an instance serves a few thousand endpoints at most; past
/// this the memory starts over rather than growing without bound).
const REMEMBER_AT_MOST: usize = 10_000;

/// A sealer that opens each (sealed value, context) once per instance: concurrent first
/// uses (a batch of deliveries to one endpoint) wait for the one open in flight.
pub struct Remembered {
    inner: Arc<dyn Sealer>,
    opened: Mutex<HashMap<String, Arc<OnceCell<String>>>>,
}

impl Remembered {
    pub fn new(inner: Arc<dyn Sealer>) -> Self {
        Remembered {
            inner,
            opened: Mutex::new(HashMap::new()),
        }
    }
}

/// The memory's key: the sealed value and its context, unambiguously joined.
fn memo_key(sealed: &str, context: &SealContext<'_>) -> String {
    let mut k = String::with_capacity(sealed.len() + 64);
    k.push_str(sealed);
    for (name, value) in context {
        k.push('\0');
        k.push_str(name);
        k.push('\u{1}');
        k.push_str(value);
    }
    k
}

#[async_trait]
impl Sealer for Remembered {
    async fn seal(&self, plaintext: &str, context: &SealContext<'_>) -> PortResult<String> {
        self.inner.seal(plaintext, context).await
    }

    async fn open(&self, sealed: &str, context: &SealContext<'_>) -> PortResult<String> {
        let key = memo_key(sealed, context);
        let cell = {
            // A poisoned lock only means another thread panicked mid-insert: the map is
            // still a valid cache.
            let mut m = self.opened.lock().unwrap_or_else(|p| p.into_inner());
            if m.len() >= REMEMBER_AT_MOST && !m.contains_key(&key) {
                m.clear();
            }
            m.entry(key).or_default().clone()
        };
        // A failed open leaves the cell empty: the next use asks again.
        cell.get_or_try_init(|| self.inner.open(sealed, context))
            .await
            .cloned()
    }
}

/// The sealer of a function the template gives no key (only the API and webhook dispatch
/// have one): any use is a configuration error, said plainly.
pub struct NoKey;

#[async_trait]
impl Sealer for NoKey {
    async fn seal(&self, _: &str, _: &SealContext<'_>) -> PortResult<String> {
        Err(no_key("Encrypt"))
    }

    async fn open(&self, _: &str, _: &SealContext<'_>) -> PortResult<String> {
        Err(no_key("Decrypt"))
    }
}

fn no_key(op: &'static str) -> StoreError {
    StoreError::Kms {
        op,
        detail: "this function has no key for webhook secrets (WEBHOOK_SECRETS_KEY unset)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory::MemorySealer;

    #[tokio::test]
    async fn each_secret_is_opened_once_per_instance() {
        let inner = Arc::new(MemorySealer::new([7; 32]));
        let s = Remembered::new(inner.clone());
        let ctx = [("account_id", "acct_1"), ("endpoint_id", "ep_1")];
        let sealed = s.seal("whsec_abc", &ctx).await.unwrap();
        for _ in 0..5 {
            assert_eq!(s.open(&sealed, &ctx).await.unwrap(), "whsec_abc");
        }
        assert_eq!(inner.opens(), 1);
        // Another context is another key: it reaches the inner sealer, which refuses it.
        let other = [("account_id", "acct_2"), ("endpoint_id", "ep_1")];
        assert!(s.open(&sealed, &other).await.is_err());
        assert_eq!(inner.opens(), 2);
    }

    /// Yields before each open, as a KMS request would, so concurrent callers interleave.
    struct Slow(Arc<MemorySealer>);

    #[async_trait]
    impl Sealer for Slow {
        async fn seal(&self, p: &str, c: &SealContext<'_>) -> PortResult<String> {
            self.0.seal(p, c).await
        }
        async fn open(&self, s: &str, c: &SealContext<'_>) -> PortResult<String> {
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            self.0.open(s, c).await
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_first_uses_share_one_open() {
        let inner = Arc::new(MemorySealer::new([7; 32]));
        let s = Arc::new(Remembered::new(Arc::new(Slow(inner.clone()))));
        let ctx = [("account_id", "acct_1"), ("endpoint_id", "ep_1")];
        let sealed = s.seal("whsec_abc", &ctx).await.unwrap();
        let opens = (0..10).map(|_| {
            let (s, sealed) = (s.clone(), sealed.clone());
            tokio::spawn(async move { s.open(&sealed, &ctx).await })
        });
        for o in futures_util::future::join_all(opens).await {
            assert_eq!(o.unwrap().unwrap(), "whsec_abc");
        }
        assert_eq!(inner.opens(), 1);
    }

    #[tokio::test]
    async fn a_function_without_a_key_says_so() {
        let e = NoKey.open("kms1:AAAA", &[]).await.unwrap_err();
        assert!(e.to_string().contains("WEBHOOK_SECRETS_KEY"), "{e}");
    }
}
