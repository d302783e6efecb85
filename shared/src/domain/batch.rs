//! Batches and tasks: what a customer may submit, and what a batch costs.

use super::account::MAX_BATCH_TASKS;
use super::money::Credits;
use super::pricing::{Model, PriceTable};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Prompts are bounded so that one task item stays far below DynamoDB's 400 KB.
pub const MAX_PROMPT_CHARS: usize = 4_000;
/// The content type of an input file of tasks (JSON Lines).
pub const INPUT_CONTENT_TYPE: &str = "application/jsonl";
/// The largest input file: 10,000 tasks of 4,000 characters each fit with room to spare.
pub const MAX_INPUT_FILE_BYTES: u64 = 64 * 1024 * 1024;
pub const MAX_CLIENT_REF_CHARS: usize = 128;
pub const MAX_METADATA_KEYS: usize = 16;
pub const MAX_METADATA_KEY_CHARS: usize = 64;
pub const MAX_METADATA_VALUE_CHARS: usize = 512;

/// One task as the customer sends it (inline or as one line of an input file).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskInput {
    pub prompt: String,
    #[serde(default)]
    pub duration_seconds: Option<u32>,
    #[serde(default)]
    pub aspect_ratio: Option<String>,
    #[serde(default)]
    pub resolution: Option<String>,
    /// The customer's own reference for the task, echoed back everywhere.
    #[serde(default)]
    pub client_ref: Option<String>,
}

/// A validated task with every parameter resolved to the model's default where omitted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub prompt: String,
    pub duration_seconds: u32,
    pub aspect_ratio: String,
    pub resolution: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ref: Option<String>,
}

/// What each model accepts. Provider-independent: the provider adapter maps these.
struct ModelRules {
    durations: &'static [u32],
    default_duration: u32,
    aspect_ratios: &'static [&'static str],
    resolutions: &'static [&'static str],
    /// Resolutions that only come at the longest duration (Veo renders 1080p at 8 s only).
    long_only_resolutions: &'static [&'static str],
}

fn rules(model: Model) -> ModelRules {
    match model {
        Model::Sora2 => ModelRules {
            durations: &[4, 8, 12],
            default_duration: 4,
            aspect_ratios: &["16:9", "9:16"],
            resolutions: &["720p"],
            long_only_resolutions: &[],
        },
        Model::VeoPro => ModelRules {
            durations: &[4, 6, 8],
            default_duration: 8,
            aspect_ratios: &["16:9", "9:16"],
            resolutions: &["720p", "1080p"],
            long_only_resolutions: &["1080p"],
        },
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TaskError {
    #[error("prompt must not be empty")]
    EmptyPrompt,
    #[error("prompt is longer than {MAX_PROMPT_CHARS} characters")]
    PromptTooLong,
    #[error("prompt contains control characters")]
    PromptControl,
    #[error("duration_seconds must be one of {allowed:?} for {model}")]
    Duration {
        model: Model,
        allowed: &'static [u32],
    },
    #[error("aspect_ratio must be one of {allowed:?} for {model}")]
    AspectRatio {
        model: Model,
        allowed: &'static [&'static str],
    },
    #[error("resolution must be one of {allowed:?} for {model}")]
    Resolution {
        model: Model,
        allowed: &'static [&'static str],
    },
    #[error("resolution {resolution} needs duration_seconds {needs} for {model}")]
    ResolutionDuration {
        model: Model,
        resolution: String,
        needs: u32,
    },
    #[error("client_ref must be 1 to {MAX_CLIENT_REF_CHARS} printable characters")]
    ClientRef,
}

