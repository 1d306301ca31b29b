//! The same tools over MCP: streamable HTTP at `/mcp`, served by the official Rust SDK (`rmcp`).
//!
//! Stateless with plain JSON answers: every POST is answered on its own (no session to lose when the
//! sidecar restarts, no SSE stream needed), and `initialize`, `tools/list`, `tools/call` and `ping`
//! work as the specification says. When more than one mounted account can run a tool, its input
//! schema gains a required `account` property listing them; in broker mode, every tool gains the
//! optional `connected_account`, `connection` and `identifier` properties instead. A tool that fails (bad input, provider
//! error) is a tool result with `isError: true` and the same error object as the HTTP API; an
//! unknown tool is a JSON-RPC error.

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, JsonObject, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool as McpTool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};

use super::call;
use super::error::ApiError;
use super::selection::{PARAMS, Selection};
use super::state::Sidecar;
use super::tools::loggable;

#[derive(Clone)]
pub struct Tools {
    sc: Arc<Sidecar>,
}

/// The tower service mounted at `/mcp`.
pub fn service(sc: Arc<Sidecar>) -> StreamableHttpService<Tools, NeverSessionManager> {
    let mut config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_max_request_body_bytes(1024 * 1024);
    if sc.allow_non_loopback {
        config = config.disable_allowed_hosts();
    }
    StreamableHttpService::new(
        move || Ok(Tools { sc: sc.clone() }),
        Arc::new(NeverSessionManager::default()),
        config,
    )
}

impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "agent-auth-operator-sidecar",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "Tools act in third-party apps as the user whose account is mounted in this pod. \
                 Credentials are added by the sidecar; never ask for or pass tokens.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let tools = self
            .sc
            .offered()
            .into_iter()
            .map(|o| {
                let mut schema = o.tool.input_schema.clone();
                if self.sc.broker.is_some() {
                    add_broker_properties(&mut schema, &o.accounts);
                } else if o.accounts.len() > 1 {
                    add_account_property(&mut schema, &o.accounts);
                }
                let schema: JsonObject = match schema {
                    Value::Object(m) => m,
                    _ => JsonObject::new(),
                };
                McpTool::new(o.tool.name.clone(), o.tool.description.clone(), schema)
            })
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let mut args = request.arguments.unwrap_or_default();
        let result = match selection(&mut args, self.sc.broker.is_some()) {
            Ok(selection) => call::run(&self.sc, &request.name, &selection, Value::Object(args)).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(v) => {
                tracing::info!(tool = loggable(&request.name), "MCP tool call succeeded");
                let structured = match v {
                    Value::Object(_) => v,
                    other => json!({ "result": other }),
                };
                Ok(CallToolResult::structured(structured).into())
            }
            Err(ApiError::UnknownTool(name)) => {
                Err(ErrorData::invalid_params(format!("unknown tool `{name}`"), None))
            }
            Err(e) => {
                tracing::info!(
                    tool = loggable(&request.name),
                    code = e.code(),
                    "MCP tool call failed"
                );
                Ok(CallToolResult::structured_error(e.body()).into())
            }
        }
    }
}

/// The account the arguments name, taken out of them. Outside broker mode only `account` is the
/// sidecar's: the other names may be a tool's own input.
fn selection(args: &mut JsonObject, broker: bool) -> Result<Selection, ApiError> {
    let mut values: [Option<String>; 4] = Default::default();
    for (i, (name, _)) in PARAMS
        .iter()
        .enumerate()
        .take(if broker { PARAMS.len() } else { 1 })
    {
        values[i] = match args.remove(*name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => return Err(ApiError::BadSelection(format!("`{name}` must be a string"))),
        };
    }
    let [a, ca, c, i] = &values;
    Selection::from_values(a.as_deref(), ca.as_deref(), c.as_deref(), i.as_deref())
}

fn add_account_property(schema: &mut Value, accounts: &[String]) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    let props = obj.entry("properties").or_insert_with(|| json!({}));
    if let Some(p) = props.as_object_mut() {
        p.insert(
            "account".into(),
            json!({"type": "string", "enum": accounts, "description": "Which mounted account to act as."}),
        );
    }
    let required = obj.entry("required").or_insert_with(|| json!([]));
    if let Some(r) = required.as_array_mut() {
        r.push(json!("account"));
    }
}

/// Broker mode: how a call names the account (none required: one mounted account of the provider
/// serves calls that name none).
fn add_broker_properties(schema: &mut Value, mounted: &[String]) {
    let Some(props) = schema
        .as_object_mut()
        .map(|o| o.entry("properties").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let mounted = if mounted.is_empty() {
        String::new()
    } else {
        format!(" Mounted here: {}.", mounted.join(", "))
    };
    props.insert(
        "connected_account".into(),
        json!({"type": "string", "description": format!("The account to act as: `name` or `namespace/name`.{mounted}")}),
    );
    props.insert(
        "connection".into(),
        json!({"type": "string", "description": "With `identifier`: act as this user's account of this Connection."}),
    );
    props.insert(
        "identifier".into(),
        json!({"type": "string", "description": "With `connection`: the user (as the ConnectedAccount's spec.identifier)."}),
    );
}
