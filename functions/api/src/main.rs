//! The api function. Inside Lambda (`AWS_LAMBDA_RUNTIME_API` set, also by `cargo lambda
//! watch`) it serves API Gateway events; anywhere else it listens on 127.0.0.1:$PORT.

// mimalloc, not the system allocator: malloc and free were about a seventh of a request's
// CPU in the profile (docs/PERFORMANCE.md, "API CPU per request").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// One thread: a Lambda instance serves one request at a time, and its share of a vCPU at
// 256 MB is small, so a second worker thread only adds wake-ups between threads (measured:
// about a tenth of a request's CPU, docs/PERFORMANCE.md). Locally the server still answers
// concurrent requests, interleaved on this thread.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    shared::runtime::init_logging();
    let app = api::app(shared::runtime::services_from_env().await?);

    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        return lambda_http::run(app).await;
    }
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    tracing::info!(addr = %listener.local_addr()?, "api listening");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
