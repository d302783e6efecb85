//! Test harness: the real API over real HTTP against the AWS emulator on loopback.
//!
//! One emulator per test process, started on a free port and gone when the process ends (it
//! exits when its stdin closes). Each test gets its own tables and bucket (a fresh prefix),
//! because the emulator copies whole tables on every transaction, and its own API server on
//! 127.0.0.1:0.

use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use shared::adapters::clock::{ManualClock, OsRandom};
use shared::adapters::memory::{Memory, MemoryBlobs, MemoryQueue};
use shared::adapters::providers::simulated::Simulated;
use shared::config::Config;
use shared::domain::batch::BatchStatus;
use shared::domain::money::Credits;
use shared::domain::pricing::Model;
use shared::ports::provider::{Route, Routes};
use shared::ports::queue::QueueName;
use shared::ports::records::{AccountRecord, BatchRecord};
use shared::ports::{Blobs, Clock, Faults, Provider};
use shared::service::pipeline::Pipeline;
use shared::service::Services;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

pub mod contract;
pub mod fakes;
pub mod receiver;
pub mod sim;

struct Emulator {
    endpoint: String,
    // Held open for the life of the process; the emulator exits when it closes.
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The emulator's endpoint (one per test process).
pub fn emulator_endpoint() -> &'static str {
    emulator()
}

fn emulator() -> &'static str {
    static EMU: OnceLock<Emulator> = OnceLock::new();
    &EMU.get_or_init(|| {
        let root = workspace_root();
        let python = std::env::var("MOTO_PYTHON")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| root.join("infra/.venv/bin/python"));
        let log = std::fs::File::create(root.join("target/moto-tests.log")).ok();
        let mut child = Command::new(&python)
            .arg(root.join("infra/moto_server.py"))
            .args(["--port", "0", "--watch-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log.map(Stdio::from).unwrap_or_else(Stdio::null))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start the emulator with {}: {e} (run scripts/setup.sh)",
                    python.display()
                )
            });
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("emulator output");
        let port = line
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse::<u16>().ok())
            .unwrap_or_else(|| panic!("emulator did not start: {line:?}"));
        let stdin = child.stdin.take().expect("piped stdin");
        Emulator {
            endpoint: format!("http://127.0.0.1:{port}"),
            _stdin: Mutex::new(stdin),
            _child: Mutex::new(child),
        }
    })
    .endpoint
}

fn unique_prefix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    format!("t{}-{n}-{:04x}", std::process::id(), rand::random::<u16>())
}

/// The signing secret of the test apps' Stripe webhook endpoint (what Stripe's dashboard
/// would show as `whsec_...`).
pub const STRIPE_TEST_SECRET: &str = "whsec_test_apps_stripe_endpoint";
/// The secret API key the test apps present to their fake Stripe.
pub const STRIPE_TEST_KEY: &str = "sk_test_harness";

/// The functions of template.yaml, each with the access key id suffix it signs with on the
/// emulator, so the launcher records what each one needed IAM to allow (see
/// `tests/tests/roles.rs`). The harness's own reads and set-up sign as `TESTS`.
pub const FUNCTION_IDENTITIES: [(&str, &str); 8] = [
    ("API", "ApiFunction"),
    ("WORKER", "TaskWorkerFunction"),
    ("SETTLE", "SettlementFunction"),
    ("SWEEPER", "SweeperFunction"),
    ("WEBHOOKS", "WebhookDispatchFunction"),
    ("EXPORT", "ExportFunction"),
    ("MONTHCLOSE", "MonthCloseFunction"),
    ("PROBE", "ProbeFunction"),
];

/// Fresh AWS-backed ports on the emulator: their own tables, queues and bucket, created from
/// template.yaml. Returns the ports (signing as the harness, `TESTS`) and the environment the
/// functions would see; `ports_as` gives each function ports of its own.
pub async fn aws_ports(
    clock: ManualClock,
    extra_env: &[(&str, &str)],
) -> (shared::ports::Ports, SdkConfig, BTreeMap<String, String>) {
    shared::runtime::ensure_tls();
    let endpoint = emulator();
    let prefix = unique_prefix();
    // Every identity of this app starts so: the launcher can say what the app did in all.
    let key_prefix = format!("AKID{}", prefix.replace('-', ""));
    let sdk = devstack::emulator_sdk_config_as(endpoint, &format!("{key_prefix}TESTS")).await;
    let yaml =
        std::fs::read_to_string(workspace_root().join("template.yaml")).expect("template.yaml");
    let template = devstack::Template::parse(&yaml).expect("template parses");
    let mut env = devstack::create_all(&sdk, &template, &prefix)
        .await
        .expect("bootstrap");
    env.insert("EMULATOR_KEY_PREFIX".into(), key_prefix);
    env.insert("S3_FORCE_PATH_STYLE".into(), "true".into());
    // Debian's font, where the cloud has the layer's (/opt/fonts).
    env.insert(
        "INVOICE_FONT_PATH".into(),
        shared::adapters::pdf::DEFAULT_FONT_PATH.into(),
    );
    env.insert("SQS_DELAYS".into(), "false".into());
    env.insert("WEBHOOKS_ALLOW_PRIVATE".into(), "true".into());
    // Short, so the slow-receiver test does not wait long for the timeout it proves.
    env.insert("WEBHOOK_TIMEOUT_MS".into(), "3000".into());
    env.insert("STRIPE_WEBHOOK_SECRET".into(), STRIPE_TEST_SECRET.into());
    for (k, v) in extra_env {
        env.insert(k.to_string(), v.to_string());
    }
    let ports = ports_with(&sdk, &env, clock);
    (ports, sdk, env)
}

