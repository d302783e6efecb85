pub mod admin;
pub mod customer;
