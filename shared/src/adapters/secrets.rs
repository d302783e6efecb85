//! The provider secret in Secrets Manager (JSON: `OPENAI_API_KEY`, `VERTEX_ACCESS_TOKEN`,
//! ...), read whenever a provider credential is due for a fresh look.

use crate::adapters::providers::credential::SecretSource;
use async_trait::async_trait;
use std::collections::HashMap;

pub struct SecretsManager {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
}

impl SecretsManager {
    pub fn new(sdk: &aws_config::SdkConfig, secret_id: &str) -> Self {
        SecretsManager {
            client: aws_sdk_secretsmanager::Client::new(sdk),
            secret_id: secret_id.to_string(),
        }
    }
}

#[async_trait]
impl SecretSource for SecretsManager {
    async fn read(&self) -> Result<HashMap<String, String>, String> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "GetSecretValue: {}",
                    aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
                )
            })?;
        let text = out
            .secret_string
            .ok_or("the provider secret has no string value")?;
        serde_json::from_str(&text)
            .map_err(|e| format!("the provider secret is not a JSON object of strings: {e}"))
    }
}
