//! Test harness: the real API over real HTTP against the AWS emulator on loopback.
//!
//! One emulator per test process, started on a free port and gone when the process ends (it
//! exits when its stdin closes). Each test gets its own tables and bucket (a fresh prefix),
//! because the emulator copies whole tables on every transaction, and its own API server on
//! 127.0.0.1:0.

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::AttributeValue;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use shared::adapters::records::{AccountRecord, BatchRecord};
use shared::adapters::{Faults, Store};
use shared::config::Config;
use shared::domain::batch::BatchStatus;
use shared::service::clock::ManualClock;
use shared::service::Services;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

pub const OPERATOR_TOKEN: &str = "op_test_token_for_the_suite";

struct Emulator {
    endpoint: String,
    // Held open for the life of the process; the emulator exits when it closes.
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
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

/// A response: status, headers and JSON body (Null when the body is not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
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

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub sdk: SdkConfig,
    pub env: BTreeMap<String, String>,
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
        let endpoint = emulator();
        let sdk = devstack::emulator_sdk_config(endpoint).await;
        let yaml =
            std::fs::read_to_string(workspace_root().join("template.yaml")).expect("template.yaml");
        let template = devstack::Template::parse(&yaml).expect("template parses");
        let mut env = devstack::create_all(&sdk, &template, &unique_prefix())
            .await
            .expect("bootstrap");
        env.insert(
            "OPERATOR_TOKEN_SHA256".into(),
            shared::domain::api_key::hash_secret(OPERATOR_TOKEN),
        );
        env.insert("S3_FORCE_PATH_STYLE".into(), "true".into());
        let config = Config::from_lookup(|k| env.get(k).cloned()).expect("config");
        let clock = ManualClock::starting_now();
        let store = Store::new(&sdk, config);
        let svc = Services::new(store.clone(), Arc::new(clock.clone()));
        let app = api::app(Services::new(
            store.with_faults(faults),
            Arc::new(clock.clone()),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestApp {
            base,
            http: reqwest::Client::new(),
            sdk,
            env,
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
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(a) = auth {
            req = req.bearer_auth(a);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.expect("request reaches the API");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, key: &str) -> Resp {
        self.send("GET", path, Some(key), None).await
    }

    pub async fn post(&self, path: &str, key: &str, body: &Value) -> Resp {
        self.send("POST", path, Some(key), Some(body.to_string().into_bytes()))
            .await
    }

    pub async fn admin_post(&self, path: &str, body: &Value) -> Resp {
        self.post(path, OPERATOR_TOKEN, body).await
    }

    /// A pay-as-you-go account with `credits` granted and one key. Returns (account, key).
    pub async fn account_with(&self, credits: i64) -> (String, String) {
        let r = self
            .admin_post(
                "/admin/v1/accounts",
                &json!({"request_id": format!("acct-{}", rand::random::<u64>()), "name": "Acme Films", "plan": "payg", "retention_days": 90, "max_concurrency": 4}),
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
                &json!({"request_id": format!("g-{}", rand::random::<u64>()), "amount": amount, "reason": "test credit", "actor": "harness"}),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        r
    }

    pub async fn account(&self, id: &str) -> AccountRecord {
        self.svc
            .store
            .get_account(id)
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
                .store
                .list_batches(account, None, 200, cursor.take())
                .await
                .expect("list");
            cursor = page.last().map(|b| b.batch_id.clone());
            all.extend(page);
            if !more {
                return all;
            }
        }
    }

    /// Ledger entries of one kind for an account (all of them, read from the table).
    pub async fn ledger_entries(&self, account: &str, kind: &str) -> Vec<Value> {
        let out = aws_sdk_dynamodb::Client::new(&self.sdk)
            .query()
            .table_name(&self.env["LEDGER_TABLE"])
            .key_condition_expression("account_id = :a")
            .expression_attribute_values(":a", AttributeValue::S(account.into()))
            .send()
            .await
            .expect("query ledger");
        out.items
            .unwrap_or_default()
            .into_iter()
            .filter(|i| matches!(i.get("kind"), Some(AttributeValue::S(k)) if k == kind))
            .map(|i| {
                let n = |k: &str| match i.get(k) {
                    Some(AttributeValue::N(v)) => v.parse::<i64>().unwrap_or(0),
                    _ => 0,
                };
                let s = |k: &str| match i.get(k) {
                    Some(AttributeValue::S(v)) => Value::String(v.clone()),
                    _ => Value::Null,
                };
                json!({"amount": n("amount"), "seq": n("seq"), "batch_id": s("batch_id"), "request_id": s("request_id")})
            })
            .collect()
    }

    /// The invariants of DESIGN.md section 3 that hold at rest, for every account of this
    /// test: conservation (balance == sum(ledger), balance >= 0, the ledger is gap-free) and
    /// holds (held == what unsettled batches still hold).
    pub async fn assert_invariants(&self) {
        let ddb = aws_sdk_dynamodb::Client::new(&self.sdk);
        let scan = ddb
            .scan()
            .table_name(&self.env["ACCOUNTS_TABLE"])
            .send()
            .await
            .expect("scan accounts");
        for item in scan.items.unwrap_or_default() {
            let a: AccountRecord = serde_dynamo::from_item(item).expect("account record");
            let (sum, count) = self
                .svc
                .store
                .ledger_totals(&a.account_id)
                .await
                .expect("ledger totals");
            assert_eq!(
                a.balance, sum,
                "conservation: balance == sum(ledger) for {}",
                a.account_id
            );
            assert!(a.balance >= 0, "balance of {} is negative", a.account_id);
            assert_eq!(
                count, a.ledger_seq,
                "ledger of {} has gaps or extras",
                a.account_id
            );
            let open: i64 = self
                .batches_of(&a.account_id)
                .await
                .iter()
                .filter(|b| b.status != BatchStatus::Completed)
                .map(|b| {
                    b.credits.held.value() - b.credits.charged.value() - b.credits.refunded.value()
                })
                .sum();
            assert_eq!(
                a.held, open,
                "held credits of {} match its open batches",
                a.account_id
            );
        }
    }
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
    let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    Faults::new(move |p| p == point && !fired.swap(true, Ordering::SeqCst))
}
