//! Accounts: plan, retention, concurrency and the batch-size rules that follow from the plan.

use serde::{Deserialize, Serialize};

/// Contract 1.4: pay-as-you-go has a minimum batch of 10; enterprise terms are per contract.
pub const PAYG_MIN_BATCH: u32 = 10;
/// The largest batch we accept, in tasks. Batches this large must come as an input file: a
/// Lambda request body is capped at 6 MB.
pub const MAX_BATCH_TASKS: u32 = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    Payg,
    Enterprise,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Active,
    /// Contract 6.1: keys are disabled; the balance stays for batches already created.
    Terminated,
}

/// Contract 4.3: data retention of 30, 90 or 180 days. The ledger is exempt (financial record).
pub const RETENTION_CHOICES: [u32; 3] = [30, 90, 180];

/// The S3 object tags the bucket's lifecycle rules match: an object carrying them is deleted
/// after `days` (template.yaml, `DataBucket`). Every object holding customer data carries
/// them: videos, input files, exports.
pub fn retention_tags(days: u32) -> String {
    format!("retention-days={days}")
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccountRuleError {
    #[error("name must be 1 to 200 characters")]
    Name,
    #[error("retention_days must be one of 30, 90 or 180")]
    Retention,
    #[error("max_concurrency must be between 1 and 10000")]
    Concurrency,
    #[error("min_batch_size is fixed at 10 for pay-as-you-go accounts")]
    MinBatchOnPayg,
    #[error("min_batch_size must be between 1 and {MAX_BATCH_TASKS}")]
    MinBatchRange,
}

/// The terms an operator sets when opening an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountTerms {
    pub name: String,
    pub plan: Plan,
    pub retention_days: u32,
    pub max_concurrency: u32,
    pub min_batch_size: u32,
}

impl AccountTerms {
    pub fn new(
        name: &str,
        plan: Plan,
        retention_days: u32,
        max_concurrency: u32,
        min_batch_size: Option<u32>,
    ) -> Result<Self, AccountRuleError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(AccountRuleError::Name);
        }
        if !RETENTION_CHOICES.contains(&retention_days) {
            return Err(AccountRuleError::Retention);
        }
        if !(1..=10_000).contains(&max_concurrency) {
            return Err(AccountRuleError::Concurrency);
        }
        let min_batch_size = match (plan, min_batch_size) {
            (Plan::Payg, None) | (Plan::Payg, Some(PAYG_MIN_BATCH)) => PAYG_MIN_BATCH,
            (Plan::Payg, Some(_)) => return Err(AccountRuleError::MinBatchOnPayg),
            (Plan::Enterprise, None) => PAYG_MIN_BATCH,
            (Plan::Enterprise, Some(n)) if (1..=MAX_BATCH_TASKS).contains(&n) => n,
            (Plan::Enterprise, Some(_)) => return Err(AccountRuleError::MinBatchRange),
        };
        Ok(AccountTerms {
            name: name.to_string(),
            plan,
            retention_days,
            max_concurrency,
            min_batch_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payg_minimum_is_fixed_enterprise_is_negotiable() {
        let t = AccountTerms::new("Acme", Plan::Payg, 90, 8, None);
        assert_eq!(t.map(|t| t.min_batch_size), Ok(10));
        assert_eq!(
            AccountTerms::new("Acme", Plan::Payg, 90, 8, Some(1)),
            Err(AccountRuleError::MinBatchOnPayg)
        );
        let e = AccountTerms::new("Acme", Plan::Enterprise, 180, 50, Some(1));
        assert_eq!(e.map(|t| t.min_batch_size), Ok(1));
        assert_eq!(
            AccountTerms::new("Acme", Plan::Enterprise, 180, 50, Some(10_001)),
            Err(AccountRuleError::MinBatchRange)
        );
    }

    #[test]
    fn rejects_bad_terms() {
        assert_eq!(
            AccountTerms::new(" ", Plan::Payg, 30, 1, None),
            Err(AccountRuleError::Name)
        );
        assert_eq!(
            AccountTerms::new("A", Plan::Payg, 60, 1, None),
            Err(AccountRuleError::Retention)
        );
        assert_eq!(
            AccountTerms::new("A", Plan::Payg, 30, 0, None),
            Err(AccountRuleError::Concurrency)
        );
    }
}
