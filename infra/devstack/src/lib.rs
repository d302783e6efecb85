//! The local stack's one source of truth is `template.yaml`: this crate reads its DynamoDB
//! tables, S3 buckets and the functions' environment from there and creates them in the
//! emulator, so there is no second, hand-written schema to drift.

pub mod fake_stripe;
pub mod pump;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    LocalSecondaryIndex, PointInTimeRecoverySpecification, Projection, ProjectionType,
    ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use serde_yaml::Value;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("template: {0}")]
    Template(String),
    #[error("AWS: {0}")]
    Aws(String),
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Template(msg.into())
}

fn aws(e: impl std::fmt::Debug) -> Error {
    Error::Aws(format!("{e:?}"))
}

/// What the template declares that the local stack must create.
#[derive(Debug)]
pub struct Template {
    resources: BTreeMap<String, Value>,
    parameters: BTreeMap<String, Value>,
    globals_env: BTreeMap<String, Value>,
}

/// CloudFormation's short-form tags (`!Ref X`) arrive as tagged values.
pub fn untag(v: &Value) -> (Option<String>, &Value) {
    match v {
        Value::Tagged(t) => (
            Some(t.tag.to_string().trim_start_matches('!').to_string()),
            &t.value,
        ),
        other => (None, other),
    }
}

fn str_of<'a>(v: &'a Value, what: &str) -> Result<&'a str, Error> {
    v.as_str()
        .ok_or_else(|| bad(format!("{what} must be a string")))
}

impl Template {
    pub fn parse(yaml: &str) -> Result<Self, Error> {
        let doc: Value = serde_yaml::from_str(yaml).map_err(|e| bad(e.to_string()))?;
        let map = |v: Option<&Value>| -> BTreeMap<String, Value> {
            v.and_then(Value::as_mapping)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| k.as_str().map(|k| (k.to_string(), v.clone())))
                        .collect()
                })
                .unwrap_or_default()
        };
        let resources = map(doc.get("Resources"));
        if resources.is_empty() {
            return Err(bad("no Resources"));
        }
        let globals_env = map(doc
            .get("Globals")
            .and_then(|g| g.get("Function"))
            .and_then(|f| f.get("Environment"))
            .and_then(|e| e.get("Variables")));
        Ok(Template {
            resources,
            parameters: map(doc.get("Parameters")),
            globals_env,
        })
    }

    /// The resources of one type, by logical id.
    pub fn of_type<'a>(
        &'a self,
        ty: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Value)> + 'a {
        self.resources
            .iter()
            .filter(move |(_, r)| r.get("Type").and_then(Value::as_str) == Some(ty))
    }

    /// A resource's `Type`, or None when the template has no such resource.
    pub fn type_of(&self, logical: &str) -> Option<&str> {
        self.resources.get(logical)?.get("Type")?.as_str()
    }

    /// Whether the template declares this parameter.
    pub fn has_parameter(&self, name: &str) -> bool {
        self.parameters.contains_key(name)
    }

    /// Local physical names: `{prefix}-{LogicalId}` (lower case for buckets).
    pub fn physical_name(&self, prefix: &str, logical: &str) -> Option<String> {
        let ty = self.resources.get(logical)?.get("Type")?.as_str()?;
        match ty {
            "AWS::DynamoDB::Table" | "AWS::SQS::Queue" => Some(format!("{prefix}-{logical}")),
            "AWS::S3::Bucket" => Some(format!("{prefix}-{logical}").to_ascii_lowercase()),
            _ => None,
        }
    }

    /// Every variable the functions see: `Globals.Function.Environment.Variables` and each
    /// function's own, with `!Ref`s resolved through `refs` (what `!Ref` of each created
    /// resource gives: a table or bucket name, a queue URL) or to the parameter's default.
    /// Variables that name parameters without a default (secrets) and those built with
    /// `!Sub` from the deployed stack (URLs) are left to the caller.
    pub fn environment(
        &self,
        refs: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, Error> {
        let mut sources = vec![self.globals_env.clone()];
        for (_, f) in self.of_type("AWS::Serverless::Function") {
            if let Some(vars) = f
                .get("Properties")
                .and_then(|p| p.get("Environment"))
                .and_then(|e| e.get("Variables"))
                .and_then(Value::as_mapping)
            {
                sources.push(
                    vars.iter()
                        .filter_map(|(k, v)| k.as_str().map(|k| (k.to_string(), v.clone())))
                        .collect(),
                );
            }
        }
        let mut env = BTreeMap::new();
        for (name, v) in sources.iter().flatten() {
            let (tag, inner) = untag(v);
            let value = match (tag.as_deref(), inner) {
                (Some("Ref"), target) => {
                    let target = str_of(target, "Ref")?;
                    if let Some(p) = refs.get(target) {
                        p.clone()
                    } else if let Some(param) = self.parameters.get(target) {
                        match param.get("Default").and_then(yaml_scalar) {
                            Some(d) => d,
                            None => continue,
                        }
                    } else {
                        return Err(bad(format!(
                            "{name}: !Ref {target} names nothing the local stack makes"
                        )));
                    }
                }
                (None, plain) => {
                    yaml_scalar(plain).ok_or_else(|| bad(format!("{name}: unsupported value")))?
                }
                // A URL built from the deployed stack (the probe's target, the API's own
                // address): the local stack knows it only once it runs, so its runner sets it.
                (Some("Sub"), _) => continue,
                (Some(tag), _) => {
                    return Err(bad(format!("{name}: !{tag} is not supported locally")))
                }
            };
            env.insert(name.clone(), value);
        }
        Ok(env)
    }

    /// What `!Ref` gives for tables and buckets, which need no AWS call to know.
    pub fn static_refs(&self, prefix: &str) -> BTreeMap<String, String> {
        self.resources
            .iter()
            .filter(|(_, r)| r.get("Type").and_then(Value::as_str) != Some("AWS::SQS::Queue"))
            .filter_map(|(k, _)| Some((k.clone(), self.physical_name(prefix, k)?)))
            .collect()
    }

    pub fn table_ids(&self) -> Vec<String> {
        self.of_type("AWS::DynamoDB::Table")
            .map(|(k, _)| k.clone())
            .collect()
    }
}

