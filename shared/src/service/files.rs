//! Input files: the way past the 6 MB request body limit. The customer asks for an upload
//! link, PUTs a JSON Lines file of tasks to S3, then names the file in `POST /v1/batches`.

use super::auth::Caller;
use super::idempotency::{check_request_id, create_once, replay, Creation};
use super::json;
use super::views::FileView;
use super::{ErrorCode, Reply, ServiceError, Services};
use crate::domain::account::{retention_tags, MAX_BATCH_TASKS};
use crate::domain::batch::{validate_task, TaskInput, TaskSpec};
use crate::domain::idempotency::Scope;
use crate::domain::ids;
use crate::domain::pricing::Model;
use crate::ports::records::FileRecord;
use crate::ports::store::NewRecord;
use serde::Deserialize;
use serde_json::json as j;

pub use crate::domain::batch::{INPUT_CONTENT_TYPE, MAX_INPUT_FILE_BYTES};
pub const PURPOSE_BATCH_INPUT: &str = "batch_input";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateFile {
    pub request_id: String,
    #[serde(default)]
    pub purpose: Option<String>,
}

pub fn file_key(account_id: &str, file_id: &str) -> String {
    format!("accounts/{account_id}/files/{file_id}.jsonl")
}

pub async fn create(
    svc: &Services,
    caller: &Caller,
    req: CreateFile,
    fingerprint: &str,
) -> Result<Reply, ServiceError> {
    let purpose = req
        .purpose
        .unwrap_or_else(|| PURPOSE_BATCH_INPUT.to_string());
    if purpose != PURPOSE_BATCH_INPUT {
        return Err(ServiceError::reject(
            ErrorCode::InvalidRequest,
            "purpose must be batch_input",
        ));
    }
    let account_id = &caller.account.account_id;
    let request_id = req.request_id.as_str();
    check_request_id(request_id)?;
    // A replay gets a fresh upload link while nothing is uploaded, and none after: a link is
    // a credential for an hour, so none is stored (a stored one would go stale, and stay
    // readable in the table).
    if let Some((_, stored)) =
        replay(svc, account_id, Scope::CreateFile, request_id, fingerprint).await?
    {
        let mut rec = find(svc, account_id, &stored.resource_id).await?;
        let bytes = svc.blobs.size(&rec.s3_key).await?;
        let link = match bytes {
            Some(_) => None,
            None => {
                let link = upload_link(svc, caller, &rec.s3_key).await?;
                rec.upload_expires_ms = svc.now_ms() + link_ttl_ms(&link);
                Some(link)
            }
        };
        return Ok(Reply {
            status: 201,
            body: json(&FileView::new(&rec, link, bytes))?,
            replayed: true,
        });
    }
    create_once(
        svc,
        account_id,
        caller.account.retention_days,
        Scope::CreateFile,
        request_id,
        fingerprint,
        |now| {
            let purpose = purpose.clone();
            async move {
                let file_id = svc.new_id("file");
                let s3_key = file_key(account_id, &file_id);
                let link = upload_link(svc, caller, &s3_key).await?;
                let ttl_ms = link_ttl_ms(&link);
                let rec = FileRecord {
                    account_id: account_id.clone(),
                    file_id: file_id.clone(),
                    request_id: request_id.to_string(),
                    purpose,
                    s3_key,
                    created_ms: now,
                    upload_expires_ms: now + ttl_ms,
                    expires_at: now / 1_000 + i64::from(caller.account.retention_days) * 86_400,
                };
                Ok(Creation {
                    reply: Reply {
                        status: 201,
                        body: json(&FileView::new(&rec, Some(link), None))?,
                        replayed: false,
                    },
                    // Stored without the link (a concurrent duplicate that loses the race
                    // gets the file without one; asking again gives a fresh one).
                    replayed: Some(Reply {
                        status: 201,
                        body: json(&FileView::new(&rec, None, None))?,
                        replayed: false,
                    }),
                    resource_id: file_id,
                    creates: vec![NewRecord::File(rec)],
                })
            }
        },
    )
    .await
}

/// A presigned PUT for the file's key, signed with the content type and the account's
/// retention tags.
async fn upload_link(
    svc: &Services,
    caller: &Caller,
    s3_key: &str,
) -> Result<crate::ports::blobs::Presigned, ServiceError> {
    let tags = retention_tags(caller.account.retention_days);
    Ok(svc
        .blobs
        .presign_put(s3_key, INPUT_CONTENT_TYPE, &tags)
        .await?)
}

fn link_ttl_ms(link: &crate::ports::blobs::Presigned) -> i64 {
    i64::try_from(link.expires_in_secs).unwrap_or(3_600) * 1_000
}