pub fn validate_task(model: Model, input: TaskInput) -> Result<TaskSpec, TaskError> {
    let r = rules(model);
    if input.prompt.trim().is_empty() {
        return Err(TaskError::EmptyPrompt);
    }
    if input.prompt.chars().count() > MAX_PROMPT_CHARS {
        return Err(TaskError::PromptTooLong);
    }
    if input
        .prompt
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(TaskError::PromptControl);
    }
    let duration = input.duration_seconds.unwrap_or(r.default_duration);
    if !r.durations.contains(&duration) {
        return Err(TaskError::Duration {
            model,
            allowed: r.durations,
        });
    }
    let aspect = input
        .aspect_ratio
        .unwrap_or_else(|| r.aspect_ratios[0].to_string());
    if !r.aspect_ratios.contains(&aspect.as_str()) {
        return Err(TaskError::AspectRatio {
            model,
            allowed: r.aspect_ratios,
        });
    }
    let resolution = input
        .resolution
        .unwrap_or_else(|| r.resolutions[0].to_string());
    if !r.resolutions.contains(&resolution.as_str()) {
        return Err(TaskError::Resolution {
            model,
            allowed: r.resolutions,
        });
    }
    let longest = r.durations.iter().copied().max().unwrap_or(duration);
    if r.long_only_resolutions.contains(&resolution.as_str()) && duration != longest {
        return Err(TaskError::ResolutionDuration {
            model,
            resolution,
            needs: longest,
        });
    }
    if let Some(c) = &input.client_ref {
        let n = c.chars().count();
        if n == 0 || n > MAX_CLIENT_REF_CHARS || c.chars().any(char::is_control) {
            return Err(TaskError::ClientRef);
        }
    }
    Ok(TaskSpec {
        prompt: input.prompt,
        duration_seconds: duration,
        aspect_ratio: aspect,
        resolution,
        client_ref: input.client_ref,
    })
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchRuleError {
    #[error("a batch needs at least {min} tasks on this account's plan; got {got}")]
    TooSmall { min: u32, got: usize },
    #[error("a batch holds at most {MAX_BATCH_TASKS} tasks; got {got}")]
    TooLarge { got: usize },
    #[error("metadata: {0}")]
    Metadata(&'static str),
}

/// What a batch costs, fixed at creation (the hold).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchPlan {
    pub model: Model,
    pub unit_price: Credits,
    pub price_version: &'static str,
    pub task_count: u32,
    /// `task_count x unit_price`: what batch creation pre-deducts.
    pub hold: Credits,
}

pub fn plan_batch(
    model: Model,
    task_count: usize,
    min_batch_size: u32,
    prices: &PriceTable,
) -> Result<BatchPlan, BatchRuleError> {
    if task_count > MAX_BATCH_TASKS as usize {
        return Err(BatchRuleError::TooLarge { got: task_count });
    }
    if task_count < min_batch_size as usize {
        return Err(BatchRuleError::TooSmall {
            min: min_batch_size,
            got: task_count,
        });
    }
    let unit_price = prices.unit_price(model);
    // task_count <= 10_000 and prices are small: this cannot overflow; checked anyway.
    let hold = unit_price
        .times(task_count as u64)
        .ok_or(BatchRuleError::TooLarge { got: task_count })?;
    Ok(BatchPlan {
        model,
        unit_price,
        price_version: prices.version,
        task_count: task_count as u32,
        hold,
    })
}

pub fn validate_metadata(m: &BTreeMap<String, String>) -> Result<(), BatchRuleError> {
    if m.len() > MAX_METADATA_KEYS {
        return Err(BatchRuleError::Metadata("at most 16 keys"));
    }
    for (k, v) in m {
        if k.is_empty() || k.chars().count() > MAX_METADATA_KEY_CHARS {
            return Err(BatchRuleError::Metadata("keys must be 1 to 64 characters"));
        }
        if v.chars().count() > MAX_METADATA_VALUE_CHARS {
            return Err(BatchRuleError::Metadata(
                "values must be at most 512 characters",
            ));
        }
    }
    Ok(())
}

/// Batch lifecycle. `accepted`: the hold is committed and the task records are being written;
/// `queued`: every task record exists. Later states belong to the task pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    Accepted,
    Queued,
    Running,
    Completed,
}

impl BatchStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Accepted => "accepted",
            BatchStatus::Queued => "queued",
            BatchStatus::Running => "running",
            BatchStatus::Completed => "completed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            BatchStatus::Accepted,
            BatchStatus::Queued,
            BatchStatus::Running,
            BatchStatus::Completed,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Rejected,
    TimedOut,
    Cancelled,
}

/// Tasks per status, kept on the batch record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCounts {
    pub total: u32,
    pub queued: u32,
    pub running: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub rejected: u32,
    pub timed_out: u32,
    /// Cancelled after reaching a provider: charged (contract 2.2).
    pub cancelled: u32,
    /// Cancelled before reaching a provider: released, not charged.
    #[serde(default)]
    pub released: u32,
}

impl TaskCounts {
    /// Tasks with an outcome.
    pub fn ended(&self) -> u32 {
        self.succeeded
            + self.failed
            + self.rejected
            + self.timed_out
            + self.cancelled
            + self.released
    }

    pub fn all_queued(total: u32) -> Self {
        TaskCounts {
            total,
            queued: total,
            ..Default::default()
        }
    }
}

