//! The platform's core, in three layers:
//!
//! - [`domain`]: the rules of the contract as pure code (prices, packs, batch validation,
//!   the hold arithmetic, ledger entries, idempotency fingerprints). No I/O, unit-tested.
//! - [`adapters`]: DynamoDB and S3. Every money movement is one conditional
//!   `TransactWriteItems`; nothing else moves a balance.
//! - [`service`]: the use cases (submit a batch, grant credits, ...) that the Lambda handlers
//!   call; each composes domain rules with adapter calls and owns its crash story.

pub mod adapters;
pub mod config;
pub mod domain;
pub mod providers;
pub mod runtime;
pub mod service;
