//! Auth methods: how a credential is obtained and renewed at the provider.

pub mod catalog;
pub mod connection;
pub mod oauth2;
