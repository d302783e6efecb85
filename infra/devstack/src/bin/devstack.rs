//! Local stack helper used by scripts/dev.sh.
//!
//! - `devstack bootstrap --endpoint URL --prefix P [--template template.yaml]`: creates the
//!   template's tables and bucket in the emulator and prints the functions' environment as
//!   `KEY=value` lines.
//! - `devstack operator --name NAME [--rotate]`: the bootstrap command for named operators.
//!   With a deployment's environment (the API function's variables and AWS credentials; for
//!   the local stack, the file scripts/dev.sh writes) it issues NAME a credential and prints
//!   it once; `--rotate` gives an existing operator a new one and revokes the old (for a
//!   lost credential). From then on operators manage each other through
//!   `/admin/v1/operators`.
//! - `devstack probe-key --api URL --operator-credential vgo_...`: opens the synthetic probe's
//!   account and prints a read-only key for it (in the cloud that key goes in the secret
//!   `ProbeKeySecretArn` names).
//! - `devstack demo --api URL --operator-credential vgo_...`: opens a demo account through the
//!   operator API, grants it a prepaid pack, issues a key and prints how to use it.
//! - `devstack fake-stripe --port P --webhook URL --webhook-secret whsec_... --secret-key
//!   sk_test_...`: serves the fake Stripe (`devstack::fake_stripe`) until stopped: checkout
//!   sessions, a payment page, and signed events to the webhook URL.

use devstack::{create_all, emulator_sdk_config, Template};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::ExitCode;

fn args() -> (String, HashMap<String, String>) {
    let mut it = std::env::args().skip(1);
    let cmd = it.next().unwrap_or_default();
    let mut flags = HashMap::new();
    while let Some(k) = it.next() {
        if let Some(name) = k.strip_prefix("--") {
            flags.insert(name.to_string(), it.next().unwrap_or_default());
        }
    }
    (cmd, flags)
}

#[tokio::main]
async fn main() -> ExitCode {
    let (cmd, flags) = args();
    let result = match cmd.as_str() {
        "bootstrap" => bootstrap(&flags).await,
        "demo" => demo(&flags).await,
        "operator" => operator(&flags).await,
        "probe-key" => probe_key(&flags).await,
        "fake-stripe" => fake_stripe(&flags).await,
        _ => Err("usage: devstack bootstrap --endpoint URL --prefix P | devstack operator --name NAME [--rotate] | devstack demo --api URL --operator-credential C | devstack probe-key --api URL --operator-credential C | devstack fake-stripe --port P --webhook URL --webhook-secret S --secret-key K".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("devstack: {e}");
            ExitCode::FAILURE
        }
    }
}

fn flag<'a>(flags: &'a HashMap<String, String>, name: &str) -> Result<&'a str, String> {
    flags
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or(format!("--{name} is required"))
}

async fn bootstrap(flags: &HashMap<String, String>) -> Result<(), String> {
    let endpoint = flag(flags, "endpoint")?;
    let prefix = flag(flags, "prefix")?;
    let path = flags
        .get("template")
        .map(String::as_str)
        .unwrap_or("template.yaml");
    let yaml = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let template = Template::parse(&yaml).map_err(|e| e.to_string())?;
    let sdk = emulator_sdk_config(endpoint).await;
    let env = create_all(&sdk, &template, prefix)
        .await
        .map_err(|e| e.to_string())?;
    for (k, v) in env {
        println!("{k}={v}");
    }
    Ok(())
}

async fn operator(flags: &HashMap<String, String>) -> Result<(), String> {
    let name = flag(flags, "name")?;
    let svc = shared::runtime::services_from_env()
        .await
        .map_err(|e| format!("the deployment's environment: {e}"))?;
    let op = if flags.contains_key("rotate") {
        shared::service::operators::rotate(&svc, name).await
    } else {
        shared::service::operators::create(&svc, name).await
    }
    .map_err(|e| e.to_string())?;
    let credential = op.credential.ok_or("no credential was issued")?;
    println!("{credential}");
    Ok(())
}

