//! Configuration from the environment: table and bucket names come from template.yaml (SAM
//! sets them; the local stack exports the same names), so cloud and local run one code path.

use std::env;

#[derive(Clone, Debug)]
pub struct Tables {
    pub accounts: String,
    pub api_keys: String,
    pub console_sessions: String,
    pub ledger: String,
    pub batches: String,
    pub tasks: String,
    pub requests: String,
    pub files: String,
    pub progress: String,
    pub models: String,
    pub webhook_endpoints: String,
    pub events: String,
    pub deliveries: String,
    pub rate_limits: String,
    pub api_usage: String,
    pub exports: String,
    pub sla: String,
    pub billing: String,
}

#[derive(Clone, Debug)]
pub struct Queues {
    pub tasks: String,
    pub settle: String,
    pub events: String,
    pub exports: String,
    pub tasks_dlq: Option<String>,
    pub settle_dlq: Option<String>,
}

/// Everything a deployment configures: where the AWS resources are (for the adapters) and
/// the settings the use cases read.
#[derive(Clone, Debug)]
pub struct Config {
    pub tables: Tables,
    pub queues: Queues,
    pub bucket: String,
    /// Use SQS `DelaySeconds` for delayed re-checks. Off in tests, whose clock is manual:
    /// delayed messages carry their due time and the test pump honours it.
    pub sqs_delays: bool,
    /// Path-style S3 addressing: needed by the emulator, harmless on AWS.
    pub s3_force_path_style: bool,
    /// How long presigned upload and download links stay valid, in seconds.
    pub presign_ttl_secs: u64,
    /// The KMS key that seals webhook signing secrets (`WEBHOOK_SECRETS_KEY`): given to the
    /// API (which seals) and webhook dispatch (which opens) only.
    pub secrets_key: Option<String>,
    pub settings: Settings,
}

/// What the use cases read from the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    pub deadlines: crate::domain::task::Deadlines,
    /// Open batches one sweeper pass looks at, at most (the next pass goes on from there).
    pub sweep_batches_per_pass: usize,
    /// How long one sweeper pass may run before it leaves the rest to the next (its Lambda
    /// timeout is 300 s).
    pub sweep_budget_ms: i64,
    pub webhooks: WebhookConfig,
    /// The signing secret of our Stripe webhook endpoint (`whsec_...`): from the secret that
    /// `STRIPE_SECRET_ARN` names in the cloud, `STRIPE_WEBHOOK_SECRET` locally. None: card
    /// payments are off.
    pub stripe_webhook_secret: Option<String>,
    /// Who issues our invoices (`INVOICE_ISSUER`, JSON; a development issuer by default).
    pub issuer: crate::ports::billing::Issuer,
    /// Tax on invoices, basis points (`INVOICE_TAX_RATE_BP`; 0 by default, shown on each).
    pub tax_rate_bp: u32,
    /// The font invoices are laid out in (`INVOICE_FONT_PATH`).
    pub invoice_font_path: String,
    /// Stripe's secret API key (`sk_...`): from the Stripe secret in the cloud,
    /// `STRIPE_SECRET_KEY` locally. None: no card checkout.
    pub stripe_secret_key: Option<String>,
    /// Where Stripe's API is (`STRIPE_API_BASE`; the local stack's fake, or Stripe's own).
    pub stripe_api_base: String,
    /// Where Stripe's checkout page sends the customer back (`CHECKOUT_RETURN_URL`).
    pub checkout_return_url: String,
}

