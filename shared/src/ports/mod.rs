//! Ports: the small async traits the use cases talk to, one per aggregate of the contract
//! (money movements, the ledger, batches, tasks, keys, webhooks, ...), plus the queue, blob
//! storage, the clock, randomness and the video providers.
//!
//! Every port has two implementations: a DynamoDB / SQS / S3 / HTTP adapter
//! (`adapters::dynamo`, `adapters::sqs`, ...) and an in-memory twin (`adapters::memory`) with
//! the same semantics, held together by one contract test suite (`tests/src/contract`). The
//! service layer names nothing but these traits and the domain: no SDK type, no item map, no
//! table, index or expression string.
//!
//! What the ports exchange are the records in [`records`] (the stored state of each
//! aggregate) and a few request types defined beside each trait.

pub mod access;
pub mod billing;
pub mod blobs;
pub mod common;
pub mod pipeline;
pub mod provider;
pub mod queue;
pub mod records;
pub mod sealer;
pub mod sla;
pub mod store;
pub mod time;
pub mod webhooks;

pub use access::{Keys, RateWindows, Sessions, Usage};
pub use billing::{Checkout, Invoices, Typesetter};
pub use blobs::Blobs;
pub use pipeline::{Batches, Progress, Tasks};
pub use provider::Provider;
pub use queue::Queue;
pub use sealer::Sealer;
pub use sla::Sla;
pub use store::{Accounts, Exports, Files, Ledger, Models, Money, Requests};
pub use time::{Clock, Random};
pub use webhooks::{Deliveries, Endpoints, Events, WebhookSender};

pub use common::{Faults, Listed, PageToken, PortResult, Slice, StoreError, TimeRange};

use std::sync::Arc;

/// One implementation of every port, and the settings the use cases read: what a use case
/// needs. `service::Services` shares one of these between all requests of a process.
#[derive(Clone)]
pub struct Ports {
    pub accounts: Arc<dyn Accounts>,
    pub money: Arc<dyn Money>,
    pub ledger: Arc<dyn Ledger>,
    pub batches: Arc<dyn Batches>,
    pub tasks: Arc<dyn Tasks>,
    pub progress: Arc<dyn Progress>,
    pub requests: Arc<dyn Requests>,
    pub files: Arc<dyn Files>,
    pub models: Arc<dyn Models>,
    pub keys: Arc<dyn Keys>,
    pub sessions: Arc<dyn Sessions>,
    pub rates: Arc<dyn RateWindows>,
    pub usage: Arc<dyn Usage>,
    pub endpoints: Arc<dyn Endpoints>,
    pub events: Arc<dyn Events>,
    pub deliveries: Arc<dyn Deliveries>,
    pub exports: Arc<dyn Exports>,
    pub sla: Arc<dyn Sla>,
    pub invoices: Arc<dyn Invoices>,
    pub typesetter: Arc<dyn Typesetter>,
    /// Card checkout pages (Stripe).
    pub checkout: Arc<dyn Checkout>,
    pub queue: Arc<dyn Queue>,
    pub blobs: Arc<dyn Blobs>,
    pub sender: Arc<dyn WebhookSender>,
    /// Opens and seals webhook signing secrets (KMS in the cloud).
    pub sealer: Arc<dyn Sealer>,
    pub clock: Arc<dyn Clock>,
    pub random: Arc<dyn Random>,
    pub faults: Faults,
    pub settings: crate::config::Settings,
}

impl Ports {
    /// Every storage port served by one value that implements them all (an adapter family).
    #[allow(clippy::too_many_arguments)]
    pub fn from_store<S>(
        store: Arc<S>,
        queue: Arc<dyn Queue>,
        blobs: Arc<dyn Blobs>,
        sender: Arc<dyn WebhookSender>,
        sealer: Arc<dyn Sealer>,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
        settings: crate::config::Settings,
    ) -> Self
    where
        S: Accounts
            + Money
            + Ledger
            + Batches
            + Tasks
            + Progress
            + Requests
            + Files
            + Models
            + Keys
            + Sessions
            + RateWindows
            + Usage
            + Endpoints
            + Events
            + Deliveries
            + Exports
            + Sla
            + Invoices
            + 'static,
    {
        Ports {
            accounts: store.clone(),
            money: store.clone(),
            ledger: store.clone(),
            batches: store.clone(),
            tasks: store.clone(),
            progress: store.clone(),
            requests: store.clone(),
            files: store.clone(),
            models: store.clone(),
            keys: store.clone(),
            sessions: store.clone(),
            rates: store.clone(),
            usage: store.clone(),
            endpoints: store.clone(),
            events: store.clone(),
            deliveries: store.clone(),
            exports: store.clone(),
            sla: store.clone(),
            invoices: store,
            typesetter: Arc::new(crate::adapters::pdf::KrillaTypesetter::new(
                settings.invoice_font_path.clone(),
            )),
            checkout: Arc::new(crate::adapters::stripe::StripeClient::new(
                &settings.stripe_api_base,
                settings.stripe_secret_key.clone(),
            )),
            queue,
            blobs,
            sender,
            sealer,
            clock,
            random,
            faults: Faults::none(),
            settings,
        }
    }
}
