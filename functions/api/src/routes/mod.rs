pub mod admin;
pub mod console;
pub mod customer;
pub mod payments;
pub mod webhooks;
