pub mod admin;
pub mod customer;
pub mod webhooks;
