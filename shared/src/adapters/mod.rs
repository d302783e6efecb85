//! Adapters: DynamoDB and S3. The only place that knows table layouts and SDK calls.

pub mod access;
pub mod blobs;
pub mod dynamo;
pub mod exports;
pub mod faults;
pub mod pipeline;
pub mod queue;
pub mod records;
pub mod webhooks;

use crate::config::Config;
use aws_sdk_dynamodb::Client as DynamoClient;
use aws_sdk_s3::Client as S3Client;
use aws_sdk_sqs::Client as SqsClient;
pub use faults::Faults;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("DynamoDB: {0}")]
    Dynamo(String),
    #[error("S3: {0}")]
    S3(String),
    #[error("SQS: {0}")]
    Sqs(String),
    #[error("stored record is malformed: {0}")]
    Corrupt(String),
    #[error("injected fault at {0}")]
    Injected(&'static str),
}

/// Everything that talks to AWS. Cheap to clone (the SDK clients are handles).
#[derive(Clone)]
pub struct Store {
    pub(crate) ddb: DynamoClient,
    pub(crate) s3: S3Client,
    pub(crate) sqs: SqsClient,
    pub(crate) config: Config,
    pub(crate) faults: Faults,
}

impl Store {
    /// Clients from the standard AWS configuration chain; `AWS_ENDPOINT_URL` points them at
    /// the emulator locally, with no other difference.
    pub async fn from_env(config: Config) -> Self {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::new(&sdk, config)
    }

    pub fn new(sdk: &aws_config::SdkConfig, config: Config) -> Self {
        let sdk = sdk.clone();
        let s3_conf = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(config.s3_force_path_style)
            .build();
        Store {
            ddb: DynamoClient::new(&sdk),
            s3: S3Client::from_conf(s3_conf),
            sqs: SqsClient::new(&sdk),
            config,
            faults: Faults::none(),
        }
    }

    /// The same store with a fault hook (tests use it to crash between two writes).
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
}