/// Credits of one batch: `held` at creation; `charged` and `refunded` as tasks end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchCredits {
    pub held: Credits,
    pub charged: Credits,
    pub refunded: Credits,
    /// Units of tasks cancelled before they reached a provider (absent on batches from
    /// before the cancel rule: zero).
    #[serde(default)]
    pub released: Credits,
}

/// A task's id: its batch's id and its 0-based position, so a task id alone finds its row.
pub fn task_id(batch_id: &str, idx: u32) -> String {
    let body = batch_id.strip_prefix("bat_").unwrap_or(batch_id);
    format!("task_{body}_{idx:05}")
}

/// Inverse of [`task_id`].
pub fn parse_task_id(task_id: &str) -> Option<(String, u32)> {
    let rest = task_id.strip_prefix("task_")?;
    let (body, idx) = rest.split_once('_')?;
    let batch_id = format!("bat_{body}");
    if !super::ids::is_valid("bat", &batch_id) || idx.len() < 5 {
        return None;
    }
    Some((batch_id, idx.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::pricing::CURRENT_PRICES;

    fn input(prompt: &str) -> TaskInput {
        TaskInput {
            prompt: prompt.into(),
            duration_seconds: None,
            aspect_ratio: None,
            resolution: None,
            client_ref: None,
        }
    }

    #[test]
    fn defaults_follow_the_model() {
        let s = validate_task(Model::Sora2, input("a cat")).ok();
        assert_eq!(
            s.map(|s| (s.duration_seconds, s.resolution)),
            Some((4, "720p".into()))
        );
        let v = validate_task(Model::VeoPro, input("a cat")).ok();
        assert_eq!(v.map(|s| s.duration_seconds), Some(8));
    }

    #[test]
    fn parameters_are_checked_against_the_model() {
        let mut i = input("a cat");
        i.duration_seconds = Some(6);
        assert!(matches!(
            validate_task(Model::Sora2, i.clone()),
            Err(TaskError::Duration { .. })
        ));
        assert!(validate_task(Model::VeoPro, i.clone()).is_ok());
        i.resolution = Some("1080p".into());
        assert!(matches!(
            validate_task(Model::VeoPro, i.clone()),
            Err(TaskError::ResolutionDuration { needs: 8, .. })
        ));
        assert!(matches!(
            validate_task(Model::Sora2, i),
            Err(TaskError::Duration { .. })
        ));
        let mut a = input("a cat");
        a.aspect_ratio = Some("4:3".into());
        assert!(matches!(
            validate_task(Model::VeoPro, a),
            Err(TaskError::AspectRatio { .. })
        ));
    }

    #[test]
    fn prompts_are_bounded() {
        assert_eq!(
            validate_task(Model::Sora2, input("  \n")),
            Err(TaskError::EmptyPrompt)
        );
        let long = "é".repeat(MAX_PROMPT_CHARS + 1);
        assert_eq!(
            validate_task(Model::Sora2, input(&long)),
            Err(TaskError::PromptTooLong)
        );
        assert!(validate_task(Model::Sora2, input(&"é".repeat(MAX_PROMPT_CHARS))).is_ok());
        assert_eq!(
            validate_task(Model::Sora2, input("a\u{0}b")),
            Err(TaskError::PromptControl)
        );
        assert!(validate_task(Model::Sora2, input("line one\nline two\tend")).is_ok());
    }

    #[test]
    fn hold_is_count_times_unit_price() {
        let p = plan_batch(Model::VeoPro, 10, 10, &CURRENT_PRICES);
        assert_eq!(p.map(|p| p.hold), Ok(Credits(5_990)));
        assert_eq!(
            plan_batch(Model::Sora2, 9, 10, &CURRENT_PRICES),
            Err(BatchRuleError::TooSmall { min: 10, got: 9 })
        );
        assert_eq!(
            plan_batch(Model::Sora2, 10_001, 10, &CURRENT_PRICES),
            Err(BatchRuleError::TooLarge { got: 10_001 })
        );
        assert_eq!(
            plan_batch(Model::Sora2, 10_000, 10, &CURRENT_PRICES).map(|p| p.hold),
            Ok(Credits(490_000))
        );
    }

    #[test]
    fn task_ids_round_trip() {
        let b = crate::domain::ids::compose("bat", 77, [9; 10]);
        let t = task_id(&b, 42);
        assert_eq!(parse_task_id(&t), Some((b, 42)));
        assert_eq!(parse_task_id("task_nope_00001"), None);
    }
}
