//! The in-memory twin of the KMS sealer: real authenticated encryption under a key held in
//! the process (HMAC-SHA256 as keystream and tag, encrypt-then-MAC), so tests see what the
//! cloud gives: a sealed value shows nothing of the secret, and opening it with another
//! context, or after damage, fails. It counts opens, so tests can see the per-instance memory
//! of [`crate::adapters::sealing::Remembered`] work.

use crate::ports::sealer::{SealContext, Sealer};
use crate::ports::{PortResult, StoreError};
use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::atomic::{AtomicU64, Ordering};

const PREFIX: &str = "mem1:";
const TAG_LEN: usize = 16;

pub struct MemorySealer {
    key: [u8; 32],
    /// Nonces: distinct per seal, deterministic (the simulator replays runs by seed).
    next_nonce: AtomicU64,
    opens: AtomicU64,
}

impl MemorySealer {
    pub fn new(key: [u8; 32]) -> Self {
        MemorySealer {
            key,
            next_nonce: AtomicU64::new(1),
            opens: AtomicU64::new(0),
        }
    }

    /// How many times `open` was called.
    pub fn opens(&self) -> u64 {
        self.opens.load(Ordering::SeqCst)
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        // HMAC takes a key of any length: new_from_slice cannot fail.
        let Ok(mut m) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return [0; 32];
        };
        for p in parts {
            m.update(&(p.len() as u64).to_be_bytes());
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }

    fn xor_stream(&self, nonce: &[u8], data: &mut [u8]) {
        for (i, chunk) in data.chunks_mut(32).enumerate() {
            let block = self.mac(&[b"stream", nonce, &(i as u64).to_be_bytes()]);
            for (b, k) in chunk.iter_mut().zip(block) {
                *b ^= k;
            }
        }
    }

    fn tag(&self, nonce: &[u8], context: &SealContext<'_>, ct: &[u8]) -> [u8; 32] {
        let mut parts: Vec<&[u8]> = vec![b"tag", nonce];
        for (k, v) in context {
            parts.push(k.as_bytes());
            parts.push(v.as_bytes());
        }
        parts.push(ct);
        self.mac(&parts)
    }
}

#[async_trait]
impl Sealer for MemorySealer {
    async fn seal(&self, plaintext: &str, context: &SealContext<'_>) -> PortResult<String> {
        let nonce = self.next_nonce.fetch_add(1, Ordering::SeqCst).to_be_bytes();
        let mut ct = plaintext.as_bytes().to_vec();
        self.xor_stream(&nonce, &mut ct);
        let tag = self.tag(&nonce, context, &ct);
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        out.extend_from_slice(&tag[..TAG_LEN]);
        Ok(format!("{PREFIX}{}", STANDARD.encode(out)))
    }

    async fn open(&self, sealed: &str, context: &SealContext<'_>) -> PortResult<String> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        let raw = sealed
            .strip_prefix(PREFIX)
            .and_then(|b| STANDARD.decode(b).ok())
            .filter(|r| r.len() >= 8 + TAG_LEN)
            .ok_or_else(|| StoreError::Corrupt("a sealed secret is not mem1:base64".into()))?;
        let (nonce, rest) = raw.split_at(8);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        let want = self.tag(nonce, context, ct);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(tag, &want[..TAG_LEN])) {
            // The words KMS uses for the same refusal.
            return Err(StoreError::Kms {
                op: "Decrypt",
                detail: "InvalidCiphertextException: the sealed value does not open in this \
                         context"
                    .into(),
            });
        }
        let mut plain = ct.to_vec();
        self.xor_stream(nonce, &mut plain);
        String::from_utf8(plain)
            .map_err(|_| StoreError::Corrupt("a sealed secret opened to non-UTF-8".into()))
    }
}