fn yaml_scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn key_schema(v: Option<&Value>) -> Result<Vec<KeySchemaElement>, Error> {
    let items = v
        .and_then(Value::as_sequence)
        .ok_or_else(|| bad("KeySchema missing"))?;
    items
        .iter()
        .map(|k| {
            let name = str_of(
                k.get("AttributeName").unwrap_or(&Value::Null),
                "AttributeName",
            )?;
            let kt = match k.get("KeyType").and_then(Value::as_str) {
                Some("HASH") => KeyType::Hash,
                Some("RANGE") => KeyType::Range,
                _ => return Err(bad("KeyType must be HASH or RANGE")),
            };
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kt)
                .build()
                .map_err(aws)
        })
        .collect()
}

fn projection(v: Option<&Value>) -> Projection {
    let ty = v
        .and_then(|p| p.get("ProjectionType"))
        .and_then(Value::as_str)
        .unwrap_or("ALL");
    Projection::builder()
        .projection_type(ProjectionType::from(ty))
        .build()
}

/// Creates every table and bucket of the template under `prefix`; returns the functions'
/// environment for these local names.
pub async fn create_all(
    sdk: &SdkConfig,
    template: &Template,
    prefix: &str,
) -> Result<BTreeMap<String, String>, Error> {
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    for (logical, res) in template.of_type("AWS::DynamoDB::Table") {
        let props = res
            .get("Properties")
            .ok_or_else(|| bad(format!("{logical}: no Properties")))?;
        let name = format!("{prefix}-{logical}");
        let mut req = ddb.create_table().table_name(&name);
        for a in props
            .get("AttributeDefinitions")
            .and_then(Value::as_sequence)
            .ok_or_else(|| bad(format!("{logical}: AttributeDefinitions")))?
        {
            let an = str_of(
                a.get("AttributeName").unwrap_or(&Value::Null),
                "AttributeName",
            )?;
            let at = match a.get("AttributeType").and_then(Value::as_str) {
                Some("S") => ScalarAttributeType::S,
                Some("N") => ScalarAttributeType::N,
                Some("B") => ScalarAttributeType::B,
                _ => return Err(bad(format!("{logical}: AttributeType"))),
            };
            req = req.attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(an)
                    .attribute_type(at)
                    .build()
                    .map_err(aws)?,
            );
        }
        req = req.set_key_schema(Some(key_schema(props.get("KeySchema"))?));
        for g in props
            .get("GlobalSecondaryIndexes")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let gsi = GlobalSecondaryIndex::builder()
                .index_name(str_of(
                    g.get("IndexName").unwrap_or(&Value::Null),
                    "IndexName",
                )?)
                .set_key_schema(Some(key_schema(g.get("KeySchema"))?))
                .projection(projection(g.get("Projection")))
                .build()
                .map_err(aws)?;
            req = req.global_secondary_indexes(gsi);
        }
        for l in props
            .get("LocalSecondaryIndexes")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let lsi = LocalSecondaryIndex::builder()
                .index_name(str_of(
                    l.get("IndexName").unwrap_or(&Value::Null),
                    "IndexName",
                )?)
                .set_key_schema(Some(key_schema(l.get("KeySchema"))?))
                .projection(projection(l.get("Projection")))
                .build()
                .map_err(aws)?;
            req = req.local_secondary_indexes(lsi);
        }
        if props.get("BillingMode").and_then(Value::as_str) != Some("PAY_PER_REQUEST") {
            return Err(bad(format!(
                "{logical}: only PAY_PER_REQUEST tables are supported"
            )));
        }
        req.billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .map_err(aws)?;
        if let Some(ttl) = props.get("TimeToLiveSpecification") {
            let attr = str_of(
                ttl.get("AttributeName").unwrap_or(&Value::Null),
                "TTL AttributeName",
            )?;
            let enabled = ttl.get("Enabled").and_then(Value::as_bool).unwrap_or(false);
            ddb.update_time_to_live()
                .table_name(&name)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(attr)
                        .enabled(enabled)
                        .build()
                        .map_err(aws)?,
                )
                .send()
                .await
                .map_err(aws)?;
        }
        let pitr = props
            .get("PointInTimeRecoverySpecification")
            .and_then(|p| p.get("PointInTimeRecoveryEnabled"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if pitr {
            ddb.update_continuous_backups()
                .table_name(&name)
                .point_in_time_recovery_specification(
                    PointInTimeRecoverySpecification::builder()
                        .point_in_time_recovery_enabled(true)
                        .build()
                        .map_err(aws)?,
                )
                .send()
                .await
                .map_err(aws)?;
        }
    }
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(true)
            .build(),
    );
    for (logical, res) in template.of_type("AWS::S3::Bucket") {
        let name = template
            .physical_name(prefix, logical)
            .ok_or_else(|| bad("bucket name"))?;
        s3.create_bucket().bucket(&name).send().await.map_err(aws)?;
        let versioned = res
            .get("Properties")
            .and_then(|p| p.get("VersioningConfiguration"))
            .and_then(|v| v.get("Status"))
            .and_then(Value::as_str)
            == Some("Enabled");
        if versioned {
            s3.put_bucket_versioning()
                .bucket(&name)
                .versioning_configuration(
                    VersioningConfiguration::builder()
                        .status(BucketVersioningStatus::Enabled)
                        .build(),
                )
                .send()
                .await
                .map_err(aws)?;
        }
    }
    let mut refs = template.static_refs(prefix);
    refs.extend(create_queues(sdk, template, prefix).await?);
    refs.extend(create_keys(sdk, template, prefix).await?);
    template.environment(&refs)
}

