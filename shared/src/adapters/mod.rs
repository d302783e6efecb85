//! Adapters: the only code that knows DynamoDB tables, SQS queues, S3 and the outbound HTTP
//! protocols. Each implements ports of `crate::ports`:
//!
//! | port | cloud adapter | in-memory twin |
//! |---|---|---|
//! | `Money`, `Ledger`, `Accounts`, `Batches`, `Tasks`, `Progress`, `Requests`, `Files`, `Models`, `Keys`, `RateWindows`, `Usage`, `Endpoints`, `Events`, `Deliveries`, `Exports` | [`dynamo`] (one file per table family) | [`memory`] |
//! | `Queue` | [`sqs`] | [`memory`] |
//! | `Blobs` | [`s3`] | [`memory`] |
//! | `Sealer` | [`kms`] (behind [`sealing::Remembered`]) | [`memory`] (the same wrapper) |
//! | `WebhookSender` | [`webhook_client`] | tests' receivers |
//! | `Provider` | [`providers`] (OpenAI protocol, Google Veo, simulated) | [`providers::simulated`] |
//! | `Invoices` | [`dynamo`] | [`memory`] |
//! | `Typesetter` | [`pdf`] (the same in tests) | |
//! | `Checkout` | [`stripe`] | tests' fake Stripe (`devstack::fake_stripe`) |
//! | `Clock`, `Random` | [`clock`] | [`clock`] (manual, seeded) |
//!
//! [`lambda`] is the edge of the SQS-triggered functions (one batch loop for all four);
//! [`outbox`] holds an invocation's sends for it, to go out ten to a request, and
//! [`held_starts`] its tasks' start marks, to go in one write per shard.

pub mod clock;
pub mod dynamo;
pub mod held_starts;
pub mod kms;
pub mod lambda;
pub mod memory;
pub mod outbox;
pub mod pdf;
pub mod providers;
pub mod s3;
pub mod sealing;
pub mod secrets;
pub mod sqs;
pub mod stripe;
pub mod webhook_client;

use crate::config::Config;
use crate::ports::{Clock, Ports, Random, StoreError};
use std::sync::Arc;

/// What an AWS SDK error says, for a `StoreError`: the service's code and message when the
/// service answered, the whole error otherwise (time-outs, connection failures). The error
/// types are the same across the SDK's crates.
pub(crate) fn sdk_detail<E>(e: &aws_sdk_dynamodb::error::SdkError<E>) -> String
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::fmt::Debug,
{
    match e.as_service_error() {
        Some(se) => format!(
            "{}: {}",
            se.code().unwrap_or("error"),
            se.message().unwrap_or("")
        ),
        None => format!("{e:?}"),
    }
}

/// Chooses rustls's crypto provider for the process (HTTP clients panic without one).
/// Idempotent.
pub fn ensure_tls() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Every port backed by AWS (DynamoDB, SQS, S3) and the real webhook client, from the SDK
/// configuration; `AWS_ENDPOINT_URL` points the clients at the emulator locally, with no
/// other difference.
pub fn aws(
    sdk: &aws_config::SdkConfig,
    config: &Config,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
) -> Result<Ports, StoreError> {
    ensure_tls();
    let store = Arc::new(dynamo::Dynamo::new(
        aws_sdk_dynamodb::Client::new(sdk),
        config.tables.clone(),
        clock.clone(),
        random.clone(),
    ));
    let s3_conf = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(config.s3_force_path_style)
        .build();
    let blobs = Arc::new(s3::S3::new(
        aws_sdk_s3::Client::from_conf(s3_conf),
        config.bucket.clone(),
        config.presign_ttl_secs,
    ));
    let queue = Arc::new(sqs::Sqs::new(
        aws_sdk_sqs::Client::new(sdk),
        config.queues.clone(),
        config.sqs_delays,
        clock.clone(),
        random.clone(),
    ));
    let sender = Arc::new(webhook_client::WebhookClient::new(
        config.settings.webhooks,
    )?);
    let sealer: Arc<dyn crate::ports::Sealer> = match &config.secrets_key {
        Some(key) => Arc::new(sealing::Remembered::new(Arc::new(kms::Kms::new(
            aws_sdk_kms::Client::new(sdk),
            key.clone(),
        )))),
        None => Arc::new(sealing::NoKey),
    };
    Ok(Ports::from_store(
        store,
        queue,
        blobs,
        sender,
        sealer,
        clock,
        random,
        config.settings.clone(),
    ))
}
