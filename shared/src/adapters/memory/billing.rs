//! Invoices in memory.

use super::{partition, Memory};
use crate::domain::invoice::Series;
use crate::ports::billing::{InvoiceRecord, Invoices, PaymentRecord};
use crate::ports::{Listed, PortResult};
use async_trait::async_trait;

#[async_trait]
impl Invoices for Memory {
    async fn payment(&self, payment_intent: &str) -> PortResult<Option<PaymentRecord>> {
        self.pause().await;
        let st = self.lock();
        Ok(st.payments.get(&payment_intent.to_string()).cloned())
    }

    async fn last_number(&self, series: Series, year: i32) -> PortResult<u64> {
        self.pause().await;
        let st = self.lock();
        let last = st.counters.get(&(series.prefix().to_string(), year));
        Ok(last.copied().unwrap_or(0))
    }

    async fn get(&self, account_id: &str, number: &str) -> PortResult<Option<InvoiceRecord>> {
        self.pause().await;
        let st = self.lock();
        let found = st
            .invoices
            .get(&(account_id.to_string(), number.to_string()));
        Ok(found.cloned())
    }

    async fn list(
        &self,
        account_id: &str,
        series: Series,
        before: Option<&str>,
        limit: usize,
    ) -> PortResult<Listed<InvoiceRecord>> {
        self.pause().await;
        let st = self.lock();
        let prefix = format!("{}-", series.prefix());
        let mut out = Vec::new();
        for ((_, number), rec) in st.invoices.range(partition(account_id)).rev() {
            if !number.starts_with(&prefix) || before.is_some_and(|b| number.as_str() >= b) {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(rec.clone());
        }
        Ok((out, false))
    }
}
