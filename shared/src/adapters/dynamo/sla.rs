//! The SLA table. Per account and month (`acct#{id}`): the task ends' atomic adds, spread
//! over small items (`m#{YYYY-MM}#{model}#p{block}q{block}`, below), the 5xx answers
//! (`m#{YYYY-MM}`), and the month's close (`close#{YYYY-MM}`), created once inside the
//! compensation's transaction; one item per month for the probe (`probe` / `m#{YYYY-MM}`).
//! Attribute names carry what they count: `p_{model}_{bucket}` processing,
//! `q_{model}_{bucket}` queue, `f_{model}` platform failures, `x_{model}_{cause}` exclusions,
//! `e_{minute}` 5xx answers, `f_{minute}` a failed probe minute. A month is every item whose
//! sort key starts `m#{YYYY-MM}`, summed.

use super::{applied, dynamo_err, from_item, n, num, s, to_item, Dynamo, Item};
use crate::domain::pricing::Model;
use crate::domain::sla::{EndCount, MinuteCounts, TaskClass};
use crate::ports::sla::{Incident, ProbeMonth, Sla, SlaCloseRecord, SlaMonth, TaskEnd};
use crate::ports::PortResult;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::{BTreeMap, HashMap};

fn key(pk: String, sk: String) -> Item {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

/// The sort key every item of an account's month starts with: the 5xx item is exactly this,
/// the task ends' items extend it, and `month` reads all that begin with it.
fn month_sk(month: &str) -> String {
    format!("m#{month}")
}

fn month_key(account_id: &str, month: &str) -> Item {
    key(format!("acct#{account_id}"), month_sk(month))
}

/// Histogram buckets per block: a task end's item holds one block of processing buckets and
/// one of queue buckets.
const BLOCK_BUCKETS: u32 = 16;

/// The item a task end adds to, (partition key, sort key). One item per month gathered
/// every bucket the month's tasks fell in, and a write costs a unit per KB of the item: at
/// 10,000 tasks it was past 1 KB, and a month of varied queue and processing times takes it
/// to tens of KB, each task end paying that much. Keyed by the blocks its buckets fall in,
/// an item holds at most `BLOCK_BUCKETS` buckets of each histogram: every add is one write
/// of under 1 KB (`tests::a_task_end_item_stays_under_one_kb`), whatever the month's volume.
fn task_end_key(
    account_id: &str,
    month: &str,
    model: Model,
    class: &TaskClass,
) -> (String, String) {
    let block = |ms: i64| crate::domain::sla::bucket_of(ms) / BLOCK_BUCKETS;
    let part = match class {
        TaskClass::Measured {
            processing_ms,
            queue_ms,
            ..
        } => format!("p{}q{}", block(*processing_ms), block(*queue_ms)),
        TaskClass::Excluded {
            queue_ms: Some(q), ..
        } => format!("xq{}", block(*q)),
        TaskClass::Excluded { queue_ms: None, .. } => "x".to_string(),
    };
    (
        format!("acct#{account_id}"),
        format!("{}#{model}#{part}", month_sk(month)),
    )
}

/// The attributes a task end adds one to.
fn task_end_attrs(model: Model, class: &TaskClass) -> Vec<String> {
    class
        .counts()
        .into_iter()
        .map(|c| match c {
            EndCount::Processing(b) => format!("p_{model}_{b}"),
            EndCount::Queue(b) => format!("q_{model}_{b}"),
            EndCount::PlatformFailure => format!("f_{model}"),
            EndCount::Excluded(cause) => format!("x_{model}_{}", cause.as_str()),
        })
        .collect()
}

fn close_key(account_id: &str, month: &str) -> Item {
    key(format!("acct#{account_id}"), format!("close#{month}"))
}

/// The close record as stored: its fields and the table's key.
pub(super) fn close_item(r: &SlaCloseRecord) -> PortResult<Item> {
    let mut item = to_item(r)?;
    item.extend(close_key(&r.account_id, &r.month));
    Ok(item)
}

const HOUR_MS: i64 = 3_600_000;

/// Platform failures are counted in one item per hour: `m_{minute}_{account}`.
fn failures_key(hour_ms: i64) -> Item {
    key("pfail".into(), format!("h#{hour_ms}"))
}

fn open_key() -> Item {
    key("incident".into(), "open".into())
}

fn incident_sk(started_ms: i64, id: &str) -> String {
    format!("i#{started_ms:013}#{id}")
}

fn model_of(s: &str) -> Option<Model> {
    s.parse().ok()
}

/// Adds what a month item's attributes count to `m`.
fn add_month_item(m: &mut SlaMonth, item: &Item) {
    for (name, v) in item {
        let AttributeValue::N(count) = v else {
            continue;
        };
        let Ok(count) = count.parse::<u64>() else {
            continue;
        };
        let Some((kind, rest)) = name.split_once('_') else {
            continue;
        };
        match kind {
            "p" | "q" => {
                let Some((model, bucket)) = rest.rsplit_once('_') else {
                    continue;
                };
                let (Some(model), Ok(bucket)) = (model_of(model), bucket.parse::<u32>()) else {
                    continue;
                };
                let h = if kind == "p" {
                    m.processing.entry(model).or_default()
                } else {
                    m.queue.entry(model).or_default()
                };
                *h.counts.entry(bucket).or_default() += count;
            }
            "f" => {
                if let Some(model) = model_of(rest) {
                    *m.platform_failures.entry(model).or_default() += count;
                }
            }
            "x" => {
                let Some((model, cause)) = rest.split_once('_') else {
                    continue;
                };
                if let Some(model) = model_of(model) {
                    *m.excluded.entry((model, cause.to_string())).or_default() += count;
                }
            }
            "e" => {
                if let Ok(minute) = rest.parse::<i64>() {
                    *m.server_errors.entry(minute).or_default() += count;
                }
            }
            _ => {}
        }
    }
}

impl Dynamo {
    /// Adds one to attribute `attr` of the SLA item `key`.
    async fn add_one(&self, key: Item, attr: String) -> PortResult<()> {
        self.ddb
            .update_item()
            .table_name(&self.t.sla)
            .set_key(Some(key))
            .update_expression("ADD #a :one")
            .expression_attribute_names("#a", attr)
            .expression_attribute_values(":one", n(1))
            .send()
            .await
            .map_err(|e| dynamo_err("UpdateItem", e))?;
        Ok(())
    }

    /// One SLA item, strongly consistent.
    async fn sla_item(&self, key: Item) -> PortResult<Option<Item>> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.t.sla)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dynamo_err("GetItem", e))?;
        Ok(out.item)
    }
}

