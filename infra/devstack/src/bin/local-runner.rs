//! Runs the task worker, settlement, webhook dispatch, the sweeper and the month close locally
//! against the emulator, with Lambda's event semantics (see `devstack::pump`): an SQS poller
//! per queue handing batches of up to ten messages to the functions' own handlers, the
//! sweeper on a timer, the month close at start and every hour (daily in AWS), and the
//! synthetic probe every minute when `PROBE_BASE_URL` names the API (with `PROBE_API_KEY`).
//! Configured by the same environment as the functions (scripts/dev.sh writes it).

use devstack::pump::pump_round;
use shared::ports::queue::QueueName;
use shared::service::pipeline::sweeper;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), shared::runtime::BoxError> {
    shared::runtime::init_logging();
    let p = shared::runtime::pipeline_from_env().await?;
    let sweep_every = std::env::var("SWEEP_EVERY_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60u64);
    tracing::info!(
        sweep_every,
        "local runner: task worker, settlement, webhook dispatch, sweeper"
    );

    let tasks = {
        let p = p.clone();
        tokio::spawn(async move {
            loop {
                let now = p.svc.now_ms();
                let q = p.svc.queue.as_ref();
                if let Err(e) = pump_round(q, QueueName::Tasks, now, false, 5, |ev| {
                    task_worker::handle_event(&p, ev)
                })
                .await
                {
                    tracing::error!(error = %e, "tasks poller");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        })
    };
    let settle = {
        let p = p.clone();
        tokio::spawn(async move {
            loop {
                let now = p.svc.now_ms();
                let q = p.svc.queue.as_ref();
                if let Err(e) = pump_round(q, QueueName::Settle, now, false, 5, |ev| {
                    settlement::handle_event(&p, ev)
                })
                .await
                {
                    tracing::error!(error = %e, "settle poller");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        })
    };
    let dispatcher = p.svc.clone();
    let events = tokio::spawn(async move {
        let d = &dispatcher;
        loop {
            let now = d.now_ms();
            if let Err(e) = pump_round(d.queue.as_ref(), QueueName::Events, now, false, 5, |ev| {
                webhook_dispatch::handle_event(d, ev)
            })
            .await
            {
                tracing::error!(error = %e, "events poller");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
    let exports = {
        let svc = p.svc.clone();
        tokio::spawn(async move {
            loop {
                let now = svc.now_ms();
                if let Err(e) = pump_round(
                    svc.queue.as_ref(),
                    QueueName::Exports,
                    now,
                    false,
                    5,
                    |ev| export::handle_event(&svc, ev),
                )
                .await
                {
                    tracing::error!(error = %e, "exports poller");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        })
    };
    let close = {
        let svc = p.svc.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3_600));
            loop {
                tick.tick().await;
                let month = shared::service::sla::month_to_close(svc.now_ms());
                if let Err(e) = shared::service::sla::close_month(&svc, &month).await {
                    tracing::error!(error = %e, "month close");
                }
            }
        })
    };
    let probe = match std::env::var("PROBE_BASE_URL") {
        Ok(base) => {
            let probe = probe::Probe::new(&base, std::env::var("PROBE_API_KEY").ok())?;
            let svc = p.svc.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    if let Err(e) = probe.run(&svc).await {
                        tracing::error!(error = %e, "probe");
                    }
                }
            })
        }
        Err(_) => tokio::spawn(std::future::pending()),
    };
    let sweep = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(sweep_every));
        loop {
            tick.tick().await;
            if let Err(e) = sweeper::sweep(&p).await {
                tracing::error!(error = %e, "sweep");
            }
        }
    });
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        r = tasks => tracing::error!(?r, "tasks poller ended"),
        r = settle => tracing::error!(?r, "settle poller ended"),
        r = events => tracing::error!(?r, "events poller ended"),
        r = exports => tracing::error!(?r, "exports poller ended"),
        r = sweep => tracing::error!(?r, "sweeper ended"),
        r = close => tracing::error!(?r, "month close ended"),
        r = probe => tracing::error!(?r, "probe ended"),
    }
    Ok(())
}
