//! The sidecar's HTTP API (axum): tools, proxy, MCP, health. Requests must name a loopback `Host`
//! and carry no foreign `Origin` (so a web page cannot reach the API through the agent's browser or
//! DNS rebinding), unless `--allow-non-loopback` was given.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::{Value, json};
use tower_http::set_header::SetResponseHeaderLayer;

use super::error::{ApiError, InvalidInput};
use super::selection::Selection;
use super::state::Sidecar;
use super::tools::loggable;
use super::{call, mcp, proxy};

/// Largest tool input accepted.
const INPUT_LIMIT: usize = 1024 * 1024;

pub fn router(sc: Arc<Sidecar>) -> Router {
    let guard_sc = sc.clone();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/tools", get(list_tools))
        .route(
            "/v1/tools/{tool}",
            post(call_tool).layer(axum::extract::DefaultBodyLimit::max(INPUT_LIMIT)),
        )
        .route("/v1/proxy/{account}", any(proxy::handle))
        .route("/v1/proxy/{account}/{*path}", any(proxy::handle))
        .nest_service("/mcp", mcp::service(sc.clone()))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"error": {"code": "not_found", "message": "no such endpoint"}})),
            )
        })
        .with_state(sc)
        .layer(axum::middleware::from_fn(move |req: Request, next: Next| {
            let allow_any = guard_sc.allow_non_loopback;
            async move { guard(allow_any, req, next).await }
        }))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
}

/// Serves until SIGTERM or Ctrl-C, then lets in-flight requests finish.
pub async fn serve(sc: Arc<Sidecar>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, router(sc))
        .with_graceful_shutdown(shutdown_signal())
        .await
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}

use crate::http::is_loopback_host;

async fn guard(allow_any: bool, req: Request, next: Next) -> Response {
    if !allow_any {
        let host_ok = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(is_loopback_host);
        let origin_ok = req.headers().get(header::ORIGIN).is_none_or(|o| {
            o.to_str()
                .ok()
                .and_then(|o| url::Url::parse(o).ok())
                .and_then(|u| u.host_str().map(str::to_owned))
                .is_some_and(|h| is_loopback_host(&h))
        });
        if !host_ok || !origin_ok {
            let body = json!({"error": {"code": "forbidden", "message": "the sidecar serves loopback clients only"}});
            return (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
        }
    }
    next.run(req).await
}

async fn healthz(State(sc): State<Arc<Sidecar>>) -> Response {
    let accounts: Vec<Value> = sc
        .accounts
        .iter()
        .map(|a| {
            let cred = a.credential();
            json!({
                "name": a.name,
                "provider": a.provider(),
                "readable": cred.is_ok(),
            })
        })
        .collect();
    // Broker mode: the pod's ServiceAccount token must be readable (the broker is not called here).
    let broker = sc.broker.as_ref().map(
        |b| json!({"url": b.broker.endpoint().as_str(), "token_readable": b.broker.subject_token().is_ok()}),
    );
    let ok = accounts.iter().all(|a| a["readable"] == true)
        && broker.as_ref().is_none_or(|b| b["token_readable"] == true);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({"ok": ok, "accounts": accounts});
    if let Some(b) = broker {
        body["broker"] = b;
    }
    (status, axum::Json(body)).into_response()
}

/// `GET /v1/tools[?format=openai]`: the tools the mounted accounts can run (every tool in broker
/// mode: the account is named per call).
///
/// Default shape: `{"tools": [{"name", "description", "input_schema"}], "accounts": [...]}` (the
/// tool objects are what Anthropic's Messages API takes); `format=openai` gives
/// `{"type": "function", "function": {"name", "description", "parameters"}}` objects instead.
async fn list_tools(State(sc): State<Arc<Sidecar>>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let openai = q.get("format").is_some_and(|f| f == "openai");
    let offered = sc.offered();
    let tools: Vec<Value> = offered
        .iter()
        .map(|o| {
            let t = &o.tool;
            if openai {
                json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.input_schema}})
            } else {
                json!({"name": t.name, "description": t.description, "input_schema": t.input_schema})
            }
        })
        .collect();
    let accounts: Vec<Value> = sc
        .accounts
        .providers()
        .into_iter()
        .map(|(a, p)| {
            let names: Vec<&str> = offered
                .iter()
                .filter(|o| o.accounts.contains(&a.name))
                .map(|o| o.tool.name.as_str())
                .collect();
            json!({"name": a.name, "provider": p, "tools": names})
        })
        .collect();
    axum::Json(json!({"tools": tools, "accounts": accounts, "broker": sc.broker.is_some()})).into_response()
}

/// `POST /v1/tools/{tool}[?connected_account=NAME|?connection=C&identifier=I]` (or the
/// `X-Agentauth-*` headers; `account` is `connected_account`'s old name) with the input as the JSON
/// body.
async fn call_tool(
    State(sc): State<Arc<Sidecar>>,
    Path(tool): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let input: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                let err = ApiError::InvalidInput(InvalidInput(vec![format!("input: not JSON: {e}")]));
                return err.into_response();
            }
        }
    };
    let result = match Selection::from_request(&q, &headers) {
        Ok(selection) => call::run(&sc, &tool, &selection, input).await,
        Err(e) => Err(e),
    };
    let ms = started.elapsed().as_millis();
    let tool = loggable(&tool);
    match result {
        Ok(v) => {
            tracing::info!(tool, ms, "tool call succeeded");
            axum::Json(v).into_response()
        }
        Err(e) => {
            tracing::info!(
                tool,
                ms,
                code = e.code(),
                status = e.status().as_u16(),
                "tool call failed"
            );
            e.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for ok in [
            "127.0.0.1:8787",
            "localhost",
            "LOCALHOST:1",
            "[::1]:8787",
            "127.1.2.3",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "example.com",
            "10.0.0.1:8787",
            "[fe80::1]:1",
            "localhost.evil.com",
            "",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }
}
