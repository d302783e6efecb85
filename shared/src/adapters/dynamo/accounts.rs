//! The Accounts table: terms, status, the low-balance threshold and concurrency slots.
//! (Balances move only in the money transaction, `money.rs`.)

use super::{
    account_item, applied, condition_failed, dynamo_err, from_item, n, s, updated, Dynamo,
};
use crate::domain::account::AccountStatus;
use crate::domain::money::Credits;
use crate::ports::records::{AccountRecord, Throttle};
use crate::ports::store::TermsPatch;
use crate::ports::{Accounts, PageToken, PortResult, Slice};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::ReturnValue;

fn status_str(st: AccountStatus) -> &'static str {
    match st {
        AccountStatus::Active => "active",
        AccountStatus::Terminated => "terminated",
    }
}

#[async_trait]
impl Accounts for Dynamo {
    async fn get(&self, account_id: &str) -> PortResult<Option<AccountRecord>> {
        Dynamo::get(self, &self.t.accounts, account_item(account_id)).await
    }

    async fn scan(&self, after: Option<PageToken>) -> PortResult<Slice<AccountRecord>> {
        let out = self
            .ddb
            .scan()
            .table_name(&self.t.accounts)
            .consistent_read(true)
            .set_exclusive_start_key(after.map(|t| super::decode_token(&t)).transpose()?)
            .send()
            .await
            .map_err(|e| dynamo_err("Scan", e))?;
        Ok(Slice {
            items: out
                .items
                .unwrap_or_default()
                .into_iter()
                .map(from_item)
                .collect::<Result<_, _>>()?,
            next: out
                .last_evaluated_key
                .map(|k| super::encode_token(&k))
                .transpose()?,
        })
    }

    async fn change_terms(
        &self,
        account_id: &str,
        change: &TermsPatch,
    ) -> PortResult<Option<AccountRecord>> {
        let mut set = Vec::new();
        let mut u = self
            .ddb
            .update_item()
            .table_name(&self.t.accounts)
            .key("account_id", s(account_id))
            .condition_expression("attribute_exists(account_id)")
            .return_values(ReturnValue::AllNew);
        if let Some(r) = change.retention_days {
            set.push("retention_days = :r");
            u = u.expression_attribute_values(":r", n(r));
        }
        if let Some(m) = change.max_concurrency {
            set.push("max_concurrency = :m");
            u = u.expression_attribute_values(":m", n(m));
        }
        if let Some(b) = change.request_budget_per_min {
            set.push("request_budget_per_min = :b");
            u = u.expression_attribute_values(":b", n(b));
        }
        if let Some(t) = &change.sla_terms {
            set.push("sla_terms = :sla");
            let v = serde_dynamo::to_attribute_value(t)
                .map_err(|e| crate::ports::StoreError::Corrupt(e.to_string()))?;
            u = u.expression_attribute_values(":sla", v);
        }
        if let Some(p) = &change.billing_profile {
            set.push("billing_profile = :bp");
            let v = serde_dynamo::to_attribute_value(p)
                .map_err(|e| crate::ports::StoreError::Corrupt(e.to_string()))?;
            u = u.expression_attribute_values(":bp", v);
        }
        if let Some(i) = &change.payment_issue {
            set.push("payment_issue = :pi");
            let v = serde_dynamo::to_attribute_value(i)
                .map_err(|e| crate::ports::StoreError::Corrupt(e.to_string()))?;
            u = u.expression_attribute_values(":pi", v);
        }
        if set.is_empty() {
            return Accounts::get(self, account_id).await;
        }
        updated(
            u.update_expression(format!("SET {}", set.join(", ")))
                .send()
                .await,
        )
    }

    async fn set_status(&self, account_id: &str, status: AccountStatus) -> PortResult<bool> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.t.accounts)
            .key("account_id", s(account_id))
            .update_expression("SET #status = :s")
            .condition_expression("attribute_exists(account_id) AND #status <> :s")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":s", s(status_str(status)))
            .send()
            .await;
        applied(res, "UpdateItem")
    }

    async fn set_low_balance_threshold(
        &self,
        account_id: &str,
        threshold: Option<Credits>,
    ) -> PortResult<Option<AccountRecord>> {
        let u = self
            .ddb
            .update_item()
            .table_name(&self.t.accounts)
            .key("account_id", s(account_id))
            .condition_expression("attribute_exists(account_id)")
            .return_values(ReturnValue::AllNew);
        let u = match threshold {
            Some(t) => u
                .update_expression("SET low_balance_threshold = :t")
                .expression_attribute_values(":t", n(t.value())),
            None => u.update_expression("REMOVE low_balance_threshold"),
        };
        updated(u.send().await)
    }

    async fn throttle(&self, account_id: &str, t: &Throttle) -> PortResult<bool> {
        self.set_throttle(&self.t.accounts, account_item(account_id), t)
            .await
    }

    async fn lift_throttle(&self, account_id: &str) -> PortResult<bool> {
        self.remove_throttle(&self.t.accounts, account_item(account_id))
            .await
    }

    async fn acquire_slot(&self, account_id: &str, max: u32) -> PortResult<bool> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.t.accounts)
            .key("account_id", s(account_id))
            .update_expression("ADD running :one")
            .condition_expression(
                "attribute_exists(account_id) AND (attribute_not_exists(running) OR running < :max)",
            )
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":max", n(max))
            .send()
            .await;
        applied(res, "UpdateItem")
    }

    async fn release_slot(&self, account_id: &str) -> PortResult<()> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.t.accounts)
            .key("account_id", s(account_id))
            .update_expression("ADD running :minus")
            .condition_expression("running > :zero")
            .expression_attribute_values(":minus", n(-1))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if condition_failed(&e) => Ok(()),
            Err(e) => Err(dynamo_err("UpdateItem", e)),
        }
    }

    async fn reset_slots(&self, account_id: &str, observed: u32, actual: u32) -> PortResult<bool> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.t.accounts)
            .key("account_id", s(account_id))
            .update_expression("SET running = :actual")
            .condition_expression("running = :observed")
            .expression_attribute_values(":actual", n(actual))
            .expression_attribute_values(":observed", n(observed))
            .send()
            .await;
        applied(res, "UpdateItem")
    }

    async fn note_slot_audit(&self, account_id: &str, seen: &str) -> PortResult<()> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.t.accounts)
            .key("account_id", s(account_id))
            .update_expression("SET slot_audit = :s")
            .condition_expression("attribute_exists(account_id)")
            .expression_attribute_values(":s", s(seen))
            .send()
            .await;
        applied(res, "UpdateItem").map(|_| ())
    }
}
