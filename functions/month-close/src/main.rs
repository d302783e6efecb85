//! Scheduled daily (EventBridge): closes the month before today for every account, issuing
//! its SLA compensation once (`shared::service::sla::close_month`). Daily rather than once a
//! month so that a run that failed, or an account that could not be closed, is retried the
//! next day; a closed month costs one read per account to skip. The event's content does not
//! matter, except that `{"month": "YYYY-MM"}` closes that month instead (an operator's
//! re-run of an older month).

use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::runtime::init_logging();
    let pipeline = shared::runtime::pipeline_from_env().await?;
    let svc = &pipeline.svc;
    lambda_runtime::run(service_fn(
        move |ev: LambdaEvent<serde_json::Value>| async move {
            let month = match ev.payload.get("month").and_then(|m| m.as_str()) {
                Some(m) => m.to_string(),
                None => shared::service::sla::month_to_close(svc.now_ms()),
            };
            let s = shared::service::sla::close_month(svc, &month).await?;
            Ok::<_, lambda_runtime::Error>(serde_json::to_value(&s)?)
        },
    ))
    .await
}
