//! The `Sealer` port over AWS KMS: `Encrypt` / `Decrypt` with a symmetric key and the
//! context as KMS's encryption context (authenticated, logged by CloudTrail, never secret).
//! A sealed value reads `kms1:` + base64 of the ciphertext blob, which names its key, so a
//! key rotation (KMS keeps old key material) needs no re-encryption.
//!
//! Opening costs a KMS request; [`super::sealing::Remembered`] in front of this keeps each
//! opened secret for the life of the instance.

use crate::ports::sealer::{SealContext, Sealer};
use crate::ports::{PortResult, StoreError};
use async_trait::async_trait;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

const PREFIX: &str = "kms1:";

pub struct Kms {
    client: aws_sdk_kms::Client,
    /// A key id, ARN or alias: `Encrypt` needs it; `Decrypt` reads it from the blob.
    key_id: String,
}

impl Kms {
    pub fn new(client: aws_sdk_kms::Client, key_id: String) -> Self {
        Kms { client, key_id }
    }
}

fn kms_err<E: ProvideErrorMetadata + std::fmt::Debug>(
    op: &'static str,
    e: SdkError<E>,
) -> StoreError {
    StoreError::Kms {
        op,
        detail: super::sdk_detail(&e),
    }
}

fn context_map(context: &SealContext<'_>) -> std::collections::HashMap<String, String> {
    context
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[async_trait]
impl Sealer for Kms {
    async fn seal(&self, plaintext: &str, context: &SealContext<'_>) -> PortResult<String> {
        let out = self
            .client
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(Blob::new(plaintext.as_bytes()))
            .set_encryption_context(Some(context_map(context)))
            .send()
            .await
            .map_err(|e| kms_err("Encrypt", e))?;
        let blob = out.ciphertext_blob.ok_or_else(|| StoreError::Kms {
            op: "Encrypt",
            detail: "no ciphertext in the answer".into(),
        })?;
        Ok(format!("{PREFIX}{}", STANDARD.encode(blob.as_ref())))
    }

    async fn open(&self, sealed: &str, context: &SealContext<'_>) -> PortResult<String> {
        let blob = sealed
            .strip_prefix(PREFIX)
            .and_then(|b| STANDARD.decode(b).ok())
            .ok_or_else(|| StoreError::Corrupt("a sealed secret is not kms1:base64".into()))?;
        let out = self
            .client
            .decrypt()
            .ciphertext_blob(Blob::new(blob))
            .set_encryption_context(Some(context_map(context)))
            .send()
            .await
            .map_err(|e| kms_err("Decrypt", e))?;
        let plain = out.plaintext.ok_or_else(|| StoreError::Kms {
            op: "Decrypt",
            detail: "no plaintext in the answer".into(),
        })?;
        String::from_utf8(plain.into_inner())
            .map_err(|_| StoreError::Corrupt("a sealed secret opened to non-UTF-8".into()))
    }
}
