//! The Requests table (idempotency records) and the all-or-nothing creation of the records a
//! request makes; the small Files and Models tables.

use super::{account_key, dynamo_err, from_item, n, s, Dynamo, Query, REPLY_SUFFIX};
use crate::ports::records::{FileRecord, RequestRecord};
use crate::ports::store::{Change, CommitError, ModelSetting, NewRecord};
use crate::ports::{Files, Models, PortResult, Requests};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;

#[async_trait]
impl Requests for Dynamo {
    async fn get(&self, owner: &str, request_key: &str) -> PortResult<Option<RequestRecord>> {
        // The tombstone and its stored response, in one consistent query: nothing else lies
        // between the two keys (see REPLY_SUFFIX).
        let reply_key = format!("{request_key}{REPLY_SUFFIX}");
        let q = Query::new(
            &self.t.requests,
            "account_id = :a AND request_key BETWEEN :k AND :r",
        )
        .value(":a", s(owner))
        .value(":k", s(request_key))
        .value(":r", s(&reply_key));
        let (items, _) = self.query_page(&q, None, None).await?;
        let mut tombstone: Option<RequestRecord> = None;
        let mut response = None;
        for item in items {
            match item.get("request_key").and_then(|v| v.as_s().ok()) {
                Some(k) if k == request_key => tombstone = Some(from_item(item)?),
                Some(k) if *k == reply_key => {
                    response = item.get("response").and_then(|v| v.as_s().ok()).cloned()
                }
                _ => {}
            }
        }
        Ok(tombstone.map(|mut t| {
            // Records from before the split hold their response inline.
            if t.response.is_none() {
                t.response = response;
            }
            t
        }))
    }

    async fn create_all(&self, creates: Vec<NewRecord>) -> Result<(), CommitError> {
        let mut items = creates
            .iter()
            .map(|c| self.put_new(c))
            .collect::<PortResult<Vec<_>>>()?;
        items.extend(self.stored_replies(&creates)?);
        self.transact(items, 0).await
    }

    async fn change_and_create(
        &self,
        change: Change,
        creates: Vec<NewRecord>,
    ) -> Result<(), CommitError> {
        let mut items = vec![self.change(&change)?];
        for c in &creates {
            items.push(self.put_new(c)?);
        }
        items.extend(self.stored_replies(&creates)?);
        self.transact(items, 1).await
    }
}

#[async_trait]
impl Files for Dynamo {
    async fn get(&self, account_id: &str, file_id: &str) -> PortResult<Option<FileRecord>> {
        Dynamo::get(
            self,
            &self.t.files,
            account_key("file_id", account_id, file_id),
        )
        .await
    }
}

#[async_trait]
impl Models for Dynamo {
    async fn get(&self, model: &str) -> PortResult<Option<ModelSetting>> {
        let key = HashMap::from([("model".to_string(), s(model))]);
        let item = self
            .ddb
            .get_item()
            .table_name(&self.t.models)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dynamo_err("GetItem", e))?
            .item;
        Ok(item.and_then(|i| {
            let text = |k: &str| match i.get(k) {
                Some(AttributeValue::S(v)) => Some(v.clone()),
                _ => None,
            };
            Some(ModelSetting {
                status: text("status")?,
                reason: text("reason").unwrap_or_default(),
                updated_ms: i64::try_from(super::num(&i, "updated_ms")).unwrap_or(0),
            })
        }))
    }

    async fn set(&self, model: &str, m: &ModelSetting) -> PortResult<()> {
        self.ddb
            .put_item()
            .table_name(&self.t.models)
            .item("model", s(model))
            .item("status", s(&m.status))
            .item("reason", s(&m.reason))
            .item("updated_ms", n(m.updated_ms))
            .send()
            .await
            .map_err(|e| dynamo_err("PutItem", e))?;
        Ok(())
    }
}
