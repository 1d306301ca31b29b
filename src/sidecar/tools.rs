//! The tool format: what a catalog file says about a tool, compiled into something the sidecar can
//! run. The built-in catalog is `tools.yaml` next to this file; users add files of the same format
//! (a ConfigMap) with `--tools-dir`. `docs/sidecar.md` documents the format.

use std::collections::BTreeMap;

use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::Value;

use super::error::InvalidInput;
use super::routing::checked_base;
use super::template::{Expr, Template, strip_braces};

/// One catalog file: provider settings and tools.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolsFile {
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderSpec>,
    #[serde(default)]
    pub tools: Vec<ToolSpec>,
}

/// How to talk to a provider's API, beyond the credential.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderSpec {
    /// The REST base for providers the sidecar does not know. A built-in provider's base cannot be
    /// changed here (a file that tries is refused); use `--api-base` in the pod spec.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Sent with every request to this provider (`Notion-Version`, GitHub's `Accept`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Slack style: a successful HTTP answer whose `okField` is `false` is an error ...
    #[serde(default)]
    pub ok_field: Option<String>,
    /// ... whose code is in this field (default `error`) ...
    #[serde(default)]
    pub error_field: Option<String>,
    /// ... and whose HTTP status is looked up here by code (default 400; 401 triggers the re-read).
    #[serde(default)]
    pub error_status: BTreeMap<String, u16>,
}

/// A tool as written in a catalog file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolSpec {
    pub name: String,
    /// The provider name an account's `provider` file must carry for this tool to use it.
    pub provider: String,
    pub description: String,
    /// OAuth scopes the tool needs (documentation only: the provider decides).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// JSON Schema of the input (an object). Top-level `default`s are filled in before use.
    pub input_schema: Value,
    pub request: RequestSpec,
    /// One more request per element of a list in the first response (Gmail: each message).
    #[serde(default)]
    pub for_each: Option<ForEachSpec>,
    /// Projection of the response(s) into the compact result; without it, the response as is.
    #[serde(default)]
    pub result: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestSpec {
    pub method: String,
    /// Below the provider's API base; values from expressions are percent-encoded as one segment.
    pub path: String,
    #[serde(default)]
    pub query: BTreeMap<String, Value>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A JSON body.
    #[serde(default)]
    pub body: Option<Value>,
    /// An `application/x-www-form-urlencoded` body.
    #[serde(default)]
    pub form: Option<BTreeMap<String, Value>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForEachSpec {
    /// Expression for the list (in the first response), e.g. `response.messages`.
    pub items: String,
    /// At most this many follow-up requests (default and maximum 100).
    #[serde(default)]
    pub limit: Option<usize>,
    pub request: RequestSpec,
}

/// A tool ready to run.
#[derive(Debug)]
pub struct Tool {
    pub name: String,
    pub provider: String,
    pub description: String,
    pub scopes: Vec<String>,
    pub input_schema: Value,
    /// `GET /path` of the request (and of the follow-up request), as written.
    pub endpoints: Vec<String>,
    /// `built-in` or the file it came from.
    pub origin: String,
    validator: jsonschema::Validator,
    pub request: RequestTemplate,
    pub for_each: Option<ForEach>,
    pub result: Option<Template>,
}

#[derive(Debug)]
pub struct RequestTemplate {
    pub method: Method,
    pub path: Template,
    pub query: Vec<(String, Template)>,
    pub headers: Vec<(HeaderName, Template)>,
    pub body: BodyTemplate,
}

#[derive(Debug)]
pub enum BodyTemplate {
    Empty,
    Json(Template),
    Form(Vec<(String, Template)>),
}

#[derive(Debug)]
pub struct ForEach {
    pub items: Expr,
    pub limit: usize,
    pub request: RequestTemplate,
}

const MAX_FOR_EACH: usize = 100;

/// A tool name fit for a log line (names come from URLs and MCP requests).
pub(crate) fn loggable(tool: &str) -> &str {
    if !tool.is_empty() && tool.len() <= 64 && tool.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        tool
    } else {
        "(invalid name)"
    }
}

/// Why a tool definition is unusable.
#[derive(Debug, thiserror::Error)]
#[error("tool {tool}: {problem}")]
pub struct InvalidTool {
    pub tool: String,
    pub problem: String,
}

