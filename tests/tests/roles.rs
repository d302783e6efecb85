//! Least privilege, checked against what the functions really did.
//!
//! In the HTTP suite every function signs its AWS requests with an access key id of its own
//! (`integration_tests::FUNCTION_IDENTITIES`), and the emulator launcher records, per key id,
//! each (action, resource) pair IAM would evaluate: a transaction's items one by one, a
//! query's index, an object key's shape (`accounts/*/exports/*`). With
//! `EMULATOR_GRANTS_LOG=FILE` it appends them to FILE, so a whole run adds up.
//!
//! `scripts/test.sh` runs the suite with that log and then the ignored test below, which
//! reads each function's policies from template.yaml and fails on
//! - an operation a function made that its role does not allow (it would fail in the cloud);
//! - a statement of a role that no operation of the suite needed (a grant wider than the
//!   work), except the few the suite cannot reach, listed below with the reason.
//!
//! The quick tests hold the template itself to the rules that need no run: no wildcard
//! actions, every resource named, the Ledger append-only for the functions facing the
//! internet.

use devstack::{untag, Template};
use integration_tests::FUNCTION_IDENTITIES;
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Grants the suite cannot exercise on every run, with why. (function, action, resource
/// pattern, reason)
const NOT_EXERCISED_HERE: [(&str, &str, &str, &str); 5] = [
    (
        "TaskWorkerFunction",
        "secretsmanager:GetSecretValue",
        "secret/*",
        "the providers' credentials: the suite talks to fake providers with credentials it \
         hands over directly (tests/src/fakes.rs); the Secrets Manager reader is the same \
         `SecretSource` port the credential tests drive",
    ),
    (
        "ApiFunction",
        "secretsmanager:GetSecretValue",
        "secret/*",
        "the Stripe webhook secret: the suite hands the API its secret in the environment; the \
         secret is read once at start through the same reader as the providers' secret",
    ),
    (
        "ProbeFunction",
        "secretsmanager:GetSecretValue",
        "secret/*",
        "the probe account's key: the suite hands the probe its key directly; the secret is \
         read once at start through the same reader as the providers' secret",
    ),
    (
        "SettlementFunction",
        "dynamodb:GetItem",
        "table/taskstable",
        "settlement finishes a straggling task's record and re-reads it only when a worker \
         wrote the same task between its read and its conditional write: a race some runs \
         hit and some do not",
    ),
    (
        "SettlementFunction",
        "dynamodb:PutItem",
        "table/taskstable",
        "settlement writes a task's terminal record only when the worker that landed its end \
         mark died before writing it and the sweeper's settle request arrives before that \
         worker's redelivered message: a race some runs hit and some do not",
    ),
];

/// One Allow statement, flattened: an action pattern on a resource pattern, in the
/// launcher's vocabulary (`table/accountstable/index/*`, `bucket/databucket/accounts/*/exports/*`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Grant {
    action: String,
    resource: String,
}

fn template() -> Template {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let yaml = std::fs::read_to_string(root.join("template.yaml")).expect("template.yaml");
    Template::parse(&yaml).expect("template parses")
}

/// What an ARN expression of the template names, in the launcher's vocabulary.
fn resource_of(t: &Template, v: &Value) -> Result<String, String> {
    let arn_of = |logical: &str| -> Result<String, String> {
        let kind = match t.type_of(logical) {
            // Key ids are random: the launcher names every key `key/*`.
            Some("AWS::KMS::Key") => return Ok("key/*".to_string()),
            Some("AWS::DynamoDB::Table") => "table",
            Some("AWS::SQS::Queue") => "queue",
            Some("AWS::S3::Bucket") => "bucket",
            Some(other) => return Err(format!("{logical}: no rule for {other}")),
            None => return Err(format!("{logical}: not in the template")),
        };
        Ok(format!("{kind}/{}", logical.to_ascii_lowercase()))
    };
    match untag(v) {
        (Some(tag), Value::String(s)) if tag == "GetAtt" => {
            let logical = s
                .strip_suffix(".Arn")
                .ok_or_else(|| format!("!GetAtt {s}: only .Arn names a resource"))?;
            arn_of(logical)
        }
        (Some(tag), Value::String(s)) if tag == "Sub" => {
            let rest = s
                .strip_prefix("${")
                .ok_or_else(|| format!("!Sub {s}: start with ${{Resource.Arn}}"))?;
            let (inner, tail) = rest
                .split_once('}')
                .ok_or_else(|| format!("!Sub {s}: unclosed"))?;
            let logical = inner
                .strip_suffix(".Arn")
                .ok_or_else(|| format!("!Sub {s}: only .Arn names a resource"))?;
            Ok(format!("{}{tail}", arn_of(logical)?))
        }
        (Some(tag), Value::String(s)) if tag == "Ref" && t.has_parameter(s) => {
            // A parameter holding an ARN (the providers' secret): one resource we do not create.
            Ok("secret/*".to_string())
        }
        _ => Err(format!("unsupported resource expression {v:?}")),
    }
}