/// Ports on the emulator for the app whose environment is `env`, signing as `identity` (one
/// of `FUNCTION_IDENTITIES`).
pub async fn ports_as(
    env: &BTreeMap<String, String>,
    clock: ManualClock,
    identity: &str,
) -> shared::ports::Ports {
    let key = format!("{}{identity}", env["EMULATOR_KEY_PREFIX"]);
    let sdk = devstack::emulator_sdk_config_as(emulator(), &key).await;
    ports_with(&sdk, env, clock)
}

fn ports_with(
    sdk: &SdkConfig,
    env: &BTreeMap<String, String>,
    clock: ManualClock,
) -> shared::ports::Ports {
    let config = Config::from_lookup(|k| env.get(k).cloned()).expect("config");
    shared::adapters::aws(sdk, &config, Arc::new(clock), Arc::new(OsRandom)).expect("ports")
}

/// Fresh in-memory ports (the twins), on `clock`, with the real webhook client (local mode).
pub fn memory_ports(clock: ManualClock) -> shared::ports::Ports {
    MemoryStack::new(clock, true).ports
}

/// The same, with the store itself (its switches: stale reads, replicas catching up).
pub fn memory_parts(clock: ManualClock) -> (shared::ports::Ports, Memory) {
    let m = MemoryStack::new(clock, true);
    (m.ports, m.store)
}

/// The in-memory twins of every port, and handles on their state.
pub struct MemoryStack {
    pub ports: shared::ports::Ports,
    pub store: Memory,
    pub blobs: Arc<MemoryBlobs>,
    pub queue: Arc<MemoryQueue>,
}

impl MemoryStack {
    /// `local_webhooks`: plain HTTP and loopback receivers allowed, as in local mode. The
    /// queue ignores delays: the test pump parks early messages until the clock reaches them.
    pub fn new(clock: ManualClock, local_webhooks: bool) -> Self {
        Self::with_queue_delays(clock, local_webhooks, false)
    }

    /// The same, with a queue that honours delays as SQS does (the simulator's).
    pub fn with_queue_delays(clock: ManualClock, local_webhooks: bool, delays: bool) -> Self {
        shared::runtime::ensure_tls();
        let webhooks = shared::config::WebhookConfig {
            allow_private: local_webhooks,
            timeout_ms: 3_000,
        };
        let settings = shared::config::Settings {
            webhooks,
            stripe_webhook_secret: Some(STRIPE_TEST_SECRET.into()),
            ..Default::default()
        };
        let sender =
            shared::adapters::webhook_client::WebhookClient::new(webhooks).expect("webhook client");
        let store = Memory::new();
        let queue = Arc::new(MemoryQueue::new(Arc::new(clock.clone()), delays));
        let blobs = Arc::new(MemoryBlobs::default());
        let ports = store.ports(
            queue.clone(),
            blobs.clone(),
            Arc::new(sender),
            Arc::new(clock),
            Arc::new(OsRandom),
            settings,
        );
        MemoryStack {
            ports,
            store,
            blobs,
            queue,
        }
    }
}

/// Where a test app keeps its data: the emulator (the real SDK calls against the tables of
/// template.yaml) or the in-memory twins (the same use cases, in milliseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Aws,
    Memory,
}

impl Backend {
    /// `TEST_BACKEND=memory` runs the suite's backend-neutral tests on the twins.
    pub fn from_env() -> Backend {
        match std::env::var("TEST_BACKEND").as_deref() {
            Ok("memory") => Backend::Memory,
            _ => Backend::Aws,
        }
    }
}

/// The emulator side of an app: its SDK configuration and the names of its resources.
pub struct AwsSide {
    pub sdk: SdkConfig,
    pub env: BTreeMap<String, String>,
}

/// A response: status, headers and JSON body (Null when the body is not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    pub fn replayed(&self) -> bool {
        self.headers
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok())
            == Some("true")
    }
}

/// The functions as the test pump runs them: on the emulator each has ports of its own (its
/// own access key id), on the twins they share one store.
struct Functions {
    worker: Pipeline,
    settle: Pipeline,
    sweeper: Pipeline,
    webhooks: Services,
    export: Services,
    month_close: Services,
    probe: Services,
}