async fn call(
    client: &reqwest::Client,
    url: String,
    token: &str,
    body: Value,
) -> Result<Value, String> {
    let resp = client
        .post(&url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let v: Value = resp.json().await.map_err(|e| format!("{url}: {e}"))?;
    if !status.is_success() {
        return Err(format!("{url}: {status} {v}"));
    }
    Ok(v)
}

async fn probe_key(flags: &HashMap<String, String>) -> Result<(), String> {
    let api = flag(flags, "api")?.trim_end_matches('/').to_string();
    let token = flag(flags, "operator-credential")?;
    shared::runtime::ensure_tls();
    let client = reqwest::Client::new();
    let account = call(
        &client,
        format!("{api}/admin/v1/accounts"),
        token,
        json!({"request_id": "sla-probe-account", "name": "Synthetic probe", "plan": "payg", "retention_days": 30, "max_concurrency": 1}),
    )
    .await?;
    let id = account["id"].as_str().ok_or("no account id")?.to_string();
    let key = call(
        &client,
        format!("{api}/admin/v1/accounts/{id}/api-keys"),
        token,
        json!({"name": "sla-probe", "scopes": ["read"]}),
    )
    .await?;
    println!("{}", key["secret"].as_str().ok_or("no key secret")?);
    Ok(())
}

async fn demo(flags: &HashMap<String, String>) -> Result<(), String> {
    let api = flag(flags, "api")?.trim_end_matches('/').to_string();
    let token = flag(flags, "operator-credential")?;
    shared::runtime::ensure_tls();
    let client = reqwest::Client::new();
    let account = call(
        &client,
        format!("{api}/admin/v1/accounts"),
        token,
        json!({"request_id": "demo-account", "name": "Demo Enterprise", "plan": "payg", "retention_days": 90, "max_concurrency": 8}),
    )
    .await?;
    let id = account["id"].as_str().ok_or("no account id")?.to_string();
    call(
        &client,
        format!("{api}/admin/v1/accounts/{id}/grants"),
        token,
        json!({"request_id": "demo-pack", "pack": "pack_2000", "reason": "demo prepaid pack"}),
    )
    .await?;
    let key = call(
        &client,
        format!("{api}/admin/v1/accounts/{id}/api-keys"),
        token,
        json!({"name": "demo"}),
    )
    .await?;
    let secret = key["secret"].as_str().ok_or("no key secret")?;
    let tasks: Vec<Value> = (1..=10)
        .map(|i| json!({"prompt": format!("A paper boat drifting down a rainy street, shot {i}")}))
        .collect();
    let body = json!({"request_id": "demo-batch-1", "model": "sora-2", "tasks": tasks});
    println!("Demo account: {id} (prepaid pack_2000: 227620 credits)");
    println!("API key (shown once): {secret}");
    println!();
    println!("Try:");
    println!("  curl -s {api}/v1/credits -H 'Authorization: Bearer {secret}'");
    println!("  curl -s -X POST {api}/v1/batches -H 'Authorization: Bearer {secret}' -H 'Content-Type: application/json' \\");
    println!("    -d '{body}'");
    println!("  curl -s {api}/v1/credits/ledger -H 'Authorization: Bearer {secret}'");
    Ok(())
}

async fn fake_stripe(flags: &HashMap<String, String>) -> Result<(), String> {
    let port: u16 = flag(flags, "port")?
        .parse()
        .map_err(|_| "--port must be a port number")?;
    let cfg = devstack::fake_stripe::Config {
        secret_key: flag(flags, "secret-key")?.to_string(),
        webhook_url: Some(flag(flags, "webhook")?.to_string()),
        webhook_secret: flag(flags, "webhook-secret")?.to_string(),
        now: std::sync::Arc::new(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
        }),
    };
    let fake = devstack::fake_stripe::FakeStripe::start(cfg, port)
        .await
        .map_err(|e| format!("fake Stripe on port {port}: {e}"))?;
    println!("READY {}", fake.base());
    std::future::pending::<()>().await;
    Ok(())
}
