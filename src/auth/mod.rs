//! Auth methods: how a credential is obtained and renewed at the provider.

pub mod catalog;
pub mod error;
pub mod fields;
pub mod form;
pub mod jwt;
pub mod oauth2;
pub mod quirks;
pub mod resolve;
pub mod scrub;
pub mod settings;
pub mod template;
