//! `agent-auth-operator sidecar`: authorized tool calls for agent pods.
//!
//! Runs next to the agent in its pod and reads the mounted credential Secrets (one directory per
//! account), so that agent code never handles a token and never notices a rotation. It serves, on
//! loopback only:
//!
//! - `GET /v1/tools`: the catalog tools the mounted accounts can run, with their input schemas;
//! - `POST /v1/tools/{tool}`: runs one (input checked against its schema; compact JSON result);
//! - `/v1/proxy/{account}/{path}`: any API call, forwarded to the account's API base with the
//!   credential's header added;
//! - `/mcp`: the same tools over MCP (streamable HTTP);
//! - `/healthz`.
//!
//! Guarantees: the credential files are read on every provider call (so a refresh is used at once);
//! a call the provider rejects with 401 is retried once if the files changed meanwhile; no log line,
//! error or response built by the sidecar carries a credential. The tool catalog is data
//! (`tools.yaml`, plus user files), see `docs/sidecar.md`.
//!
//! In broker mode (`--broker-url`) a call may also name an account the pod does not mount
//! (`connected_account`, or `connection` + `identifier`): its credential comes from the operator's
//! token broker, exchanged for the pod's ServiceAccount token and cached until shortly before it
//! expires.
//!
//! Layers, each using only those below it: the leaves (`args`, `cache`, `credentials`, `scrub`,
//! `template`) -> `trust` -> `error` -> `routing` -> `tools` -> `selection` -> `tool_catalog` ->
//! `accounts`, `docs`, `broker` -> `target` -> `upstream` -> `state` -> `call` -> `proxy`, `mcp` ->
//! `server` -> this file.

mod accounts;
mod args;
mod broker;
mod cache;
mod call;
pub mod credentials;
pub mod docs;
mod error;
mod mcp;
mod proxy;
mod routing;
use crate::auth::scrub;
mod selection;
mod server;
mod state;
mod target;
mod template;
pub mod tool_catalog;
pub mod tools;
mod trust;
mod upstream;

use std::sync::Arc;

pub use args::{AccountArg, ApiBaseArg, BrokerArgs, Config};
pub use error::ApiError;
pub use state::StartError;

use state::Sidecar;

/// Runs the sidecar until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> Result<(), StartError> {
    if !config.listen.ip().is_loopback() && !config.allow_non_loopback {
        return Err(StartError::NonLoopback(config.listen));
    }
    let sidecar = Arc::new(Sidecar::new(&config)?);
    for (a, p) in sidecar.accounts.providers() {
        tracing::info!(account = %a.name, provider = p.as_deref().unwrap_or("unknown"), "account mounted");
    }
    if let Some(b) = &sidecar.broker {
        tracing::info!(broker = %b.broker.endpoint(), "broker mode");
    }
    let tools = sidecar.offered().len();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(config.listen);
    tracing::info!(%addr, tools, "sidecar listening");
    server::serve(sidecar, listener)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}
