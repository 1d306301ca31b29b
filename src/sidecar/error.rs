//! Errors the sidecar returns to the agent: a status, a stable code, a message that names the
//! problem, never a credential.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::credentials::CredentialError;

/// Input that does not match a tool's schema; each message names the field.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct InvalidInput(pub Vec<String>);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("unknown tool `{0}`")]
    UnknownTool(String),
    #[error("unknown account `{0}`")]
    UnknownAccount(String),
    #[error("no mounted account can run {tool}: it needs a `{provider}` account")]
    NoAccount { tool: String, provider: String },
    #[error("several accounts can run {tool} ({accounts}): name one with `account`")]
    AmbiguousAccount { tool: String, accounts: String },
    #[error("account `{account}` is a `{actual}` account; {tool} needs `{provider}`")]
    WrongProvider {
        account: String,
        actual: String,
        tool: String,
        provider: String,
    },
    #[error("invalid input: {0}")]
    InvalidInput(#[from] InvalidInput),
    #[error("refused path: {0}")]
    BadPath(String),
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("tool definition error: {0}")]
    ToolDefinition(String),
    #[error("the credential of account `{account}` is unavailable: {source}")]
    Credential {
        account: String,
        source: CredentialError,
    },
    #[error("no API base URL for account `{0}` (set --api-base, or use a provider the catalog knows)")]
    NoBase(String),
    /// The credential names an API base the sidecar does not send tokens to.
    #[error("account `{account}`: {problem} (set --api-base for its provider if that host is right)")]
    UntrustedBase {
        account: String,
        problem: super::trust::UntrustedBase,
    },
    #[error("the provider is unreachable: {0}")]
    Unreachable(String),
    #[error("the provider's response is larger than {0} bytes")]
    TooLarge(usize),
    #[error("invalid account selection: {0}")]
    BadSelection(String),
    #[error("{0} needs broker mode (--broker-url)")]
    NoBroker(String),
    #[error("unknown account {0} (or it is not delivered through the broker)")]
    UnknownBrokerAccount(String),
    /// The broker knows the account but has no token for it now (not authorized yet, expired...).
    #[error("account {account} is not active (state {state})")]
    NotActive { account: String, state: String },
    #[error(
        "this pod's ServiceAccount may not use account {0} (it needs the `use` verb on connectedaccounts.agentauth.dev)"
    )]
    Forbidden(String),
    #[error("the token broker refused this pod's ServiceAccount token (audience agentauth.dev? expired?)")]
    BrokerTokenRefused,
    #[error("the pod's ServiceAccount token is unavailable: {0}")]
    BrokerToken(String),
    #[error("the token broker is unavailable: {0}")]
    BrokerUnavailable(String),
    #[error("the token broker answered {status}: {message}")]
    Broker { status: u16, message: String },
    #[error("the provider answered {status}: {message}")]
    Provider {
        status: u16,
        message: String,
        details: Option<Value>,
        retry_after: Option<String>,
    },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::UnknownTool(_)
            | ApiError::UnknownAccount(_)
            | ApiError::UnknownBrokerAccount(_)
            | ApiError::NoAccount { .. } => StatusCode::NOT_FOUND,
            ApiError::NotActive { .. } => StatusCode::CONFLICT,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BrokerTokenRefused | ApiError::BrokerToken(_) | ApiError::BrokerUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Broker { .. } => StatusCode::BAD_GATEWAY,
            ApiError::BadSelection(_)
            | ApiError::NoBroker(_)
            | ApiError::AmbiguousAccount { .. }
            | ApiError::WrongProvider { .. }
            | ApiError::InvalidInput(_)
            | ApiError::BadPath(_) => StatusCode::BAD_REQUEST,
            ApiError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::ToolDefinition(_) | ApiError::NoBase(_) | ApiError::UntrustedBase { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ApiError::Credential { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unreachable(_) | ApiError::TooLarge(_) => StatusCode::BAD_GATEWAY,
            ApiError::Provider { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
        }
    }

    /// Stable machine-readable code (the enum variant), for agents and log fields.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::UnknownTool(_) => "unknown_tool",
            ApiError::UnknownAccount(_) | ApiError::UnknownBrokerAccount(_) => "unknown_account",
            ApiError::BadSelection(_) => "invalid_account_selection",
            ApiError::NoBroker(_) => "broker_not_configured",
            ApiError::NotActive { .. } => "account_not_active",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::BrokerTokenRefused => "broker_token_refused",
            ApiError::BrokerToken(_) => "broker_token_unavailable",
            ApiError::BrokerUnavailable(_) => "broker_unavailable",
            ApiError::Broker { .. } => "broker_error",
            ApiError::NoAccount { .. } => "no_account",
            ApiError::AmbiguousAccount { .. } => "ambiguous_account",
            ApiError::WrongProvider { .. } => "wrong_account",
            ApiError::InvalidInput(_) => "invalid_input",
            ApiError::BadPath(_) => "bad_path",
            ApiError::BodyTooLarge(_) => "body_too_large",
            ApiError::ToolDefinition(_) => "tool_definition",
            ApiError::Credential { .. } => "credential_unavailable",
            ApiError::NoBase(_) => "no_api_base",
            ApiError::UntrustedBase { .. } => "untrusted_api_base",
            ApiError::Unreachable(_) => "provider_unreachable",
            ApiError::TooLarge(_) => "response_too_large",
            ApiError::Provider { .. } => "provider_error",
        }
    }

    /// `{"error": {"code", "message", "provider_status"?, "details"?, "state"?}}`
    pub fn body(&self) -> Value {
        let mut e = json!({"code": self.code(), "message": self.to_string()});
        if let ApiError::NotActive { state, .. } = self {
            e["state"] = json!(state);
        }
        if let ApiError::Provider { status, details, .. } = self {
            e["provider_status"] = json!(status);
            if let Some(d) = details {
                e["details"] = d.clone();
            }
        }
        json!({ "error": e })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status(), axum::Json(self.body())).into_response();
        if let ApiError::Provider {
            retry_after: Some(r), ..
        } = &self
            && let Ok(v) = HeaderValue::from_str(r)
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}