/// The issuer of a development stack's invoices; a deployment sets `InvoiceIssuer`.
pub fn development_issuer() -> crate::ports::billing::Issuer {
    crate::ports::billing::Issuer {
        name: "Video Platform Ltd. (development issuer)".into(),
        address: "1 Example Street\nSingapore 000000".into(),
        tax_id: None,
        bank: crate::ports::billing::BankDetails {
            beneficiary: "Video Platform Ltd.".into(),
            bank_name: "Example Bank".into(),
            account_number: "000-000000-000".into(),
            swift: "EXAMPLEXXX".into(),
        },
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            deadlines: crate::domain::task::Deadlines::default(),
            sweep_batches_per_pass: 2_000,
            sweep_budget_ms: 200_000,
            webhooks: WebhookConfig {
                allow_private: true,
                timeout_ms: 15_000,
            },
            stripe_webhook_secret: None,
            issuer: development_issuer(),
            tax_rate_bp: 0,
            invoice_font_path: crate::adapters::pdf::DEFAULT_FONT_PATH.into(),
            stripe_secret_key: None,
            stripe_api_base: crate::adapters::stripe::DEFAULT_API_BASE.into(),
            checkout_return_url: "http://localhost/console/".into(),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct WebhookConfig {
    /// Local mode (`WEBHOOKS_ALLOW_PRIVATE=true`): plain HTTP and loopback/private receivers
    /// are allowed. Never set in the cloud, where it would open the SSRF hole.
    pub allow_private: bool,
    /// How long one attempt may take before it counts as failed (`WEBHOOK_TIMEOUT_SECS`).
    pub timeout_ms: u64,
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
                console_sessions: required("CONSOLE_SESSIONS_TABLE")?,
                ledger: required("LEDGER_TABLE")?,
                batches: required("BATCHES_TABLE")?,
                tasks: required("TASKS_TABLE")?,
                requests: required("REQUESTS_TABLE")?,
                files: required("FILES_TABLE")?,
                progress: required("PROGRESS_TABLE")?,
                models: required("MODELS_TABLE")?,
                webhook_endpoints: required("WEBHOOK_ENDPOINTS_TABLE")?,
                events: required("EVENTS_TABLE")?,
                deliveries: required("DELIVERIES_TABLE")?,
                rate_limits: required("RATE_LIMITS_TABLE")?,
                sla: required("SLA_TABLE")?,
                billing: required("BILLING_TABLE")?,
                api_usage: required("API_USAGE_TABLE")?,
                exports: required("EXPORTS_TABLE")?,
            },
            queues: Queues {
                tasks: required("TASKS_QUEUE_URL")?,
                settle: required("SETTLE_QUEUE_URL")?,
                events: required("EVENTS_QUEUE_URL")?,
                exports: required("EXPORTS_QUEUE_URL")?,
                tasks_dlq: get("TASKS_DLQ_URL").filter(|v| !v.is_empty()),
                settle_dlq: get("SETTLE_DLQ_URL").filter(|v| !v.is_empty()),
            },
            sqs_delays: get("SQS_DELAYS").is_none_or(|v| v != "false"),
            bucket: required("DATA_BUCKET")?,
            s3_force_path_style: get("S3_FORCE_PATH_STYLE").is_some_and(|v| v == "true"),
            presign_ttl_secs,
            secrets_key: get("WEBHOOK_SECRETS_KEY").filter(|v| !v.trim().is_empty()),
            settings: Settings {
                sweep_batches_per_pass: Settings::default().sweep_batches_per_pass,
                sweep_budget_ms: Settings::default().sweep_budget_ms,
                deadlines: {
                    let d = crate::domain::task::Deadlines::default();
                    let ms = |name: &'static str, default: i64| -> Result<i64, ConfigError> {
                        get(name).map_or(Ok(default), |v| {
                            v.parse::<i64>()
                                .ok()
                                .filter(|s| *s > 0)
                                .map(|s| s * 1_000)
                                .ok_or(ConfigError::Invalid(name, "a positive number of seconds"))
                        })
                    };
                    crate::domain::task::Deadlines {
                        sora_2_ms: ms("SORA_2_DEADLINE_SECS", d.sora_2_ms)?,
                        veo_pro_ms: ms("VEO_PRO_DEADLINE_SECS", d.veo_pro_ms)?,
                        queue_ms: ms("QUEUE_DEADLINE_SECS", d.queue_ms)?,
                    }
                },
                webhooks: WebhookConfig {
                    allow_private: get("WEBHOOKS_ALLOW_PRIVATE").is_some_and(|v| v == "true"),
                    timeout_ms: match get("WEBHOOK_TIMEOUT_MS") {
                        // Milliseconds, for tests that need a short timeout.
                        Some(v) => v
                            .parse()
                            .ok()
                            .filter(|n| (100..=30_000).contains(n))
                            .ok_or(ConfigError::Invalid("WEBHOOK_TIMEOUT_MS", "100 to 30000"))?,
                        None => match get("WEBHOOK_TIMEOUT_SECS") {
                            Some(v) => v
                                .parse::<u64>()
                                .ok()
                                .filter(|n| (1..=30).contains(n))
                                .map(|n| n * 1_000)
                                .ok_or(ConfigError::Invalid("WEBHOOK_TIMEOUT_SECS", "1 to 30"))?,
                            None => 15_000,
                        },
                    },
                },
                stripe_webhook_secret: get("STRIPE_WEBHOOK_SECRET")
                    .filter(|v| !v.trim().is_empty()),
                issuer: match get("INVOICE_ISSUER").filter(|v| !v.trim().is_empty()) {
                    Some(v) => serde_json::from_str(&v).map_err(|_| {
                        ConfigError::Invalid(
                            "INVOICE_ISSUER",
                            "JSON {name, address, tax_id?, bank: {beneficiary, bank_name, account_number, swift}}",
                        )
                    })?,
                    None => development_issuer(),
                },
                tax_rate_bp: match get("INVOICE_TAX_RATE_BP") {
                    Some(v) => v
                        .parse()
                        .ok()
                        .filter(|n| *n <= 10_000)
                        .ok_or(ConfigError::Invalid("INVOICE_TAX_RATE_BP", "0 to 10000"))?,
                    None => 0,
                },
                invoice_font_path: get("INVOICE_FONT_PATH")
                    .filter(|v| !v.trim().is_empty())
                    .unwrap_or_else(|| crate::adapters::pdf::DEFAULT_FONT_PATH.into()),
                stripe_secret_key: get("STRIPE_SECRET_KEY").filter(|v| !v.trim().is_empty()),
                stripe_api_base: get("STRIPE_API_BASE")
                    .filter(|v| !v.trim().is_empty())
                    .unwrap_or_else(|| crate::adapters::stripe::DEFAULT_API_BASE.into()),
                checkout_return_url: get("CHECKOUT_RETURN_URL")
                    .filter(|v| !v.trim().is_empty())
                    .unwrap_or_else(|| "http://localhost/console/".into()),
            },
        })
    }
}
