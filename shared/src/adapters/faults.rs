//! Fault injection: named points between the writes of a multi-write operation. Production
//! runs with no hook; tests set one to prove that a crash at any point loses nothing.

use super::StoreError;
use std::sync::Arc;

type Hook = Arc<dyn Fn(&'static str) -> bool + Send + Sync>;

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

    pub fn check(&self, point: &'static str) -> Result<(), StoreError> {
        match &self.0 {
            Some(hook) if hook(point) => Err(StoreError::Injected(point)),
            _ => Ok(()),
        }
    }
}