fn strings(v: &Value) -> Vec<&Value> {
    match v {
        Value::Sequence(items) => items.iter().collect(),
        one => vec![one],
    }
}

/// A function's role as the template writes it.
#[derive(Debug, Default)]
struct Role {
    /// What the function's code may do, flattened.
    grants: Vec<Grant>,
    /// The queues its SQS event source consumes (the `EventSource` statement).
    consumes: Vec<String>,
    /// Whether its log statement names its own log groups only.
    own_logs: bool,
}

/// A statement, or one side of an `!If [condition, statement, !Ref AWS::NoValue]`.
fn statement(v: &Value) -> Option<&Value> {
    match untag(v) {
        (Some(tag), Value::Sequence(parts)) if tag == "If" => parts.get(1),
        (None, m @ Value::Mapping(_)) => Some(m),
        _ => None,
    }
}

/// Every function's role: `Role: !GetAtt XRole.Arn` to an `AWS::IAM::Role` with inline
/// policies (SAM's policy templates hide what they allow, so the template does not use them).
fn roles(t: &Template) -> Result<BTreeMap<String, Role>, String> {
    let mut out = BTreeMap::new();
    let mut role_of: BTreeMap<String, String> = BTreeMap::new();
    for (logical, res) in t.of_type("AWS::Serverless::Function") {
        let props = res
            .get("Properties")
            .ok_or_else(|| format!("{logical}: no Properties"))?;
        if props.get("Policies").is_some() {
            return Err(format!("{logical}: Policies beside its own Role"));
        }
        let role_name = match props.get("Role").map(untag) {
            Some((Some(tag), Value::String(s))) if tag == "GetAtt" => s
                .strip_suffix(".Arn")
                .ok_or_else(|| format!("{logical}: Role must be !GetAtt X.Arn"))?,
            _ => return Err(format!("{logical}: no Role of its own")),
        };
        let role = t
            .of_type("AWS::IAM::Role")
            .find(|(name, _)| name.as_str() == role_name)
            .map(|(_, r)| r)
            .ok_or_else(|| format!("{logical}: role {role_name} is not in the template"))?;
        let mut out_role = Role::default();
        let policies = role
            .get("Properties")
            .and_then(|p| p.get("Policies"))
            .and_then(Value::as_sequence)
            .ok_or_else(|| format!("{role_name}: no Policies"))?;
        for policy in policies {
            let statements = policy
                .get("PolicyDocument")
                .and_then(|d| d.get("Statement"))
                .and_then(Value::as_sequence)
                .ok_or_else(|| format!("{role_name}: a policy without PolicyDocument.Statement"))?;
            for st in statements {
                let st = statement(st).ok_or_else(|| format!("{role_name}: statement {st:?}"))?;
                if st.get("Effect").and_then(Value::as_str) != Some("Allow") {
                    return Err(format!("{role_name}: only Allow statements are expected"));
                }
                let actions: Vec<&str> = strings(
                    st.get("Action")
                        .ok_or_else(|| format!("{role_name}: statement without Action"))?,
                )
                .into_iter()
                .map(|a| {
                    a.as_str()
                        .ok_or_else(|| format!("{role_name}: action {a:?}"))
                })
                .collect::<Result<_, _>>()?;
                let resources = st
                    .get("Resource")
                    .ok_or_else(|| format!("{role_name}: statement without Resource"))?;
                match st.get("Sid").and_then(Value::as_str) {
                    Some("OwnLogs") => {
                        let own = format!("-{logical}-*");
                        out_role.own_logs = actions
                            .iter()
                            .all(|a| ["logs:CreateLogStream", "logs:PutLogEvents"].contains(a))
                            && matches!(untag(resources), (Some(tag), Value::String(r))
                                if tag == "Sub" && r.ends_with(&format!("/aws/lambda/${{AWS::StackName}}{own}")));
                    }
                    Some("Tracing") => {
                        if !actions.iter().all(|a| a.starts_with("xray:Put")) {
                            return Err(format!("{role_name}: Tracing holds more than X-Ray"));
                        }
                    }
                    Some("EventSource") => {
                        for r in strings(resources) {
                            out_role.consumes.push(resource_of(t, r)?);
                        }
                    }
                    _ => {
                        for a in &actions {
                            for r in strings(resources) {
                                out_role.grants.push(Grant {
                                    action: a.to_string(),
                                    resource: resource_of(t, r)
                                        .map_err(|e| format!("{role_name}: {e}"))?,
                                });
                            }
                        }
                    }
                }
            }
        }
        out.insert(logical.clone(), out_role);
        role_of.insert(role_name.to_string(), logical.clone());
    }
    for (role, grants) in key_policy_grants(t)? {
        if role == "root" {
            continue; // administration, checked by its own test
        }
        let function = role_of
            .get(&role)
            .ok_or_else(|| format!("a key policy names {role}, no function's role"))?;
        if let Some(r) = out.get_mut(function) {
            r.grants.extend(grants);
        }
    }
    Ok(out)
}

