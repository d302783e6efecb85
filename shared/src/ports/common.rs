//! What every port shares: its error, paging, time ranges, and fault points.

use std::sync::Arc;

/// A failure of the infrastructure behind a port (not a refusal: those are return values).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("DynamoDB {op}: {detail}")]
    Dynamo { op: &'static str, detail: String },
    #[error("S3 {op}: {detail}")]
    S3 { op: &'static str, detail: String },
    #[error("SQS {op}: {detail}")]
    Sqs { op: &'static str, detail: String },
    #[error("KMS {op}: {detail}")]
    Kms { op: &'static str, detail: String },
    /// A write whose condition the caller treats as an invariant (not as an answer) failed.
    #[error("{op} refused: {detail}")]
    Refused { op: &'static str, detail: String },
    #[error("stored record is malformed: {0}")]
    Corrupt(String),
    #[error("injected fault at {0}")]
    Injected(&'static str),
}

pub type PortResult<T> = Result<T, StoreError>;

/// Where an oldest-first read resumes; opaque to everyone but the adapter that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageToken(pub String);

/// One page of an oldest-first read and where the next one starts (`None`: that was all).
#[derive(Debug)]
pub struct Slice<T> {
    pub items: Vec<T>,
    pub next: Option<PageToken>,
}

/// A newest-first list answer: the items, and whether more follow the last one.
pub type Listed<T> = (Vec<T>, bool);

/// Inclusive time range in epoch milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    pub from_ms: i64,
    pub to_ms: i64,
}

impl TimeRange {
    pub const ALL: TimeRange = TimeRange {
        from_ms: 0,
        to_ms: i64::MAX,
    };

    pub fn contains(&self, ms: i64) -> bool {
        (self.from_ms..=self.to_ms).contains(&ms)
    }
}

type Hook = Arc<dyn Fn(&'static str) -> bool + Send + Sync>;

/// Fault injection: named points between the writes of a multi-write operation. Production
/// runs with no hook; tests and the simulator set one to prove that a crash at any point
/// loses nothing.
#[derive(Clone, Default)]
pub struct Faults(Option<Hook>);

impl Faults {
    pub fn none() -> Self {
        Faults(None)
    }

    /// `hook(point)` returning true makes the operation fail at that point.
    pub fn new(hook: impl Fn(&'static str) -> bool + Send + Sync + 'static) -> Self {
        Faults(Some(Arc::new(hook)))
    }

    pub fn check(&self, point: &'static str) -> PortResult<()> {
        match &self.0 {
            Some(hook) if hook(point) => Err(StoreError::Injected(point)),
            _ => Ok(()),
        }
    }
}