/// Creates the template's KMS keys (symmetric, as the template's are) and returns their key
/// ids by logical id, which is what `!Ref` of a key gives. The key policy is the cloud's
/// business: the emulator does not evaluate it, and the role test reads it from the template.
async fn create_keys(
    sdk: &SdkConfig,
    template: &Template,
    prefix: &str,
) -> Result<BTreeMap<String, String>, Error> {
    let kms = aws_sdk_kms::Client::new(sdk);
    let mut out = BTreeMap::new();
    for (logical, _) in template.of_type("AWS::KMS::Key") {
        let key = kms
            .create_key()
            .description(format!("{prefix}-{logical}"))
            .send()
            .await
            .map_err(aws)?;
        let id = key
            .key_metadata
            .map(|m| m.key_id)
            .ok_or_else(|| bad(format!("{logical}: CreateKey gave no key id")))?;
        out.insert(logical.clone(), id);
    }
    Ok(out)
}

/// Creates the template's SQS queues (dead-letter queues first, so redrive policies can name
/// them) and returns their URLs by logical id.
async fn create_queues(
    sdk: &SdkConfig,
    template: &Template,
    prefix: &str,
) -> Result<BTreeMap<String, String>, Error> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let mut queues: Vec<(&String, &Value)> = template.of_type("AWS::SQS::Queue").collect();
    queues.sort_by_key(|(_, q)| {
        q.get("Properties")
            .and_then(|p| p.get("RedrivePolicy"))
            .is_some()
    });
    let mut urls = BTreeMap::new();
    let mut arns: BTreeMap<String, String> = BTreeMap::new();
    for (logical, q) in queues {
        let name = format!("{prefix}-{logical}");
        let mut req = sqs.create_queue().queue_name(&name);
        let props = q.get("Properties").cloned().unwrap_or(Value::Null);
        for (key, attr) in [
            ("VisibilityTimeout", A::VisibilityTimeout),
            ("MessageRetentionPeriod", A::MessageRetentionPeriod),
            ("DelaySeconds", A::DelaySeconds),
            (
                "ReceiveMessageWaitTimeSeconds",
                A::ReceiveMessageWaitTimeSeconds,
            ),
        ] {
            if let Some(v) = props.get(key).and_then(yaml_scalar) {
                req = req.attributes(attr, v);
            }
        }
        if let Some(rp) = props.get("RedrivePolicy") {
            let (_, target) = untag(rp.get("deadLetterTargetArn").unwrap_or(&Value::Null));
            let target = match target {
                Value::String(s) => s.split('.').next().unwrap_or_default().to_string(),
                _ => {
                    return Err(bad(format!(
                        "{logical}: deadLetterTargetArn must be !GetAtt X.Arn"
                    )))
                }
            };
            let arn = arns
                .get(&target)
                .ok_or_else(|| bad(format!("{logical}: unknown dead-letter queue {target}")))?;
            let max = rp
                .get("maxReceiveCount")
                .and_then(yaml_scalar)
                .unwrap_or_else(|| "5".into());
            let policy =
                serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": max}).to_string();
            req = req.attributes(A::RedrivePolicy, policy);
        }
        let url = req
            .send()
            .await
            .map_err(aws)?
            .queue_url
            .ok_or_else(|| Error::Aws("no queue URL".into()))?;
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(A::QueueArn)
            .send()
            .await
            .map_err(aws)?;
        let arn = attrs
            .attributes
            .and_then(|m| m.get(&A::QueueArn).cloned())
            .ok_or_else(|| Error::Aws("no queue ARN".into()))?;
        arns.insert(logical.clone(), arn);
        urls.insert(logical.clone(), url);
    }
    Ok(urls)
}

