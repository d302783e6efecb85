//! Configuration from the environment: table and bucket names come from template.yaml (SAM
//! sets them; the local stack exports the same names), so cloud and local run one code path.

use std::env;

#[derive(Clone, Debug)]
pub struct Tables {
    pub accounts: String,
    pub api_keys: String,
    pub ledger: String,
    pub batches: String,
    pub tasks: String,
    pub requests: String,
    pub files: String,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub tables: Tables,
    pub bucket: String,
    /// Hex SHA-256 of the operator token; `None` turns the operator API off.
    pub operator_token_sha256: Option<String>,
    /// Path-style S3 addressing: needed by the emulator, harmless on AWS.
    pub s3_force_path_style: bool,
    /// How long presigned upload and download links stay valid, in seconds.
    pub presign_ttl_secs: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("environment variable {0} is invalid: {1}")]
    Invalid(&'static str, &'static str),
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| env::var(name).ok())
    }

    /// The same settings from any source of named values (tests pass the names the local
    /// stack created).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let required = |name: &'static str| match get(name) {
            Some(v) if !v.trim().is_empty() => Ok(v),
            _ => Err(ConfigError::Missing(name)),
        };
        let operator_token_sha256 = match get("OPERATOR_TOKEN_SHA256") {
            Some(v) if !v.is_empty() => {
                let v = v.to_ascii_lowercase();
                if v.len() != 64 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(ConfigError::Invalid(
                        "OPERATOR_TOKEN_SHA256",
                        "expected 64 hex characters",
                    ));
                }
                Some(v)
            }
            _ => None,
        };
        let presign_ttl_secs = match get("PRESIGN_TTL_SECS") {
            Some(v) => v
                .parse()
                .ok()
                .filter(|n| (60..=604_800).contains(n))
                .ok_or(ConfigError::Invalid("PRESIGN_TTL_SECS", "60 to 604800"))?,
            None => 3_600,
        };
        Ok(Config {
            tables: Tables {
                accounts: required("ACCOUNTS_TABLE")?,
                api_keys: required("API_KEYS_TABLE")?,
                ledger: required("LEDGER_TABLE")?,
                batches: required("BATCHES_TABLE")?,
                tasks: required("TASKS_TABLE")?,
                requests: required("REQUESTS_TABLE")?,
                files: required("FILES_TABLE")?,
            },
            bucket: required("DATA_BUCKET")?,
            operator_token_sha256,
            s3_force_path_style: get("S3_FORCE_PATH_STYLE").is_some_and(|v| v == "true"),
            presign_ttl_secs,
        })
    }
}
