//! Webhooks: Standard Webhooks signatures, and the address guard that keeps deliveries off
//! private networks.

pub mod address;
pub mod signature;
