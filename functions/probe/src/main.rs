//! Scheduled every minute (EventBridge). `PROBE_BASE_URL` is the stage's public URL;
//! `PROBE_KEY_SECRET_ARN` (optional) a Secrets Manager secret whose JSON holds the probe
//! account's read-only key as `PROBE_API_KEY`.

use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::runtime::init_logging();
    let svc = shared::runtime::services_from_env().await?;
    let base = std::env::var("PROBE_BASE_URL").map_err(|_| "PROBE_BASE_URL is not set")?;
    let key = match std::env::var("PROBE_KEY_SECRET_ARN") {
        Ok(arn) if !arn.is_empty() => {
            let secret = shared::runtime::secret(&arn).await?;
            Some(
                secret
                    .get("PROBE_API_KEY")
                    .cloned()
                    .ok_or("the probe secret has no PROBE_API_KEY")?,
            )
        }
        _ => std::env::var("PROBE_API_KEY").ok(),
    };
    let probe = probe::Probe::new(&base, key)?;
    let (probe, svc) = (&probe, &svc);
    lambda_runtime::run(service_fn(
        move |_: LambdaEvent<serde_json::Value>| async move {
            let failure = probe.run(svc).await?;
            Ok::<_, lambda_runtime::Error>(
                serde_json::json!({ "ok": failure.is_none(), "failure": failure }),
            )
        },
    ))
    .await
}
