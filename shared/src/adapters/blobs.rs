//! S3: batch inputs, uploaded files, and presigned links for customers.

use super::{Store, StoreError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use std::time::Duration;

fn s3_err(op: &str, e: impl std::fmt::Debug) -> StoreError {
    StoreError::S3(format!("{op}: {e:?}"))
}

/// A presigned link and when it stops working.
pub struct Presigned {
    pub url: String,
    pub expires_in_secs: u64,
}

impl Store {
    pub async fn put_object(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<(), StoreError> {
        self.s3
            .put_object()
            .bucket(&self.config.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| s3_err("PutObject", e))?;
        Ok(())
    }

    /// Size of an object, or `None` when it does not exist.
    pub async fn object_size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match self
            .s3
            .head_object()
            .bucket(&self.config.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.content_length.unwrap_or(0).max(0) as u64)),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_not_found()) => Ok(None),
            Err(e) => Err(s3_err("HeadObject", e)),
        }
    }

    /// Reads a whole object; `None` when it does not exist.
    pub async fn get_object(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self
            .s3
            .get_object()
            .bucket(&self.config.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => {
                let bytes = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| s3_err("GetObject body", e))?;
                Ok(Some(bytes.into_bytes().to_vec()))
            }
            Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => Ok(None),
            Err(e) => Err(s3_err("GetObject", e)),
        }
    }

    /// A download link that saves as `filename`.
    pub async fn presign_get(&self, key: &str, filename: &str) -> Result<Presigned, StoreError> {
        let ttl = self.config.presign_ttl_secs;
        let conf = PresigningConfig::expires_in(Duration::from_secs(ttl))
            .map_err(|e| s3_err("presign", e))?;
        let req = self
            .s3
            .get_object()
            .bucket(&self.config.bucket)
            .key(key)
            .response_content_disposition(format!("attachment; filename=\"{filename}\""))
            .presigned(conf)
            .await
            .map_err(|e| s3_err("presign GetObject", e))?;
        Ok(Presigned {
            url: req.uri().to_string(),
            expires_in_secs: ttl,
        })
    }

    pub async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
    ) -> Result<Presigned, StoreError> {
        let ttl = self.config.presign_ttl_secs;
        let conf = PresigningConfig::expires_in(Duration::from_secs(ttl))
            .map_err(|e| s3_err("presign", e))?;
        let req = self
            .s3
            .put_object()
            .bucket(&self.config.bucket)
            .key(key)
            .content_type(content_type)
            .presigned(conf)
            .await
            .map_err(|e| s3_err("presign PutObject", e))?;
        Ok(Presigned {
            url: req.uri().to_string(),
            expires_in_secs: ttl,
        })
    }
}
