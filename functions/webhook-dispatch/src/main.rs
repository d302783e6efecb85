use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::runtime::init_logging();
    let svc = shared::runtime::services_from_env().await?;
    let s = &svc;
    lambda_runtime::run(service_fn(move |e: LambdaEvent<SqsEvent>| async move {
        Ok::<_, lambda_runtime::Error>(webhook_dispatch::handle_event(s, e.payload).await)
    }))
    .await
}
