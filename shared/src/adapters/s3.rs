//! The S3 adapter of the `Blobs` port: one bucket, objects under `accounts/{account_id}/`.

use crate::ports::blobs::{Presigned, Upload};
use crate::ports::{Blobs, PortResult, StoreError};
use async_trait::async_trait;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use std::time::Duration;

fn s3_err(op: &'static str, e: impl std::fmt::Debug) -> StoreError {
    StoreError::S3 {
        op,
        detail: format!("{e:?}"),
    }
}

#[derive(Clone)]
pub struct S3 {
    s3: Client,
    bucket: String,
    /// How long presigned upload and download links stay valid, in seconds.
    presign_ttl_secs: u64,
}

impl S3 {
    pub fn new(s3: Client, bucket: String, presign_ttl_secs: u64) -> Self {
        S3 {
            s3,
            bucket,
            presign_ttl_secs,
        }
    }

    fn presigning(&self) -> PortResult<PresigningConfig> {
        PresigningConfig::expires_in(Duration::from_secs(self.presign_ttl_secs))
            .map_err(|e| s3_err("presign", e))
    }
}

#[async_trait]
impl Blobs for S3 {
    async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        tags: Option<&str>,
    ) -> PortResult<()> {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .set_tagging(tags.map(str::to_string))
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| s3_err("PutObject", e))?;
        Ok(())
    }

    async fn size(&self, key: &str) -> PortResult<Option<u64>> {
        match self
            .s3
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.content_length.unwrap_or(0).max(0) as u64)),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_not_found()) => Ok(None),
            Err(e) => Err(s3_err("HeadObject", e)),
        }
    }

    async fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>> {
        match self
            .s3
            .get_object()
            .bucket(&self.bucket)
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

    async fn presign_get(&self, key: &str, filename: &str) -> PortResult<Presigned> {
        let req = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .response_content_disposition(format!("attachment; filename=\"{filename}\""))
            .presigned(self.presigning()?)
            .await
            .map_err(|e| s3_err("presign GetObject", e))?;
        Ok(Presigned {
            url: req.uri().to_string(),
            expires_in_secs: self.presign_ttl_secs,
            headers: Vec::new(),
        })
    }

    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        tags: &str,
    ) -> PortResult<Presigned> {
        // The tags become a signed `x-amz-tagging` header: S3 refuses an upload without it,
        // so no object reaches the bucket without the retention its lifecycle rules match.
        let req = self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .tagging(tags)
            .presigned(self.presigning()?)
            .await
            .map_err(|e| s3_err("presign PutObject", e))?;
        let headers = req
            .headers()
            .filter(|(name, _)| !name.eq_ignore_ascii_case("host"))
            .map(|(name, value)| (name.to_ascii_lowercase(), value.to_string()))
            .collect();
        Ok(Presigned {
            url: req.uri().to_string(),
            expires_in_secs: self.presign_ttl_secs,
            headers,
        })
    }

    async fn start_upload(&self, key: &str, content_type: &str, tags: &str) -> PortResult<Upload> {
        let out = self
            .s3
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .tagging(tags)
            .send()
            .await
            .map_err(|e| s3_err("CreateMultipartUpload", e))?;
        let upload_id = out.upload_id.ok_or_else(|| StoreError::S3 {
            op: "CreateMultipartUpload",
            detail: "no upload id".into(),
        })?;
        Ok(Upload {
            key: key.to_string(),
            upload_id,
            parts: Vec::new(),
        })
    }

    async fn upload_part(&self, m: &mut Upload, body: Vec<u8>) -> PortResult<()> {
        let number = i32::try_from(m.parts.len() + 1).unwrap_or(i32::MAX);
        let out = self
            .s3
            .upload_part()
            .bucket(&self.bucket)
            .key(&m.key)
            .upload_id(&m.upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| s3_err("UploadPart", e))?;
        m.parts.push((number, out.e_tag.unwrap_or_default()));
        Ok(())
    }

    async fn complete_upload(&self, m: Upload) -> PortResult<()> {
        let parts = m
            .parts
            .iter()
            .map(|(number, etag)| {
                CompletedPart::builder()
                    .e_tag(etag)
                    .part_number(*number)
                    .build()
            })
            .collect();
        self.s3
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&m.key)
            .upload_id(&m.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| s3_err("CompleteMultipartUpload", e))?;
        Ok(())
    }

    async fn abort_upload(&self, key: &str, upload_id: &str) -> PortResult<()> {
        self.s3
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| s3_err("AbortMultipartUpload", e))?;
        Ok(())
    }
}
