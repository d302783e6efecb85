//! Pure domain: the contract's rules, with no I/O.

pub mod access;
pub mod account;
pub mod api_key;
pub mod batch;
pub mod cursor;
pub mod export;
pub mod idempotency;
pub mod ids;
pub mod invoice;
pub mod ledger;
pub mod money;
pub mod pricing;
pub mod sla;
pub mod stripe;
pub mod task;
pub mod time;
pub mod webhook;