#[async_trait]
impl Sla for Dynamo {
    async fn add_tasks(&self, ends: &[TaskEnd]) -> PortResult<()> {
        // Ends that fall in one item are summed first: one write adds them all.
        let mut items: BTreeMap<(String, String), BTreeMap<String, u64>> = BTreeMap::new();
        for e in ends {
            let counts = items
                .entry(task_end_key(&e.account_id, &e.month, e.model, &e.class))
                .or_default();
            for attr in task_end_attrs(e.model, &e.class) {
                *counts.entry(attr).or_default() += 1;
            }
        }
        let writes = items.into_iter().map(|((pk, sk), counts)| {
            let mut names = HashMap::new();
            let mut values = HashMap::new();
            let mut adds = Vec::new();
            for (i, (attr, count)) in counts.into_iter().enumerate() {
                names.insert(format!("#a{i}"), attr);
                values.insert(format!(":c{i}"), n(count));
                adds.push(format!("#a{i} :c{i}"));
            }
            self.ddb
                .update_item()
                .table_name(&self.t.sla)
                .set_key(Some(key(pk, sk)))
                .update_expression(format!("ADD {}", adds.join(", ")))
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values(Some(values))
                .send()
        });
        for res in futures_util::future::join_all(writes).await {
            res.map_err(|e| dynamo_err("UpdateItem", e))?;
        }
        Ok(())
    }

