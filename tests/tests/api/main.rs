//! Integration tests: the API over HTTP against the emulator. One test binary (one link).

mod access;
mod bad_input;
mod batches;
mod console;
mod crash;
mod exports;
mod files;
mod finance;
mod isolation;
mod ledger;
mod openapi;
mod operators;
mod payments;
mod pipeline;
mod providers;
mod scale;
mod sla;
mod stripe_signatures;
mod timescales;
mod webhooks;
