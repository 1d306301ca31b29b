//! agent-auth-operator: authorizes AI agents to act for users in third-party apps, the Kubernetes way.
//!
//! A `ConnectedAccount` names an app (`Connection`) and a user; the operator runs the authorization,
//! stores the credential in a Secret agent pods mount, and keeps it fresh.

pub mod admin;
pub mod api;
pub mod auth;
pub mod broker;
pub mod config;
pub mod controller;
pub mod egress;
pub mod gateway;
pub mod http;
pub mod intake;
pub mod metrics;
pub mod percent;
pub mod plugin;
pub mod projection;
pub mod review;
pub mod run;
pub mod serve;
pub mod sidecar;
pub mod signer;
pub mod store;
pub mod telemetry;