    async fn add_server_error(
        &self,
        account_id: &str,
        minute_ms: i64,
        keep_until_ms: i64,
    ) -> PortResult<()> {
        // The minute's counts stay until the month is closed; everything else in the rate
        // window table expires within minutes.
        self.ddb
            .update_item()
            .table_name(&self.t.rate_limits)
            .key(
                "pk",
                s(super::access::account_window(account_id, minute_ms)),
            )
            .update_expression("ADD se :one SET expires_at = :keep")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":keep", n(keep_until_ms / 1_000))
            .send()
            .await
            .map_err(|e| dynamo_err("UpdateItem", e))?;
        let month = crate::domain::time::month_of(minute_ms);
        self.add_one(month_key(account_id, &month), format!("e_{minute_ms}"))
            .await
    }

    async fn minutes(
        &self,
        account_id: &str,
        minutes: &[i64],
    ) -> PortResult<BTreeMap<i64, MinuteCounts>> {
        let keys = minutes
            .iter()
            .map(|m| {
                HashMap::from([(
                    "pk".to_string(),
                    s(super::access::account_window(account_id, *m)),
                )])
            })
            .collect();
        let mut out = BTreeMap::new();
        for item in self.batch_get(&self.t.rate_limits, keys).await? {
            let Some(AttributeValue::S(pk)) = item.get("pk") else {
                continue;
            };
            let Some(minute) = pk.rsplit('#').next().and_then(|m| m.parse().ok()) else {
                continue;
            };
            out.insert(
                minute,
                MinuteCounts {
                    admitted: num(&item, "n"),
                    client_errors: num(&item, "ce"),
                    server_errors: num(&item, "se"),
                },
            );
        }
        Ok(out)
    }

    async fn month(&self, account_id: &str, month: &str) -> PortResult<SlaMonth> {
        let q = super::Query::new(&self.t.sla, "pk = :p AND begins_with(sk, :m)")
            .value(":p", s(format!("acct#{account_id}")))
            .value(":m", s(month_sk(month)));
        let mut m = SlaMonth::default();
        for item in self.query_all_items(&q).await? {
            add_month_item(&mut m, &item);
        }
        Ok(m)
    }

    async fn record_probe(&self, minute_ms: i64, failure: Option<&str>) -> PortResult<()> {
        let month = crate::domain::time::month_of(minute_ms);
        let k = key("probe".into(), format!("m#{month}"));
        let u = self
            .ddb
            .update_item()
            .table_name(&self.t.sla)
            .set_key(Some(k));
        let res = match failure {
            // A minute counts once as ok: only a later minute moves `last_ok`.
            None => {
                u.update_expression("SET last_ok = :m ADD ok :one")
                    .condition_expression("attribute_not_exists(last_ok) OR last_ok < :m")
                    .expression_attribute_values(":m", n(minute_ms))
                    .expression_attribute_values(":one", n(1))
                    .send()
                    .await
            }
            // The first failure seen in a minute is the one kept.
            Some(detail) => {
                u.update_expression("SET #f = if_not_exists(#f, :d)")
                    .expression_attribute_names("#f", format!("f_{minute_ms}"))
                    .expression_attribute_values(
                        ":d",
                        s(detail.chars().take(300).collect::<String>()),
                    )
                    .send()
                    .await
            }
        };
        applied(res, "UpdateItem").map(|_| ())
    }

    async fn probes(&self, month: &str) -> PortResult<ProbeMonth> {
        let item = self
            .sla_item(key("probe".into(), format!("m#{month}")))
            .await?
            .unwrap_or_default();
        let mut p = ProbeMonth {
            ok_minutes: num(&item, "ok"),
            ..Default::default()
        };
        for (name, v) in &item {
            if let (Some(minute), AttributeValue::S(detail)) = (
                name.strip_prefix("f_").and_then(|m| m.parse::<i64>().ok()),
                v,
            ) {
                p.failed.insert(minute, detail.clone());
            }
        }
        Ok(p)
    }

    async fn closed(&self, account_id: &str, month: &str) -> PortResult<Option<SlaCloseRecord>> {
        self.sla_item(close_key(account_id, month))
            .await?
            .map(from_item::<SlaCloseRecord>)
            .transpose()
    }

    async fn add_platform_failure(&self, account_id: &str, minute_ms: i64) -> PortResult<()> {
        self.add_one(
            failures_key(minute_ms.div_euclid(HOUR_MS) * HOUR_MS),
            format!("m_{minute_ms}_{account_id}"),
        )
        .await
    }

    async fn platform_failures(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> PortResult<BTreeMap<i64, BTreeMap<String, u64>>> {
        let mut keys = Vec::new();
        let mut hour = from_ms.div_euclid(HOUR_MS) * HOUR_MS;
        while hour < to_ms {
            keys.push(failures_key(hour));
            hour += HOUR_MS;
        }
        let mut out: BTreeMap<i64, BTreeMap<String, u64>> = BTreeMap::new();
        for item in self.batch_get(&self.t.sla, keys).await? {
            for (name, v) in &item {
                let Some((minute, account)) =
                    name.strip_prefix("m_").and_then(|r| r.split_once('_'))
                else {
                    continue;
                };
                let (Ok(minute), AttributeValue::N(count)) = (minute.parse::<i64>(), v) else {
                    continue;
                };
                if (from_ms..to_ms).contains(&minute) {
                    out.entry(minute)
                        .or_default()
                        .insert(account.to_string(), count.parse().unwrap_or(0));
                }
            }
        }
        Ok(out)
    }

    async fn open_incident(&self) -> PortResult<Option<Incident>> {
        self.sla_item(open_key())
            .await?
            .map(from_item::<Incident>)
            .transpose()
    }

    async fn start_incident(&self, inc: &Incident) -> PortResult<bool> {
        let mut item = to_item(inc)?;
        item.extend(open_key());
        let res = self
            .ddb
            .put_item()
            .table_name(&self.t.sla)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        applied(res, "PutItem")
    }

    async fn update_incident(&self, inc: &Incident) -> PortResult<bool> {
        let mut item = to_item(inc)?;
        item.extend(open_key());
        let res = self
            .ddb
            .put_item()
            .table_name(&self.t.sla)
            .set_item(Some(item))
            .condition_expression("incident_id = :id")
            .expression_attribute_values(":id", s(&inc.incident_id))
            .send()
            .await;
        applied(res, "PutItem")
    }

    async fn end_incident(&self, inc: &Incident) -> PortResult<bool> {
        use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem};
        let delete = Delete::builder()
            .table_name(&self.t.sla)
            .set_key(Some(open_key()))
            .condition_expression("incident_id = :id")
            .expression_attribute_values(":id", s(&inc.incident_id))
            .build()
            .map_err(|e| super::build_err("Delete", e))?;
        let mut item = to_item(inc)?;
        item.extend(key(
            "incident".into(),
            incident_sk(inc.started_ms, &inc.incident_id),
        ));
        let put = Put::builder()
            .table_name(&self.t.sla)
            .set_item(Some(item))
            .build()
            .map_err(|e| super::build_err("Put", e))?;
        let res = self
            .ddb
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().delete(delete).build())
            .transact_items(TransactWriteItem::builder().put(put).build())
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) => match e.as_service_error() {
                Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(_)) => Ok(false),
                _ => Err(dynamo_err("TransactWriteItems", e)),
            },
        }
    }

    async fn incidents(&self, from_ms: i64, to_ms: i64) -> PortResult<Vec<Incident>> {
        // An incident that ends in the range started at most this long before it.
        const LONGEST_MS: i64 = 62 * 86_400_000;
        let (lo, hi) = (
            format!("i#{:013}", (from_ms - LONGEST_MS).max(0)),
            format!("i#{:013}", to_ms.max(0)),
        );
        let q = super::Query::new(&self.t.sla, "pk = :p AND sk BETWEEN :lo AND :hi")
            .value(":p", s("incident"))
            .value(":lo", s(lo.as_str()))
            .value(":hi", s(hi.as_str()));
        let all: Vec<Incident> = self.query_all(&q).await?;
        Ok(all
            .into_iter()
            .filter(|i| i.started_ms < to_ms && i.ended_ms.is_some_and(|e| e > from_ms))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::item_size;
    use super::*;
    use crate::domain::sla::{bucket_of, Exclusion};

    /// The largest a task end's item can become: the longest account id and model name, every
    /// bucket of one block counted, with counts no month reaches, each exclusion cause, and
    /// the platform failures.
    #[test]
    fn a_task_end_item_stays_under_one_kb() {
        let account = "a".repeat(64);
        // The highest bucket any time in a month reaches (31 days), rounded up to its block.
        let top = (bucket_of(31 * 86_400_000) / BLOCK_BUCKETS + 1) * BLOCK_BUCKETS;
        let huge = || n(999_999_999_999_u64);
        for model in [Model::Sora2, Model::VeoPro] {
            let measured = TaskClass::Measured {
                processing_ms: 31 * 86_400_000,
                queue_ms: 31 * 86_400_000,
                platform_failure: true,
            };
            let (pk, sk) = task_end_key(&account, "2026-12", model, &measured);
            let mut item = key(pk, sk);
            for b in top - BLOCK_BUCKETS..top {
                item.insert(format!("p_{model}_{b}"), huge());
                item.insert(format!("q_{model}_{b}"), huge());
            }
            item.insert(format!("f_{model}"), huge());
            assert!(item_size(&item) < 1024, "{} bytes", item_size(&item));

            let excluded = TaskClass::Excluded {
                cause: Exclusion::NeverStarted,
                queue_ms: Some(31 * 86_400_000),
            };
            let (pk, sk) = task_end_key(&account, "2026-12", model, &excluded);
            let mut item = key(pk, sk);
            for b in top - BLOCK_BUCKETS..top {
                item.insert(format!("q_{model}_{b}"), huge());
            }
            for cause in Exclusion::ALL {
                item.insert(format!("x_{model}_{}", cause.as_str()), huge());
            }
            assert!(item_size(&item) < 1024, "{} bytes", item_size(&item));
        }
    }

    /// Two ends whose buckets share a block share an item; the month reads them all back.
    #[test]
    fn ends_in_one_block_share_an_item_and_others_do_not() {
        let class = |p: i64, q: i64| TaskClass::Measured {
            processing_ms: p,
            queue_ms: q,
            platform_failure: false,
        };
        let k = |c: &TaskClass| task_end_key("acct_1", "2026-12", Model::Sora2, c);
        assert_eq!(k(&class(60_000, 1_000)), k(&class(60_100, 1_001)));
        assert_ne!(k(&class(60_000, 1_000)), k(&class(600_000, 1_000)));
        assert_ne!(k(&class(60_000, 1_000)), k(&class(60_000, 100_000)));
        let (_, sk) = k(&class(60_000, 1_000));
        assert!(sk.starts_with("m#2026-12#"), "{sk}");
    }
}
