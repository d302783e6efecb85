//! The platform's core, in layers (docs/ARCHITECTURE.md draws them):
//!
//! - [`domain`]: the rules of the contract as pure code (prices, packs, batch validation,
//!   the hold arithmetic, ledger entries, idempotency fingerprints). No I/O, unit-tested.
//! - [`ports`]: the small traits the use cases talk to (`Money`, `Ledger`, `Batches`,
//!   `Queue`, `Clock`, `Provider`, ...) and the records they exchange.
//! - [`service`]: the use cases (submit a batch, grant credits, end a task, ...) that the
//!   Lambda handlers call; each composes domain rules with port calls and owns its crash
//!   story. It names no adapter.
//! - [`adapters`]: DynamoDB, SQS, S3 and the outbound HTTP clients, each implementing ports,
//!   and their in-memory twins.
//! - [`runtime`]: start-up of a function (logging, configuration, wiring adapters to ports).

pub mod adapters;
pub mod config;
pub mod domain;
pub mod ports;
pub mod runtime;
pub mod service;