pub struct TestApp {
    fns: Functions,
    /// The credential of the operator `harness`, issued as the bootstrap command would.
    pub operator: String,
    /// The API function's services (what the server in this app runs on).
    pub api: Services,
    /// Handler calls made by `run_until_idle` (what Lambda would bill as invocations).
    pub invocations: std::sync::atomic::AtomicUsize,
    /// Webhook dispatch invocations `run_until_idle` runs at once (1 unless a test sets it:
    /// Lambda runs up to the function's reserved concurrency).
    pub dispatch_instances: std::sync::atomic::AtomicUsize,
    /// Messages received before they were due: (queue, receipt, due time), parked invisible.
    parked: Mutex<Vec<(QueueName, String, i64)>>,
    pub base: String,
    /// The fake Stripe this app's API creates checkout sessions at (and which pays them).
    pub stripe: devstack::fake_stripe::FakeStripe,
    /// The same API on IPv6 loopback, where the machine has it.
    pub base_v6: Option<String>,
    /// Every request `send` made: (x-request-id, method, path, status), for the usage check.
    sent: Mutex<Vec<(String, String, String, u16)>>,
    pub http: reqwest::Client,
    pub backend: Backend,
    aws: Option<AwsSide>,
    /// The twins' state, when the app runs on them.
    pub memory: Option<MemoryStack>,
    pub svc: Services,
    pub clock: ManualClock,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(Faults::none()).await
    }

    /// An app whose store fails where `faults` says (crash tests).
    pub async fn spawn_with(faults: Faults) -> TestApp {
        Self::spawn_full(
            faults,
            Simulated {
                latency_ms: 3_000,
                fail_rate: 0.0,
                reject_rate: 0.0,
                throttle_rate: 0.0,
                ..Default::default()
            },
        )
        .await
    }

    /// An app whose simulated provider behaves as `sim` says.
    pub async fn spawn_sim(sim: Simulated) -> TestApp {
        Self::spawn_full(Faults::none(), sim).await
    }

    pub async fn spawn_full(faults: Faults, sim: Simulated) -> TestApp {
        Self::spawn_routes(faults, |_| Arc::new(sim.clone()) as Arc<dyn Provider>).await
    }

    /// An app whose models are served by the providers `route` gives.
    pub async fn spawn_routes(
        faults: Faults,
        route: impl Fn(Model) -> Arc<dyn Provider>,
    ) -> TestApp {
        Self::spawn_on(Backend::from_env(), faults, route, true).await
    }

    /// An app configured as in the cloud for webhooks: HTTPS only, no private addresses.
    pub async fn spawn_cloud_webhooks() -> TestApp {
        Self::spawn_on(
            Backend::from_env(),
            Faults::none(),
            |_| Arc::new(Simulated::default()) as Arc<dyn Provider>,
            false,
        )
        .await
    }

    /// For what only the emulator shows: the SDK's own calls, S3's presigned links, items
    /// as DynamoDB stores them.
    pub async fn spawn_aws() -> TestApp {
        Self::spawn_aws_with(Faults::none()).await
    }

    pub async fn spawn_aws_with(faults: Faults) -> TestApp {
        let sim = Simulated {
            latency_ms: 3_000,
            fail_rate: 0.0,
            reject_rate: 0.0,
            throttle_rate: 0.0,
            ..Default::default()
        };
        Self::spawn_on(
            Backend::Aws,
            faults,
            move |_| Arc::new(sim.clone()) as Arc<dyn Provider>,
            true,
        )
        .await
    }

    /// On the in-memory twins whatever `TEST_BACKEND` says: for runs too large for the
    /// emulator (its queries walk whole partitions).
    pub async fn spawn_memory_sim(sim: Simulated) -> TestApp {
        Self::spawn_on(
            Backend::Memory,
            Faults::none(),
            move |_| Arc::new(sim.clone()) as Arc<dyn Provider>,
            true,
        )
        .await
    }

    pub async fn spawn_on(
        backend: Backend,
        faults: Faults,
        route: impl Fn(Model) -> Arc<dyn Provider>,
        local_webhooks: bool,
    ) -> TestApp {
        if std::env::var_os("TEST_LOG").is_some() {
            shared::runtime::init_logging();
        }
        let clock = ManualClock::starting_now();
        let stripe = {
            let clock = clock.clone();
            let cfg = devstack::fake_stripe::Config {
                secret_key: STRIPE_TEST_KEY.into(),
                webhook_url: None,
                webhook_secret: STRIPE_TEST_SECRET.into(),
                now: Arc::new(move || clock.now_ms().div_euclid(1_000)),
            };
            devstack::fake_stripe::FakeStripe::start(cfg, 0)
                .await
                .expect("fake Stripe")
        };
        let checkout = Arc::new(shared::adapters::stripe::StripeClient::new(
            stripe.base(),
            Some(STRIPE_TEST_KEY.into()),
        ));
        let (mut ports, aws, memory) = match backend {
            Backend::Aws => {
                let extra: &[(&str, &str)] = if local_webhooks {
                    &[]
                } else {
                    &[("WEBHOOKS_ALLOW_PRIVATE", "false")]
                };
                let (ports, sdk, mut env) = aws_ports(clock.clone(), extra).await;
                env.insert("STRIPE_API_BASE".into(), stripe.base().into());
                env.insert("STRIPE_SECRET_KEY".into(), STRIPE_TEST_KEY.into());
                (ports, Some(AwsSide { sdk, env }), None)
            }
            Backend::Memory => {
                let m = MemoryStack::new(clock.clone(), local_webhooks);
                (m.ports.clone(), None, Some(m))
            }
        };
        ports.checkout = checkout;
        let svc = Services::new(ports);
        let operator = shared::service::operators::create(&svc, "harness")
            .await
            .expect("bootstrap the harness's operator")
            .credential
            .expect("a new operator's credential");
        // Each function's services, crashing where `faults` says (one hook, shared).
        let function = |identity: &'static str| {
            let (aws, svc, clock, faults) = (&aws, &svc, clock.clone(), faults.clone());
            async move {
                match aws {
                    Some(side) => Services::new(ports_as(&side.env, clock, identity).await)
                        .with_faults(faults),
                    None => svc.with_faults(faults),
                }
            }
        };
        let routes = Model::ALL
            .into_iter()
            .map(|m| {
                let provider_model = match m {
                    Model::Sora2 => "sora-2",
                    Model::VeoPro => "veo-3.1-generate-001",
                };
                (
                    m,
                    Route {
                        provider: route(m),
                        provider_model: provider_model.to_string(),
                    },
                )
            })
            .collect();
        let providers = Routes { routes };
        let pipeline = |svc: Services| Pipeline {
            svc,
            providers: providers.clone(),
        };
        let fns = Functions {
            worker: pipeline(function("WORKER").await),
            settle: pipeline(function("SETTLE").await),
            sweeper: pipeline(function("SWEEPER").await),
            webhooks: function("WEBHOOKS").await,
            export: function("EXPORT").await,
            month_close: function("MONTHCLOSE").await,
            probe: function("PROBE").await,
        };
        let api_svc = function("API").await;
        let app = api::app(api_svc.clone());
        let base_v6 = match tokio::net::TcpListener::bind("[::1]:0").await {
            Ok(l6) => {
                let url = l6.local_addr().ok().map(|a| format!("http://{a}"));
                let app6 = app.clone();
                tokio::spawn(async move {
                    let _ = axum::serve(
                        l6,
                        app6.into_make_service_with_connect_info::<std::net::SocketAddr>(),
                    )
                    .await;
                });
                url
            }
            Err(_) => None,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        stripe.set_webhook(&format!("{base}/webhooks/stripe"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .await;
        });
        TestApp {
            fns,
            operator,
            api: api_svc,
            invocations: Default::default(),
            dispatch_instances: std::sync::atomic::AtomicUsize::new(1),
            parked: Mutex::new(Vec::new()),
            base,
            stripe,
            base_v6,
            sent: Mutex::new(Vec::new()),
            http: reqwest::Client::new(),
            backend,
            aws,
            memory,
            svc,
            clock,
            server,
        }
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Resp {
        static N: AtomicU32 = AtomicU32::new(0);
        let request_id = format!("req_t{}", N.fetch_add(1, Ordering::SeqCst));
        let method_name = method.to_string();
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("x-request-id", &request_id)
            .header("user-agent", "integration-tests/1");
        if let Some(a) = auth {
            req = req.bearer_auth(a);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.expect("request reaches the API");
        let status = resp.status().as_u16();
        self.sent
            .lock()
            .expect("sent")
            .push((request_id, method_name, path.to_string(), status));
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
        }
    }

    /// Runs the task worker and settlement (their real handlers, via the SQS pump) until no
    /// message is due at the current (manual) time. Returns how many messages were handled.
    pub async fn run_until_idle(&self) -> usize {
        self.run_until_idle_with(false).await
    }

    /// The same; with `duplicate`, every task message is delivered twice (concurrently, in
    /// reversed order), as a standard queue may.
    pub async fn run_until_idle_with(&self, duplicate: bool) -> usize {
        // The pump receives and deletes as the harness: in the cloud that is the event source
        // mapping's work (SAM grants it with the SQS event), not the function code's.
        let queue = self.svc.queue.as_ref();
        let mut total = 0;
        for _ in 0..500 {
            let now = self.clock.now_ms();
            let due: Vec<(QueueName, String)> = {
                let mut parked = self.parked.lock().expect("parked");
                let (due, later): (Vec<_>, Vec<_>) =
                    parked.drain(..).partition(|(_, _, nb)| *nb <= now);
                *parked = later;
                due.into_iter().map(|(q, r, _)| (q, r)).collect()
            };
            for (name, receipt) in due {
                queue.release(name, &receipt, 0).await.expect("unpark");
            }
            let p = &self.fns.worker;
            let t = devstack::pump::pump_round(
                queue,
                QueueName::Tasks,
                now,
                true,
                0,
                |ev| async move {
                    if !duplicate {
                        return task_worker::handle_event(p, ev).await;
                    }
                    let n = ev.records.len();
                    let mut doubled = ev.clone();
                    // The second copy is a second delivery of the same message.
                    doubled
                        .records
                        .extend(ev.records.iter().cloned().map(|mut r| {
                            r.attributes.insert(
                                shared::adapters::lambda::RECEIVE_COUNT.to_string(),
                                "2".to_string(),
                            );
                            r
                        }));
                    doubled.records.reverse();
                    for (i, r) in doubled.records.iter_mut().enumerate() {
                        // Copy i of original k sits at 2n-1-k or n-1-k: name it by k.
                        r.message_id = Some(format!("{}#{i}", (2 * n - 1 - i) % n));
                    }
                    let resp = task_worker::handle_event(p, doubled).await;
                    let mut out = SqsBatchResponse::default();
                    let mut seen = std::collections::HashSet::new();
                    for f in resp.batch_item_failures {
                        let k = f
                            .item_identifier
                            .split('#')
                            .next()
                            .unwrap_or("")
                            .to_string();
                        if seen.insert(k.clone()) {
                            let mut g = BatchItemFailure::default();
                            g.item_identifier = k;
                            out.batch_item_failures.push(g);
                        }
                    }
                    out
                },
            )
            .await
            .expect("pump tasks");
            let settle = &self.fns.settle;
            let s = devstack::pump::pump_round(queue, QueueName::Settle, now, true, 0, |ev| {
                settlement::handle_event(settle, ev)
            })
            .await
            .expect("pump settle");
            let webhooks = &self.fns.webhooks;
            let instances = self.dispatch_instances.load(Ordering::Relaxed);
            let e = devstack::pump::pump_round_in(
                queue,
                QueueName::Events,
                now,
                true,
                0,
                instances,
                |ev| webhook_dispatch::handle_event(webhooks, ev),
            )
            .await
            .expect("pump events");
            let export = &self.fns.export;
            let x = devstack::pump::pump_round(queue, QueueName::Exports, now, true, 0, |ev| {
                export::handle_event(export, ev)
            })
            .await
            .expect("pump exports");
            {
                let mut parked = self.parked.lock().expect("parked");
                for (name, round) in [
                    (QueueName::Tasks, &t),
                    (QueueName::Events, &e),
                    (QueueName::Exports, &x),
                ] {
                    parked.extend(
                        round
                            .deferred
                            .iter()
                            .map(|(r, due)| (name, r.clone(), *due)),
                    );
                }
            }
            self.invocations.fetch_add(
                t.invocations + s.invocations + e.invocations + x.invocations,
                Ordering::Relaxed,
            );
            let handled = t.handled + s.handled + e.handled + x.handled;
            total += handled;
            if handled == 0 {
                return total;
            }
        }
        panic!("the pipeline did not go idle after 500 rounds");
    }

    /// Moves time forward in steps, running everything due at each, until the batch settles
    /// (or `max_ms` of simulated time pass). Returns the simulated time it took.
    pub async fn drive_to_settlement(
        &self,
        account: &str,
        batch_id: &str,
        step_ms: i64,
        max_ms: i64,
    ) -> i64 {
        let mut elapsed = 0;
        loop {
            self.run_until_idle().await;
            let b = self
                .svc
                .batches
                .get(account, batch_id)
                .await
                .expect("read batch")
                .expect("batch exists");
            if b.status == BatchStatus::Completed {
                return elapsed;
            }
            assert!(
                elapsed < max_ms,
                "batch {batch_id} did not settle within {max_ms} ms of simulated time"
            );
            self.clock.advance_ms(step_ms);
            elapsed += step_ms;
        }
    }

    /// The emulator side, when this app runs on the emulator (for checks only it can make).
    pub fn aws_side(&self) -> Option<&AwsSide> {
        self.aws.as_ref()
    }

    /// The emulator side of this app; only tests spawned with `spawn_aws` have one.
    pub fn aws(&self) -> &AwsSide {
        self.aws
            .as_ref()
            .expect("this test runs on the emulator: spawn it with TestApp::spawn_aws")
    }

    /// PUTs a file to a presigned upload link (the emulator's S3, or the twin's bucket).
    /// The tags of a stored object (`k=v&k2=v2`), from the emulator's S3 or the twin's bucket.
    pub async fn object_tags(&self, key: &str) -> Option<String> {
        if let Some(m) = &self.memory {
            return m.blobs.object(key).and_then(|o| o.tags);
        }
        let aws = self.aws();
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&aws.sdk)
                .force_path_style(true)
                .build(),
        );
        let out = s3
            .get_object_tagging()
            .bucket(&aws.env["DATA_BUCKET"])
            .key(key)
            .send()
            .await
            .ok()?;
        let tags: Vec<String> = out
            .tag_set()
            .iter()
            .map(|t| format!("{}={}", t.key(), t.value()))
            .collect();
        Some(tags.join("&"))
    }

    /// Uploads to a file's `upload_url` with its `upload_headers`, as a customer would.
    pub async fn upload(&self, file: &Value, body: Vec<u8>) -> u16 {
        let url = file["upload_url"].as_str().expect("upload_url");
        let headers: BTreeMap<String, String> =
            serde_json::from_value(file["upload_headers"].clone()).expect("upload_headers");
        match &self.memory {
            Some(m) => {
                let key = memory_key(url);
                let content_type = headers.get("content-type").expect("content type");
                let tags = headers.get("x-amz-tagging").map(String::as_str);
                m.blobs
                    .put(&key, body, content_type, tags)
                    .await
                    .expect("put");
                200
            }
            None => {
                let mut put = self.http.put(url).body(body);
                for (name, value) in &headers {
                    put = put.header(name, value);
                }
                put.send().await.expect("upload").status().as_u16()
            }
        }
    }

    /// GETs what a presigned download link serves.
    pub async fn download(&self, url: &str) -> Vec<u8> {
        match &self.memory {
            Some(m) => m
                .blobs
                .get(&memory_key(url))
                .await
                .expect("get")
                .unwrap_or_default(),
            None => self
                .http
                .get(url)
                .send()
                .await
                .expect("download")
                .bytes()
                .await
                .expect("bytes")
                .to_vec(),
        }
    }

    /// One run of the synthetic probe against `base` (this app's API, or anything else).
    pub async fn probe(&self, base: &str, key: Option<String>) -> Option<String> {
        probe::Probe::new(base, key)
            .expect("probe")
            .run(&self.fns.probe)
            .await
            .expect("record the probe")
    }

    /// What the month-close function does on its schedule, for `month`.
    pub async fn close_month(&self, month: &str) -> shared::service::sla::CloseSummary {
        shared::service::sla::close_month(&self.fns.month_close, month)
            .await
            .expect("close the month")
    }

    pub async fn sweep(&self) -> shared::service::pipeline::sweeper::SweepReport {
        shared::service::pipeline::sweeper::sweep(&self.fns.sweeper)
            .await
            .expect("sweep")
    }

    /// Every event the account's event log holds (what webhook dispatch stored), newest first.
    pub async fn events_of(&self, account: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut before = None;
        loop {
            let (page, more) = self
                .svc
                .events
                .list(account, None, 200, before.take())
                .await
                .expect("list events");
            before = page.last().map(|e| (e.created_ms, e.event_id.clone()));
            out.extend(
                page.iter()
                    .map(|e| serde_json::from_str(&e.body).unwrap_or(Value::Null)),
            );
            if !more {
                return out;
            }
        }
    }

    /// The requests this app has made to the emulator so far, per operation
    /// (`dynamodb.PutItem`, ...), as the emulator launcher counted them.
    pub async fn emulator_operations(&self) -> BTreeMap<String, u64> {
        let prefix = &self.aws().env["EMULATOR_KEY_PREFIX"];
        self.launcher_stats(&format!("prefix={prefix}")).await
    }

    /// The same for one function of this app (`identity` from `FUNCTION_IDENTITIES`).
    pub async fn emulator_operations_of(&self, identity: &str) -> BTreeMap<String, u64> {
        let prefix = &self.aws().env["EMULATOR_KEY_PREFIX"];
        self.launcher_stats(&format!("key={prefix}{identity}"))
            .await
    }

    async fn launcher_stats(&self, query: &str) -> BTreeMap<String, u64> {
        let url = format!("{}/_launcher/stats?{query}", emulator());
        self.http
            .get(&url)
            .send()
            .await
            .expect("launcher stats")
            .json()
            .await
            .expect("launcher stats json")
    }

    /// How many DynamoDB writes this app has made so far.
    pub async fn dynamodb_writes(&self) -> u64 {
        const WRITES: [&str; 5] = [
            "dynamodb.PutItem",
            "dynamodb.UpdateItem",
            "dynamodb.DeleteItem",
            "dynamodb.TransactWriteItems",
            "dynamodb.BatchWriteItem",
        ];
        self.emulator_operations()
            .await
            .iter()
            .filter(|(op, _)| WRITES.contains(&op.as_str()))
            .map(|(_, n)| n)
            .sum()
    }

    pub async fn get(&self, path: &str, key: &str) -> Resp {
        self.send("GET", path, Some(key), None).await
    }

    pub async fn post(&self, path: &str, key: &str, body: &Value) -> Resp {
        self.send("POST", path, Some(key), Some(body.to_string().into_bytes()))
            .await
    }

    pub async fn admin_post(&self, path: &str, body: &Value) -> Resp {
        self.post(path, &self.operator, body).await
    }

    pub async fn admin_get(&self, path: &str) -> Resp {
        self.get(path, &self.operator).await
    }

    /// A GET whose answer is text (a printable page, a CSV).
    pub async fn get_text(&self, path: &str, key: &str) -> String {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(key)
            .send()
            .await
            .expect("GET")
            .text()
            .await
            .unwrap_or_default()
    }

    /// A pay-as-you-go account with `credits` granted and one key. Returns (account, key).
    pub async fn account_with(&self, credits: i64) -> (String, String) {
        self.account_with_concurrency(credits, 4).await
    }

    /// The same with the account's `max_concurrency` set.
    pub async fn account_with_concurrency(
        &self,
        credits: i64,
        max_concurrency: u32,
    ) -> (String, String) {
        let r = self
            .admin_post(
                "/admin/v1/accounts",
                &json!({"request_id": format!("acct-{}", rand::random::<u64>()), "name": "Acme Films", "plan": "payg", "retention_days": 90, "max_concurrency": max_concurrency}),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        let id = r.body["id"].as_str().expect("account id").to_string();
        if credits > 0 {
            self.grant(&id, credits).await;
        }
        let k = self
            .admin_post(
                &format!("/admin/v1/accounts/{id}/api-keys"),
                &json!({"name": "ci"}),
            )
            .await;
        assert_eq!(k.status, 201, "{:?}", k.body);
        (id, k.body["secret"].as_str().expect("secret").to_string())
    }

    pub async fn grant(&self, account: &str, amount: i64) -> Resp {
        let r = self
            .admin_post(
                &format!("/admin/v1/accounts/{account}/grants"),
                &json!({"request_id": format!("g-{}", rand::random::<u64>()), "amount": amount, "reason": "test credit"}),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        r
    }

    pub async fn account(&self, id: &str) -> AccountRecord {
        self.svc
            .accounts
            .get(id)
            .await
            .expect("read")
            .expect("account exists")
    }

    pub async fn batches_of(&self, account: &str) -> Vec<BatchRecord> {
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let (page, more) = self
                .svc
                .batches
                .list(account, None, 200, cursor.take())
                .await
                .expect("list");
            cursor = page.last().map(|b| b.batch_id.clone());
            all.extend(page);
            if !more {
                return all;
            }
        }
    }

    /// The ledger of an account walked in full through the `Ledger` port (the one checked
    /// sum): its total, count and anything out of sequence.
    pub async fn ledger_tally(&self, account: &str) -> shared::domain::ledger::Tally {
        let mut tally = shared::domain::ledger::Tally::from_start();
        let mut after = None;
        loop {
            let page = self
                .svc
                .ledger
                .page(account, shared::ports::TimeRange::ALL, after.take())
                .await
                .expect("ledger page");
            for e in &page.items {
                tally
                    .add(e.seq, e.amount, e.balance_after)
                    .expect("ledger sum in range");
            }
            match page.next {
                Some(t) => after = Some(t),
                None => return tally,
            }
        }
    }

    /// Ledger entries of one kind for an account (all of them, read through the port).
    pub async fn ledger_entries(&self, account: &str, kind: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .svc
                .ledger
                .page(account, shared::ports::TimeRange::ALL, after.take())
                .await
                .expect("ledger page");
            out.extend(page.items.iter().filter(|e| e.kind.as_str() == kind).map(|e| {
                json!({"amount": e.amount, "seq": e.seq, "batch_id": e.batch_id, "request_id": e.request_id})
            }));
            match page.next {
                Some(t) => after = Some(t),
                None => return out,
            }
        }
    }

    /// Every account (the operator's scan).
    pub async fn all_accounts(&self) -> Vec<AccountRecord> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self.svc.accounts.scan(after.take()).await.expect("scan");
            out.extend(page.items);
            match page.next {
                Some(t) => after = Some(t),
                None => return out,
            }
        }
    }

    /// The usage log of one account (or `_unauthenticated`, `_operator`), oldest first.
    pub async fn usage_of(&self, account: &str) -> Vec<shared::ports::records::UsageRecord> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .svc
                .usage
                .page(account, shared::ports::TimeRange::ALL, after.take())
                .await
                .expect("usage page");
            out.extend(page.items);
            match page.next {
                Some(t) => after = Some(t),
                None => return out,
            }
        }
    }

    /// Every `/v1` and `/admin/v1` request this app's `send` made is in `enterprise_api_usage`
    /// with its method, route template (matching the path), status and request id.
    pub async fn assert_usage_logged(&self) {
        shared::service::access::write_tally(&self.api).await;
        let mut logged = std::collections::HashMap::new();
        let mut tallied = 0;
        let mut owners: Vec<String> = self
            .all_accounts()
            .await
            .into_iter()
            .map(|a| a.account_id)
            .collect();
        owners.extend(["_unauthenticated".to_string(), "_operator".to_string()]);
        for owner in owners {
            for u in self.usage_of(&owner).await {
                if u.kind == "unauthenticated" {
                    tallied += u.count.unwrap_or(0);
                } else {
                    logged.insert(u.request_id.clone(), u);
                }
            }
        }
        let sent = self.sent.lock().expect("sent").clone();
        let mut nobodys = 0;
        for (id, method, path, status) in sent {
            let path = path.split('?').next().unwrap_or("");
            if !(path.starts_with("/v1/") || path.starts_with("/admin/")) {
                continue;
            }
            // Calls without a valid key are counted per source and minute, not one by one.
            let Some(u) = logged.get(&id) else {
                assert!(
                    [401, 403, 404].contains(&status),
                    "{method} {path} ({id}, {status}) is not in the usage log"
                );
                nobodys += 1;
                continue;
            };
            assert_eq!(
                (u.method.as_str(), u.status),
                (method.as_str(), status),
                "{path}"
            );
            let (r, p): (Vec<&str>, Vec<&str>) =
                (u.route.split('/').collect(), path.split('/').collect());
            assert!(
                (u.route == "unmatched" && status == 404)
                    || (r.len() == p.len()
                        && r.iter().zip(&p).all(|(a, b)| a.starts_with('{') || a == b)),
                "route {} does not describe {path}",
                u.route
            );
            assert_eq!(u.source_ip.as_deref(), Some("127.0.0.1"), "{path}");
            assert_eq!(u.user_agent.as_deref(), Some("integration-tests/1"));
            if path.starts_with("/admin/") && u.route != "unmatched" {
                assert_eq!(u.account_id, "_operator");
            }
        }
        assert!(
            tallied >= nobodys,
            "{nobodys} calls without a valid key, {tallied} in the per-source tallies"
        );
    }

    /// The invariants of DESIGN.md section 3 that hold at rest, for every account of this
    /// test: conservation (balance == sum(ledger), balance >= 0, the ledger is gap-free) and
    /// holds (held == what unsettled batches still hold).
    pub async fn assert_invariants(&self) {
        self.assert_usage_logged().await;
        for a in self.all_accounts().await {
            let tally = self.ledger_tally(&a.account_id).await;
            assert!(tally.is_clean(), "{}: {:?}", a.account_id, tally.findings);
            let (sum, count) = (tally.sum, tally.count);
            assert_eq!(
                a.balance, sum,
                "conservation: balance == sum(ledger) for {}",
                a.account_id
            );
            assert!(
                a.balance >= Credits::ZERO,
                "balance of {} is negative",
                a.account_id
            );
            assert_eq!(
                count, a.ledger_seq,
                "ledger of {} has gaps or extras",
                a.account_id
            );
            let batches = self.batches_of(&a.account_id).await;
            let open: Credits = batches
                .iter()
                .filter(|b| b.status != BatchStatus::Completed)
                .map(|b| b.credits.held - b.credits.refunded - b.credits.released)
                .sum();
            assert_eq!(
                a.held, open,
                "held credits of {} match its open batches",
                a.account_id
            );
            let refunds: i64 = self
                .ledger_entries(&a.account_id, "refund")
                .await
                .iter()
                .map(|e| e["amount"].as_i64().unwrap_or(0))
                .sum();
            let tallied: i64 = batches.iter().map(|b| b.credits.refunded.value()).sum();
            assert_eq!(
                refunds, tallied,
                "every refund entry is in its batch's tally"
            );
            let releases: i64 = self
                .ledger_entries(&a.account_id, "release")
                .await
                .iter()
                .map(|e| e["amount"].as_i64().unwrap_or(0))
                .sum();
            let tallied: i64 = batches.iter().map(|b| b.credits.released.value()).sum();
            assert_eq!(
                releases, tallied,
                "every release entry is in its batch's tally"
            );
            assert_eq!(
                a.lifetime_released.value(),
                releases,
                "lifetime_released of {}",
                a.account_id
            );
            for b in batches
                .iter()
                .filter(|b| b.status == BatchStatus::Completed)
            {
                let st = b.settlement.expect("a completed batch has its settlement");
                let c = st.counts;
                assert_eq!(st.held, b.credits.held, "{}", b.batch_id);
                assert_eq!(
                    st.held.value(),
                    st.charged.value() + st.refunded.value() + st.released.value(),
                    "closure of {}",
                    b.batch_id
                );
                assert_eq!(
                    st.charged.value(),
                    b.unit_price.value() * i64::from(c.succeeded + c.cancelled + c.rejected),
                    "{}",
                    b.batch_id
                );
                assert_eq!(
                    st.refunded.value(),
                    b.unit_price.value() * i64::from(c.failed + c.timed_out),
                    "{}",
                    b.batch_id
                );
                assert_eq!(
                    st.released.value(),
                    b.unit_price.value() * i64::from(c.released),
                    "{}",
                    b.batch_id
                );
            }
        }
    }
}

/// The object key a twin's presigned link names (`memory://bucket/{key}?...`).
fn memory_key(url: &str) -> String {
    url.strip_prefix("memory://bucket/")
        .and_then(|rest| rest.split('?').next())
        .unwrap_or_default()
        .to_string()
}

/// `n` tasks for a batch request.
pub fn tasks(n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"prompt": format!("A lighthouse at dusk, take {i}")}))
            .collect(),
    )
}

/// A fault hook that fires once at `point`.
pub fn fail_once_at(point: &'static str) -> Faults {
    fail_once_at_seen(point).0
}

/// `fail_once_at`, with a flag that turns true once the fault has fired: a crash test asserts
/// it did, so a code path that no longer passes the point cannot pass the test unnoticed.
pub fn fail_once_at_seen(point: &'static str) -> (Faults, Arc<std::sync::atomic::AtomicBool>) {
    let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = fired.clone();
    (
        Faults::new(move |p| p == point && !fired.swap(true, Ordering::SeqCst)),
        seen,
    )
}
