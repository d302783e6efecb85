//! A webhook receiver on 127.0.0.1: records every request and answers as told (succeed, fail
//! the first N, 410, 429 with Retry-After, or hang until released).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{watch, Notify};

#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// 200 to everything.
    Ok,
    /// `status` to the first `n` requests, then 200.
    FailFirst { n: usize, status: u16 },
    /// `status` with `Retry-After: secs` to the first request, then 200.
    BusyOnce { status: u16, secs: u64 },
    /// `status` to everything.
    Always(u16),
    /// Holds every request open until [`Receiver::release`], then 200.
    Hang,
}

#[derive(Clone, Debug)]
pub struct Received {
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

struct Inner {
    behaviour: Mutex<Behaviour>,
    received: Mutex<Vec<Received>>,
    in_flight: Mutex<usize>,
    arrived: Notify,
    released: watch::Sender<bool>,
}

pub struct Receiver {
    pub url: String,
    inner: Arc<Inner>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.inner.released.send_replace(true);
        self.server.abort();
    }
}

/// Decrements the in-flight count however the request ends (answered or dropped on timeout).
struct InFlight(Arc<Inner>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut n) = self.0.in_flight.lock() {
            *n = n.saturating_sub(1);
        }
    }
}

async fn hook(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let k = {
        let mut got = inner.received.lock().expect("received");
        got.push(Received {
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        v.to_str().unwrap_or_default().to_string(),
                    )
                })
                .collect(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        got.len()
    };
    *inner.in_flight.lock().expect("in flight") += 1;
    let _guard = InFlight(inner.clone());
    inner.arrived.notify_waiters();
    let behaviour = *inner.behaviour.lock().expect("behaviour");
    let status = |c: u16| StatusCode::from_u16(c).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match behaviour {
        Behaviour::Ok => (StatusCode::OK, "thanks").into_response(),
        Behaviour::FailFirst { n, status: s } if k <= n => {
            (status(s), format!("failing on purpose ({k} of {n})")).into_response()
        }
        Behaviour::FailFirst { .. } => (StatusCode::OK, "thanks").into_response(),
        Behaviour::BusyOnce { status: s, secs } if k == 1 => {
            let mut r = (status(s), "slow down").into_response();
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert("retry-after", v);
            }
            r
        }
        Behaviour::BusyOnce { .. } => (StatusCode::OK, "thanks").into_response(),
        Behaviour::Always(s) => (status(s), "no").into_response(),
        Behaviour::Hang => {
            let mut rx = inner.released.subscribe();
            let _ = rx.wait_for(|r| *r).await;
            (StatusCode::OK, "finally").into_response()
        }
    }
}

impl Receiver {
    pub async fn start(behaviour: Behaviour) -> Receiver {
        let (released, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            behaviour: Mutex::new(behaviour),
            received: Mutex::new(Vec::new()),
            in_flight: Mutex::new(0),
            arrived: Notify::new(),
            released,
        });
        let app = Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, inner, server }
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.inner.behaviour.lock().expect("behaviour") = behaviour;
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().expect("received").clone()
    }

    pub fn count(&self) -> usize {
        self.inner.received.lock().expect("received").len()
    }

    pub fn in_flight(&self) -> usize {
        *self.inner.in_flight.lock().expect("in flight")
    }

    /// Lets every held request (and any later one) through.
    pub fn release(&self) {
        self.inner.released.send_replace(true);
    }

    /// Waits until `n` requests have arrived. The bound only turns a hang into a failure.
    pub async fn wait_for(&self, n: usize) {
        let waited = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            loop {
                let notified = self.inner.arrived.notified();
                if self.count() >= n {
                    return;
                }
                notified.await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "receiver got {} requests, expected {n}",
            self.count()
        );
    }
}

/// Verifies deliveries with the `standardwebhooks` Python library (an independent
/// implementation of the specification), at `now_secs`. One line per case: `ok` or the error.
pub fn verify_with_library(cases: &[(&str, &Received)], now_secs: i64) -> Vec<String> {
    use std::io::Write;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = std::env::var("MOTO_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join("infra/.venv/bin/python"));
    let input = serde_json::json!({
        "now": now_secs,
        "cases": cases.iter().map(|(secret, r)| serde_json::json!({
            "secret": secret, "headers": r.headers, "body": r.body,
        })).collect::<Vec<_>>(),
    });
    let mut child = std::process::Command::new(python)
        .arg(root.join("tests/verify_webhook.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run the verifier");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write cases");
    let out = child.wait_with_output().expect("verifier output");
    assert!(out.status.success(), "verifier failed: {out:?}");
    serde_json::from_slice(&out.stdout).expect("verifier prints a JSON list")
}
