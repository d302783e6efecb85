pub mod admin;
pub mod billing;
pub mod console;
pub mod customer;
pub mod payments;
pub mod webhooks;