impl ToolSpec {
    pub fn compile(&self, origin: &str) -> Result<Tool, InvalidTool> {
        let invalid = |problem: String| InvalidTool {
            tool: self.name.clone(),
            problem,
        };
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self.name.starts_with(|c: char| c.is_ascii_lowercase())
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !name_ok {
            return Err(invalid("name must match ^[a-z][a-z0-9_]{0,63}$".into()));
        }
        if self.provider.is_empty() || self.description.trim().is_empty() {
            return Err(invalid("provider and description are required".into()));
        }
        if self.input_schema.get("type").and_then(Value::as_str) != Some("object") {
            return Err(invalid(
                "inputSchema must be a JSON Schema with `type: object`".into(),
            ));
        }
        if self.input_schema.pointer("/properties/account").is_some() {
            return Err(invalid(
                "`account` is reserved: it picks the account when several can run a tool".into(),
            ));
        }
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&self.input_schema)
            .map_err(|e| invalid(format!("inputSchema: {e}")))?;
        let request = self
            .request
            .compile()
            .map_err(|e| invalid(format!("request: {e}")))?;
        let for_each = match &self.for_each {
            None => None,
            Some(f) => Some(ForEach {
                items: Expr::parse(strip_braces(&f.items))
                    .map_err(|e| invalid(format!("forEach.items: {e}")))?,
                limit: f.limit.unwrap_or(MAX_FOR_EACH).min(MAX_FOR_EACH),
                request: f
                    .request
                    .compile()
                    .map_err(|e| invalid(format!("forEach.request: {e}")))?,
            }),
        };
        let result = self
            .result
            .as_ref()
            .map(Template::parse)
            .transpose()
            .map_err(|e| invalid(format!("result: {e}")))?;
        Ok(Tool {
            name: self.name.clone(),
            provider: self.provider.clone(),
            description: self.description.trim().to_owned(),
            scopes: self.scopes.clone(),
            input_schema: self.input_schema.clone(),
            endpoints: std::iter::once(&self.request)
                .chain(self.for_each.as_ref().map(|f| &f.request))
                .map(|r| format!("{} {}", r.method.to_ascii_uppercase(), r.path))
                .collect(),
            origin: origin.to_owned(),
            validator,
            request,
            for_each,
            result,
        })
    }
}

impl RequestSpec {
    fn compile(&self) -> Result<RequestTemplate, String> {
        let method =
            Method::from_bytes(self.method.to_ascii_uppercase().as_bytes()).map_err(|e| e.to_string())?;
        if !self.path.starts_with('/') {
            return Err("path must start with `/`".into());
        }
        let path = Template::parse(&Value::String(self.path.clone())).map_err(|e| format!("path: {e}"))?;
        let pairs = |map: &BTreeMap<String, Value>, what: &str| {
            map.iter()
                .map(|(k, v)| {
                    Ok((
                        k.clone(),
                        Template::parse(v).map_err(|e| format!("{what}.{k}: {e}"))?,
                    ))
                })
                .collect::<Result<Vec<_>, String>>()
        };
        let query = pairs(&self.query, "query")?;
        let mut headers = Vec::new();
        for (k, v) in &self.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("header {k}: {e}"))?;
            // Another Host than the URL's could reach another site behind the same front end.
            if name == reqwest::header::HOST {
                return Err("header Host cannot be set".into());
            }
            let t = Template::parse(&Value::String(v.clone())).map_err(|e| format!("header {k}: {e}"))?;
            headers.push((name, t));
        }
        let body = match (&self.body, &self.form) {
            (Some(_), Some(_)) => return Err("`body` and `form` exclude each other".into()),
            (Some(b), None) => BodyTemplate::Json(Template::parse(b).map_err(|e| format!("body: {e}"))?),
            (None, Some(f)) => BodyTemplate::Form(pairs(f, "form")?),
            (None, None) => BodyTemplate::Empty,
        };
        Ok(RequestTemplate {
            method,
            path,
            query,
            headers,
            body,
        })
    }
}

impl ProviderSpec {
    /// Header names and values parse; the base URL, if any, is https (or http on loopback).
    pub fn check(&self, name: &str) -> Result<(), String> {
        for (k, v) in &self.headers {
            HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("provider {name}: header {k}: {e}"))?;
            HeaderValue::from_str(v).map_err(|e| format!("provider {name}: header {k}: {e}"))?;
        }
        if let Some(b) = &self.base_url {
            checked_base(b).map_err(|e| format!("provider {name}: baseUrl: {e}"))?;
        }
        Ok(())
    }
}

impl Tool {
    /// The input with top-level schema defaults filled in, checked against the schema.
    pub fn prepare_input(&self, input: Value) -> Result<Value, InvalidInput> {
        let mut input = match input {
            Value::Null => Value::Object(Default::default()),
            Value::Object(o) => Value::Object(o),
            _ => return Err(InvalidInput(vec!["input: must be a JSON object".into()])),
        };
        if let (Some(obj), Some(Value::Object(props))) =
            (input.as_object_mut(), self.input_schema.get("properties"))
        {
            for (k, schema) in props {
                if let Some(d) = schema.get("default")
                    && !obj.contains_key(k)
                {
                    obj.insert(k.clone(), d.clone());
                }
            }
        }
        let errors: Vec<String> = self
            .validator
            .iter_errors(&input)
            .take(5)
            .map(|e| {
                let path = e
                    .instance_path()
                    .as_str()
                    .trim_start_matches('/')
                    .replace('/', ".");
                let at = if path.is_empty() { "input".to_owned() } else { path };
                // Messages quote the offending value: keep them short.
                let mut msg = e.to_string();
                if msg.chars().count() > 200 {
                    msg = msg.chars().take(200).collect::<String>() + "…";
                }
                format!("{at}: {msg}")
            })
            .collect();
        if errors.is_empty() {
            Ok(input)
        } else {
            Err(InvalidInput(errors))
        }
    }
}
