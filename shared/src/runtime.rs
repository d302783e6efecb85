//! Start-up shared by every function: JSON logs, configuration, and the wiring of adapters to
//! ports (provider credentials from Secrets Manager in AWS, from the environment locally).

use crate::adapters::clock::{OsRandom, SystemClock};
use crate::adapters::providers::credential::{Fixed, SecretSource};
use crate::adapters::providers::routes_from_lookup;
use crate::config::Config;
use crate::ports::provider::Routes;
use crate::service::pipeline::Pipeline;
use crate::service::Services;
use std::collections::HashMap;
use std::sync::Arc;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub use crate::adapters::ensure_tls;

pub fn init_logging() {
    ensure_tls();
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .try_init();
}

/// The use cases over AWS, configured from the environment.
pub async fn services_from_env() -> Result<Services, BoxError> {
    let mut config = Config::from_env()?;
    // The API's Stripe secrets (card payments) live in Secrets Manager, never the template.
    if let Some(arn) = std::env::var("STRIPE_SECRET_ARN")
        .ok()
        .filter(|v| !v.is_empty())
    {
        let s = secret(&arn).await?;
        config.settings.stripe_webhook_secret = Some(
            s.get("STRIPE_WEBHOOK_SECRET")
                .cloned()
                .ok_or("the Stripe secret has no STRIPE_WEBHOOK_SECRET")?,
        );
        config.settings.stripe_secret_key = s.get("STRIPE_SECRET_KEY").cloned();
    }
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let ports = crate::adapters::aws(&sdk, &config, Arc::new(SystemClock), Arc::new(OsRandom))?;
    Ok(Services::new(ports))
}

/// Provider settings: the environment, overlaid with the JSON object in the Secrets Manager
/// secret named by `PROVIDER_SECRET_ARN` (API keys never sit in the template).
/// The credentials themselves are read again as they change (a Vertex token lasts an hour):
/// from the secret when there is one, otherwise they are the environment's.
pub async fn providers_from_env() -> Result<Routes, BoxError> {
    let arn = std::env::var("PROVIDER_SECRET_ARN")
        .ok()
        .filter(|v| !v.is_empty());
    let (secret, source): (HashMap<String, String>, Arc<dyn SecretSource>) = match arn {
        Some(arn) => {
            let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            let source = crate::adapters::secrets::SecretsManager::new(&sdk, &arn);
            (source.read().await?, Arc::new(source))
        }
        None => {
            let env: HashMap<String, String> = std::env::vars().collect();
            (HashMap::new(), Arc::new(Fixed(env)))
        }
    };
    let get = move |k: &str| secret.get(k).cloned().or_else(|| std::env::var(k).ok());
    Ok(routes_from_lookup(&get, source)?)
}

/// The JSON object of string values in a Secrets Manager secret.
pub async fn secret(arn: &str) -> Result<HashMap<String, String>, BoxError> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    Ok(crate::adapters::secrets::SecretsManager::new(&sdk, arn)
        .read()
        .await?)
}

pub async fn pipeline_from_env() -> Result<Pipeline, BoxError> {
    Ok(Pipeline {
        svc: services_from_env().await?,
        providers: providers_from_env().await?,
    })
}
