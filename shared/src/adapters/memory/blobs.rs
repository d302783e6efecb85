//! Blob storage in memory, with S3's multipart semantics (parts assembled in order on
//! completion; an aborted upload leaves nothing).

use crate::ports::blobs::{Presigned, Upload};
use crate::ports::{Blobs, PortResult, StoreError};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    pub bytes: Vec<u8>,
    pub content_type: String,
    pub tags: Option<String>,
}

struct Pending {
    key: String,
    content_type: String,
    tags: String,
    parts: BTreeMap<i32, Vec<u8>>,
}

#[derive(Default)]
struct Bucket {
    objects: BTreeMap<String, Object>,
    uploads: BTreeMap<String, Pending>,
    next_upload: u64,
}

pub struct MemoryBlobs {
    inner: Mutex<Bucket>,
    presign_ttl_secs: u64,
}

impl Default for MemoryBlobs {
    fn default() -> Self {
        MemoryBlobs {
            inner: Mutex::new(Bucket::default()),
            presign_ttl_secs: 3_600,
        }
    }
}

fn s3_err(op: &'static str, detail: &str) -> StoreError {
    StoreError::S3 {
        op,
        detail: detail.to_string(),
    }
}

impl MemoryBlobs {
    fn lock(&self) -> MutexGuard<'_, Bucket> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// An object as stored (tests read tags and content types).
    pub fn object(&self, key: &str) -> Option<Object> {
        self.lock().objects.get(key).cloned()
    }

    /// Keys under a prefix.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.lock()
            .objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Multipart uploads begun and neither completed nor aborted.
    pub fn open_uploads(&self) -> usize {
        self.lock().uploads.len()
    }

    fn link(&self, verb: &str, key: &str) -> Presigned {
        Presigned {
            url: format!(
                "memory://bucket/{key}?X-Amz-Expires={}&verb={verb}",
                self.presign_ttl_secs
            ),
            expires_in_secs: self.presign_ttl_secs,
            headers: Vec::new(),
        }
    }
}

#[async_trait]
impl Blobs for MemoryBlobs {
    async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        tags: Option<&str>,
    ) -> PortResult<()> {
        self.lock().objects.insert(
            key.to_string(),
            Object {
                bytes: body,
                content_type: content_type.to_string(),
                tags: tags.map(str::to_string),
            },
        );
        Ok(())
    }

    async fn size(&self, key: &str) -> PortResult<Option<u64>> {
        Ok(self.lock().objects.get(key).map(|o| o.bytes.len() as u64))
    }

    async fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>> {
        Ok(self.lock().objects.get(key).map(|o| o.bytes.clone()))
    }

    async fn presign_get(&self, key: &str, _filename: &str) -> PortResult<Presigned> {
        Ok(self.link("GET", key))
    }

    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        tags: &str,
    ) -> PortResult<Presigned> {
        let mut link = self.link("PUT", key);
        link.headers = vec![
            ("content-type".into(), content_type.to_string()),
            ("x-amz-tagging".into(), tags.to_string()),
        ];
        Ok(link)
    }

    async fn start_upload(&self, key: &str, content_type: &str, tags: &str) -> PortResult<Upload> {
        let mut b = self.lock();
        b.next_upload += 1;
        let upload_id = format!("upload-{}", b.next_upload);
        b.uploads.insert(
            upload_id.clone(),
            Pending {
                key: key.to_string(),
                content_type: content_type.to_string(),
                tags: tags.to_string(),
                parts: BTreeMap::new(),
            },
        );
        Ok(Upload {
            key: key.to_string(),
            upload_id,
            parts: Vec::new(),
        })
    }

    async fn upload_part(&self, u: &mut Upload, body: Vec<u8>) -> PortResult<()> {
        let number = i32::try_from(u.parts.len() + 1).unwrap_or(i32::MAX);
        let mut b = self.lock();
        let pending = b
            .uploads
            .get_mut(&u.upload_id)
            .ok_or_else(|| s3_err("UploadPart", "NoSuchUpload"))?;
        pending.parts.insert(number, body);
        u.parts.push((number, format!("\"etag-{number}\"")));
        Ok(())
    }

    async fn complete_upload(&self, u: Upload) -> PortResult<()> {
        let mut b = self.lock();
        let pending = b
            .uploads
            .remove(&u.upload_id)
            .ok_or_else(|| s3_err("CompleteMultipartUpload", "NoSuchUpload"))?;
        let mut bytes = Vec::new();
        for (number, _) in &u.parts {
            let part = pending
                .parts
                .get(number)
                .ok_or_else(|| s3_err("CompleteMultipartUpload", "InvalidPart"))?;
            bytes.extend_from_slice(part);
        }
        b.objects.insert(
            pending.key,
            Object {
                bytes,
                content_type: pending.content_type,
                tags: Some(pending.tags),
            },
        );
        Ok(())
    }

    async fn abort_upload(&self, _key: &str, upload_id: &str) -> PortResult<()> {
        self.lock()
            .uploads
            .remove(upload_id)
            .map(|_| ())
            .ok_or_else(|| s3_err("AbortMultipartUpload", "NoSuchUpload"))
    }
}