/// An SDK configuration for the emulator at `endpoint`, with dummy credentials.
pub async fn emulator_sdk_config(endpoint: &str) -> SdkConfig {
    emulator_sdk_config_as(endpoint, "test").await
}

/// The same, signing with `access_key_id`: the emulator launcher counts what each access key
/// id did, so a test (or the local stack, one id per function) can ask for its own figures.
pub async fn emulator_sdk_config_as(endpoint: &str, access_key_id: &str) -> SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            access_key_id,
            "test",
            None,
            None,
            "emulator",
        ))
        .load()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = r#"
Parameters:
  LogLevel: { Type: String, Default: info }
Globals:
  Function:
    Environment:
      Variables:
        THINGS_TABLE: !Ref ThingsTable
        DATA_BUCKET: !Ref DataBucket
        RUST_LOG: !Ref LogLevel
        PLAIN: "x"
Resources:
  ThingsTable:
    Type: AWS::DynamoDB::Table
    Properties: {}
  DataBucket:
    Type: AWS::S3::Bucket
"#;

    #[test]
    fn resolves_environment_from_the_template() {
        let t = Template::parse(T).map_err(|e| e.to_string());
        let env = t.and_then(|t| {
            t.environment(&t.static_refs("p1"))
                .map_err(|e| e.to_string())
        });
        let env = env.unwrap_or_default();
        assert_eq!(
            env.get("THINGS_TABLE").map(String::as_str),
            Some("p1-ThingsTable")
        );
        assert_eq!(
            env.get("DATA_BUCKET").map(String::as_str),
            Some("p1-databucket")
        );
        assert_eq!(env.get("RUST_LOG").map(String::as_str), Some("info"));
        assert_eq!(env.get("PLAIN").map(String::as_str), Some("x"));
    }

    #[test]
    fn the_real_template_parses() {
        let yaml = include_str!("../../../template.yaml");
        let t = Template::parse(yaml).map_err(|e| e.to_string());
        let env = t
            .and_then(|t| {
                let mut refs = t.static_refs("x");
                for q in ["TasksQueue", "SettleQueue", "EventsQueue", "ExportsQueue"] {
                    refs.insert(q.into(), format!("http://queue/{q}"));
                }
                for (k, _) in t.of_type("AWS::KMS::Key") {
                    refs.insert(k.clone(), format!("key-id-of-{k}"));
                }
                t.environment(&refs).map_err(|e| e.to_string())
            })
            .unwrap_or_else(|e| panic!("{e}"));
        for k in [
            "ACCOUNTS_TABLE",
            "LEDGER_TABLE",
            "BATCHES_TABLE",
            "DATA_BUCKET",
            "TASKS_QUEUE_URL",
            "SORA_2_PROVIDER",
            "WEBHOOK_SECRETS_KEY",
            "CONSOLE_SESSIONS_TABLE",
        ] {
            assert!(env.contains_key(k), "{k} missing from {env:?}");
        }
    }
}