async fn find(svc: &Services, account_id: &str, file_id: &str) -> Result<FileRecord, ServiceError> {
    if !ids::is_valid("file", file_id) {
        return Err(ServiceError::not_found("input file"));
    }
    svc.files
        .get(account_id, file_id)
        .await?
        .ok_or_else(|| ServiceError::not_found("input file"))
}

pub async fn get(svc: &Services, caller: &Caller, file_id: &str) -> Result<FileView, ServiceError> {
    let rec = find(svc, &caller.account.account_id, file_id).await?;
    let bytes = svc.blobs.size(&rec.s3_key).await?;
    Ok(FileView::new(&rec, None, bytes))
}

/// Reads and validates an uploaded input file for `model`. Any bad line rejects the whole
/// file with its (1-based) line number.
pub async fn read_input(
    svc: &Services,
    account_id: &str,
    file_id: &str,
    model: Model,
) -> Result<Vec<TaskSpec>, ServiceError> {
    let rec = find(svc, account_id, file_id).await?;
    let not_uploaded = || {
        ServiceError::reject(
            ErrorCode::InputFileNotUploaded,
            "nothing has been uploaded to this file's upload_url yet",
        )
    };
    let size = svc
        .blobs
        .size(&rec.s3_key)
        .await?
        .ok_or_else(not_uploaded)?;
    if size > MAX_INPUT_FILE_BYTES {
        return Err(ServiceError::reject(
            ErrorCode::InputFileTooLarge,
            format!("input files are limited to {MAX_INPUT_FILE_BYTES} bytes; this one has {size}"),
        ));
    }
    let bytes = svc.blobs.get(&rec.s3_key).await?.ok_or_else(not_uploaded)?;
    parse_input(&bytes, model)
}

fn line_error(line: usize, message: String) -> ServiceError {
    ServiceError::reject_with(
        ErrorCode::InvalidInputFile,
        format!("line {line}: {message}"),
        j!({ "line": line }),
    )
}

/// JSON Lines: one task object per line; a final newline is fine, blank lines are not.
pub fn parse_input(bytes: &[u8], model: Model) -> Result<Vec<TaskSpec>, ServiceError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        line_error(line, "not valid UTF-8".into())
    })?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    if text.is_empty() {
        return Err(ServiceError::reject(
            ErrorCode::InvalidInputFile,
            "the input file is empty",
        ));
    }
    let mut specs = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        if specs.len() == MAX_BATCH_TASKS as usize {
            return Err(ServiceError::reject(
                ErrorCode::BatchTooLarge,
                format!("a batch holds at most {MAX_BATCH_TASKS} tasks; the file has more lines"),
            ));
        }
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if raw.trim().is_empty() {
            return Err(line_error(line, "empty line".into()));
        }
        let input: TaskInput =
            serde_json::from_str(raw).map_err(|e| line_error(line, e.to_string()))?;
        specs.push(validate_task(model, input).map_err(|e| line_error(line, e.to_string()))?);
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_line(r: Result<Vec<TaskSpec>, ServiceError>) -> Option<u64> {
        match r {
            Err(ServiceError::Rejected {
                details: Some(d), ..
            }) => d["line"].as_u64(),
            _ => None,
        }
    }

    #[test]
    fn parses_lines_and_names_the_bad_one() {
        let ok = parse_input(b"{\"prompt\":\"a\"}\r\n{\"prompt\":\"b\"}\n", Model::Sora2);
        assert_eq!(ok.map(|v| v.len()).ok(), Some(2));
        assert_eq!(
            err_line(parse_input(
                b"{\"prompt\":\"a\"}\n{\"prompt\":\"\"}",
                Model::Sora2
            )),
            Some(2)
        );
        assert_eq!(
            err_line(parse_input(
                b"{\"prompt\":\"a\"}\n\n{\"prompt\":\"b\"}",
                Model::Sora2
            )),
            Some(2)
        );
        assert_eq!(
            err_line(parse_input(
                b"{\"prompt\":\"a\"}\n{\"prompt\":1}",
                Model::Sora2
            )),
            Some(2)
        );
        assert_eq!(
            err_line(parse_input(
                b"{\"prompt\":\"a\"}\n{\"prompt\":\"\xff\"}",
                Model::Sora2
            )),
            Some(2)
        );
        assert_eq!(
            err_line(parse_input(b"{\"prompt\":\"a\",\"x\":1}", Model::Sora2)),
            Some(1)
        );
        assert!(parse_input(b"", Model::Sora2).is_err());
    }
}
