//! Scheduled every minute (EventBridge); the event's content does not matter.

use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::runtime::init_logging();
    let pipeline = shared::runtime::pipeline_from_env().await?;
    let p = &pipeline;
    lambda_runtime::run(service_fn(
        move |_: LambdaEvent<serde_json::Value>| async move {
            let report = shared::service::pipeline::sweeper::sweep(p).await?;
            Ok::<_, lambda_runtime::Error>(serde_json::json!({
                "batches": report.batches,
                "timed_out": report.timed_out,
                "redriven": report.redriven,
                "errors": report.errors,
            }))
        },
    ))
    .await
}
