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

    /// The same, with S3 object tags (`k=v&k2=v2`) for lifecycle rules.
    pub async fn put_object_tagged(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        tags: &str,
    ) -> Result<(), StoreError> {
        self.s3
            .put_object()
            .bucket(&self.config.bucket)
            .key(key)
            .content_type(content_type)
            .tagging(tags)
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

/// An S3 multipart upload in progress: parts go up as they fill, so an export of any size
/// holds at most one part in memory.
pub struct Multipart {
    pub key: String,
    pub upload_id: String,
    parts: Vec<aws_sdk_s3::types::CompletedPart>,
}

impl Multipart {
    pub fn parts_len(&self) -> usize {
        self.parts.len()
    }
}

impl Store {
    pub async fn start_multipart(
        &self,
        key: &str,
        content_type: &str,
        tags: &str,
    ) -> Result<Multipart, StoreError> {
        let out = self
            .s3
            .create_multipart_upload()
            .bucket(&self.config.bucket)
            .key(key)
            .content_type(content_type)
            .tagging(tags)
            .send()
            .await
            .map_err(|e| s3_err("CreateMultipartUpload", e))?;
        let upload_id = out
            .upload_id
            .ok_or_else(|| StoreError::S3("CreateMultipartUpload: no upload id".into()))?;
        Ok(Multipart {
            key: key.to_string(),
            upload_id,
            parts: Vec::new(),
        })
    }

    pub async fn upload_part(&self, m: &mut Multipart, body: Vec<u8>) -> Result<(), StoreError> {
        let number = i32::try_from(m.parts.len() + 1).unwrap_or(i32::MAX);
        let out = self
            .s3
            .upload_part()
            .bucket(&self.config.bucket)
            .key(&m.key)
            .upload_id(&m.upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| s3_err("UploadPart", e))?;
        m.parts.push(
            aws_sdk_s3::types::CompletedPart::builder()
                .set_e_tag(out.e_tag)
                .part_number(number)
                .build(),
        );
        Ok(())
    }

    pub async fn complete_multipart(&self, m: Multipart) -> Result<(), StoreError> {
        self.s3
            .complete_multipart_upload()
            .bucket(&self.config.bucket)
            .key(&m.key)
            .upload_id(&m.upload_id)
            .multipart_upload(
                aws_sdk_s3::types::CompletedMultipartUpload::builder()
                    .set_parts(Some(m.parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| s3_err("CompleteMultipartUpload", e))?;
        Ok(())
    }

    /// Gives up an upload (a crashed export's leftovers also expire by lifecycle rule).
    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        self.s3
            .abort_multipart_upload()
            .bucket(&self.config.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| s3_err("AbortMultipartUpload", e))?;
        Ok(())
    }
}
