//! Blob storage: batch inputs, uploaded files, videos and exports, under each account's
//! prefix; presigned links for customers.

use super::common::PortResult;
use async_trait::async_trait;

/// A presigned link and how long it works.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presigned {
    pub url: String,
    pub expires_in_secs: u64,
    /// Headers the request must carry as they are (they are part of the signature).
    pub headers: Vec<(String, String)>,
}

/// A multipart upload in progress: parts go up as they fill, so a file of any size holds at
/// most one part in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    pub key: String,
    pub upload_id: String,
    /// (part number, entity tag) of each part sent.
    pub parts: Vec<(i32, String)>,
}

#[async_trait]
pub trait Blobs: Send + Sync {
    /// Writes an object; `tags` (`k=v&k2=v2`) are what the lifecycle rules match.
    async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        tags: Option<&str>,
    ) -> PortResult<()>;
    /// Size of an object, or `None` when it does not exist.
    async fn size(&self, key: &str) -> PortResult<Option<u64>>;
    /// A whole object, or `None` when it does not exist.
    async fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>>;
    /// A download link that saves as `filename`.
    async fn presign_get(&self, key: &str, filename: &str) -> PortResult<Presigned>;
    /// An upload link for one PUT of `content_type`.
    /// A link to upload one object, which will carry `tags` (so the uploader must send the
    /// link's `headers`).
    async fn presign_put(&self, key: &str, content_type: &str, tags: &str)
        -> PortResult<Presigned>;
    async fn start_upload(&self, key: &str, content_type: &str, tags: &str) -> PortResult<Upload>;
    async fn upload_part(&self, upload: &mut Upload, body: Vec<u8>) -> PortResult<()>;
    async fn complete_upload(&self, upload: Upload) -> PortResult<()>;
    async fn abort_upload(&self, key: &str, upload_id: &str) -> PortResult<()>;
}
