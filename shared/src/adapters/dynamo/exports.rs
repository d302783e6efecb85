//! The Exports table (`account_id`, `export_id`): requests, run state and manifests.

use super::{account_key, applied, n, s, Dynamo, Query};
use crate::ports::records::ExportRecord;
use crate::ports::store::ExportFinish;
use crate::ports::{Exports, Listed, PortResult};
use async_trait::async_trait;

#[async_trait]
impl Exports for Dynamo {
    async fn get(&self, account_id: &str, export_id: &str) -> PortResult<Option<ExportRecord>> {
        Dynamo::get(
            self,
            &self.t.exports,
            account_key("export_id", account_id, export_id),
        )
        .await
    }

    async fn list(
        &self,
        account_id: &str,
        limit: usize,
        before: Option<String>,
    ) -> PortResult<Listed<ExportRecord>> {
        let q = Query::new(&self.t.exports, "account_id = :a")
            .value(":a", s(account_id))
            .newest_first();
        let start = before.map(|b| account_key("export_id", account_id, &b));
        self.query_list(&q, limit, start).await
    }

    async fn nudge(&self, rec: &ExportRecord, now_ms: i64, gap_ms: i64) -> PortResult<bool> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.t.exports)
            .set_key(Some(account_key(
                "export_id",
                &rec.account_id,
                &rec.export_id,
            )))
            .update_expression("SET nudged_ms = :now")
            .condition_expression(
                "#status = :queued AND (attribute_not_exists(nudged_ms) OR nudged_ms < :cutoff)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":queued", s("queued"))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":cutoff", n(now_ms - gap_ms))
            .send()
            .await;
        applied(res, "UpdateItem")
    }

    async fn start_run(
        &self,
        rec: &ExportRecord,
        run: u32,
        upload_id: &str,
        now_ms: i64,
    ) -> PortResult<bool> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.t.exports)
            .set_key(Some(account_key(
                "export_id",
                &rec.account_id,
                &rec.export_id,
            )))
            .update_expression(
                "SET #status = :running, run = :run, upload_id = :u, rows_written = :zero, \
                 #bytes = :zero, run_started_ms = :now",
            )
            .condition_expression("#status <> :completed AND run = :prev")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#bytes", "bytes")
            .expression_attribute_values(":running", s("running"))
            .expression_attribute_values(":completed", s("completed"))
            .expression_attribute_values(":run", n(run))
            .expression_attribute_values(":prev", n(rec.run))
            .expression_attribute_values(":u", s(upload_id))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await;
        applied(res, "UpdateItem")
    }

    async fn progress(
        &self,
        rec: &ExportRecord,
        run: u32,
        rows: u64,
        bytes: u64,
    ) -> PortResult<bool> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.t.exports)
            .set_key(Some(account_key(
                "export_id",
                &rec.account_id,
                &rec.export_id,
            )))
            .update_expression("SET rows_written = :r, #bytes = :b")
            .condition_expression("run = :run AND #status = :running")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#bytes", "bytes")
            .expression_attribute_values(":r", n(rows))
            .expression_attribute_values(":b", n(bytes))
            .expression_attribute_values(":run", n(run))
            .expression_attribute_values(":running", s("running"))
            .send()
            .await;
        applied(res, "UpdateItem")
    }

    async fn finish(&self, rec: &ExportRecord, run: u32, f: &ExportFinish) -> PortResult<bool> {
        let mut set = "SET #status = :st, rows_written = :r, #bytes = :b, completed_ms = :now, \
                       peak_buffer_bytes = :peak"
            .to_string();
        let mut req = self
            .ddb
            .update_item()
            .table_name(&self.t.exports)
            .set_key(Some(account_key(
                "export_id",
                &rec.account_id,
                &rec.export_id,
            )))
            .condition_expression("run = :run AND #status = :running")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#bytes", "bytes")
            .expression_attribute_values(":st", s(f.status))
            .expression_attribute_values(":r", n(f.rows))
            .expression_attribute_values(":b", n(f.bytes))
            .expression_attribute_values(":now", n(f.now_ms))
            .expression_attribute_values(":peak", n(f.peak_buffer))
            .expression_attribute_values(":run", n(run))
            .expression_attribute_values(":running", s("running"));
        if let Some(h) = &f.sha256 {
            set.push_str(", sha256 = :h");
            req = req.expression_attribute_values(":h", s(h));
        }
        if let Some(e) = &f.error {
            set.push_str(", #error = :e");
            req = req
                .expression_attribute_names("#error", "error")
                .expression_attribute_values(":e", s(e));
        }
        applied(req.update_expression(set).send().await, "UpdateItem")
    }
}