/// What the KMS keys' policies let each role do with them (a key policy, not the role,
/// says who may use a key): `(role logical id, grants)`. Statements for the account's root
/// (administration) are returned under `root`.
fn key_policy_grants(t: &Template) -> Result<Vec<(String, Vec<Grant>)>, String> {
    let mut out = Vec::new();
    for (logical, res) in t.of_type("AWS::KMS::Key") {
        let statements = res
            .get("Properties")
            .and_then(|p| p.get("KeyPolicy"))
            .and_then(|d| d.get("Statement"))
            .and_then(Value::as_sequence)
            .ok_or_else(|| format!("{logical}: no KeyPolicy.Statement"))?;
        for st in statements {
            if st.get("Effect").and_then(Value::as_str) != Some("Allow") {
                return Err(format!("{logical}: only Allow statements are expected"));
            }
            let principal = st
                .get("Principal")
                .and_then(|p| p.get("AWS"))
                .ok_or_else(|| format!("{logical}: a statement without an AWS principal"))?;
            let who = match untag(principal) {
                (Some(tag), Value::String(s)) if tag == "GetAtt" => s
                    .strip_suffix(".Arn")
                    .ok_or_else(|| format!("{logical}: principal !GetAtt {s}"))?
                    .to_string(),
                (Some(tag), Value::String(s)) if tag == "Sub" && s.ends_with(":root") => {
                    "root".to_string()
                }
                other => return Err(format!("{logical}: unsupported principal {other:?}")),
            };
            let grants = strings(
                st.get("Action")
                    .ok_or_else(|| format!("{logical}: statement without Action"))?,
            )
            .into_iter()
            .map(|a| {
                a.as_str()
                    .map(|a| Grant {
                        action: a.to_string(),
                        resource: "key/*".to_string(),
                    })
                    .ok_or_else(|| format!("{logical}: action {a:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
            out.push((who, grants));
        }
    }
    Ok(out)
}

/// The queues a function's SQS events name.
fn event_queues(t: &Template, function: &str) -> Vec<String> {
    let Some((_, res)) = t
        .of_type("AWS::Serverless::Function")
        .find(|(name, _)| name.as_str() == function)
    else {
        return Vec::new();
    };
    res.get("Properties")
        .and_then(|p| p.get("Events"))
        .and_then(Value::as_mapping)
        .into_iter()
        .flat_map(|m| m.values())
        .filter(|e| e.get("Type").and_then(Value::as_str) == Some("SQS"))
        .filter_map(|e| e.get("Properties").and_then(|p| p.get("Queue")))
        .filter_map(|q| resource_of(t, q).ok())
        .collect()
}

/// `*` matches any run of characters (IAM's wildcard), everything else itself.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            let Some(rest) = text.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len()).any(|i| rest.is_char_boundary(i) && glob(tail, &rest[i..]))
        }
    }
}

fn allows(g: &Grant, action: &str, resource: &str) -> bool {
    glob(&g.action, action) && glob(&g.resource, resource)
}

#[test]
fn every_function_has_a_role_of_its_own_statements() {
    let t = template();
    let roles = roles(&t).unwrap_or_else(|e| panic!("{e}"));
    for (_, function) in FUNCTION_IDENTITIES {
        let role = roles
            .get(function)
            .unwrap_or_else(|| panic!("{function} is not in template.yaml"));
        assert!(!role.grants.is_empty(), "{function} has no grants");
        assert!(
            role.own_logs,
            "{function}: its OwnLogs statement must name its own log groups only"
        );
        assert_eq!(
            role.consumes,
            event_queues(&t, function),
            "{function}: its EventSource statement must name exactly the queues it consumes"
        );
        for g in &role.grants {
            assert!(
                !g.action.ends_with(":*") && g.action != "*",
                "{function}: wildcard action {}",
                g.action
            );
            assert!(
                g.resource != "*",
                "{function}: {} on every resource",
                g.action
            );
        }
    }
    assert_eq!(
        roles.len(),
        FUNCTION_IDENTITIES.len(),
        "every function of the template signs as its own identity in the suite"
    );
}

#[test]
fn no_function_facing_the_internet_can_rewrite_the_ledger() {
    let t = template();
    let roles = roles(&t).unwrap_or_else(|e| panic!("{e}"));
    for g in &roles["ApiFunction"].grants {
        if glob(&g.resource, "table/ledgertable") {
            for forbidden in [
                "dynamodb:UpdateItem",
                "dynamodb:DeleteItem",
                "dynamodb:BatchWriteItem",
            ] {
                assert!(
                    !glob(&g.action, forbidden),
                    "the API may {forbidden} Ledger entries"
                );
            }
        }
    }
}

#[test]
fn only_the_api_seals_and_only_webhook_dispatch_opens_webhook_secrets() {
    let t = template();
    let roles = roles(&t).unwrap_or_else(|e| panic!("{e}"));
    let uses = |function: &str| -> Vec<String> {
        roles[function]
            .grants
            .iter()
            .filter(|g| g.resource == "key/*")
            .map(|g| g.action.clone())
            .collect()
    };
    for (_, function) in FUNCTION_IDENTITIES {
        let want: &[&str] = match function {
            "ApiFunction" => &["kms:Encrypt"],
            "WebhookDispatchFunction" => &["kms:Decrypt"],
            _ => &[],
        };
        assert_eq!(uses(function), want, "{function}'s use of the secrets key");
    }
    // The account's administrators manage the key; no statement gives them its use.
    let grants = key_policy_grants(&t).unwrap_or_else(|e| panic!("{e}"));
    for (who, gs) in grants.iter().filter(|(who, _)| who == "root") {
        for g in gs {
            for usage in [
                "kms:Encrypt",
                "kms:Decrypt",
                "kms:ReEncryptFrom",
                "kms:GenerateDataKey",
            ] {
                assert!(
                    !glob(&g.action, usage),
                    "{who} may {usage} through {}",
                    g.action
                );
            }
        }
    }
}

#[test]
fn the_wildcard_matches_as_iam_does() {
    assert!(glob(
        "bucket/databucket/accounts/*/exports/*",
        "bucket/databucket/accounts/*/exports/*"
    ));
    assert!(glob("table/x/index/*", "table/x/index/by_time"));
    assert!(!glob("table/x", "table/x/index/by_time"));
    assert!(!glob("dynamodb:Get*", "dynamodb:PutItem"));
    assert!(glob("dynamodb:Get*", "dynamodb:GetItem"));
}

/// The suite-wide check: run by scripts/test.sh after the HTTP suite with
/// `EMULATOR_GRANTS_LOG` set (`cargo test -p integration-tests --test roles -- --ignored`).
#[test]
#[ignore = "needs the grants the HTTP suite recorded: run through scripts/test.sh"]
fn every_role_allows_what_its_function_did_and_nothing_more() {
    let path = std::env::var("EMULATOR_GRANTS_LOG")
        .expect("EMULATOR_GRANTS_LOG names the file the HTTP suite's emulator wrote");
    let log = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e} (run the HTTP suite with it set first)"));
    let suffixes: BTreeMap<&str, &str> = FUNCTION_IDENTITIES.iter().copied().collect();
    let mut used: BTreeMap<&str, BTreeSet<(String, String)>> = BTreeMap::new();
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let key = v["key"].as_str().unwrap_or("");
        let Some(function) = suffixes
            .iter()
            .find(|(suffix, _)| key.ends_with(*suffix) && key.starts_with("AKID"))
            .map(|(_, f)| *f)
        else {
            continue; // the harness itself, or another process
        };
        used.entry(function).or_default().insert((
            v["action"].as_str().unwrap_or("").to_string(),
            v["resource"].as_str().unwrap_or("").to_string(),
        ));
    }
    assert!(
        used.len() == FUNCTION_IDENTITIES.len(),
        "the log holds operations of {:?} only: did the whole HTTP suite run?",
        used.keys().collect::<Vec<_>>()
    );
    let t = template();
    let roles = roles(&t).unwrap_or_else(|e| panic!("{e}"));
    let mut problems = Vec::new();
    for (function, ops) in &used {
        let grants = &roles[*function].grants;
        for (action, resource) in ops {
            if !grants.iter().any(|g| allows(g, action, resource)) {
                problems.push(format!(
                    "{function} did {action} on {resource}: not allowed"
                ));
            }
        }
        for g in grants {
            let needed = ops.iter().any(|(a, r)| allows(g, a, r));
            let excused = NOT_EXERCISED_HERE
                .iter()
                .any(|(f, a, r, _)| f == function && *a == g.action && *r == g.resource);
            if !needed && !excused {
                problems.push(format!(
                    "{function} may {} on {}: nothing in the suite needed it",
                    g.action, g.resource
                ));
            }
        }
    }
    for (function, ops) in &used {
        println!(
            "{function}: {} distinct (action, resource) pairs",
            ops.len()
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
