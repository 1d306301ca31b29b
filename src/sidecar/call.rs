//! Running a catalog tool: pick the account, check the input, build the provider request from the
//! templates, send it with the current credential, interpret the answer (including Slack-style
//! errors in 200 answers), and project the compact result.

use futures::StreamExt as _;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use url::Url;

use super::error::{ApiError, InvalidInput};
use super::scrub;
use super::selection::Selection;
use super::state::Sidecar;
use super::target::{self, Target};
use super::template::{Scope, Template, TemplateError, as_text};
use super::tools::{BodyTemplate, ProviderSpec, RequestTemplate, Tool};
use super::upstream::Answer;

/// Largest provider answer a tool reads.
const RESPONSE_LIMIT: usize = 5 * 1024 * 1024;
/// Follow-up requests (`forEach`) in flight at once.
const CONCURRENCY: usize = 4;

/// Runs `tool_name` with `input` as the account `selection` names (or the only mounted account
/// that can run it).
pub async fn run(
    sc: &Sidecar,
    tool_name: &str,
    selection: &Selection,
    input: Value,
) -> Result<Value, ApiError> {
    let catalog = sc.catalog.get();
    let tool = catalog
        .tools
        .get(tool_name)
        .cloned()
        .ok_or_else(|| ApiError::UnknownTool(tool_name.to_owned()))?;
    let account = target::for_tool(&sc.accounts, sc.broker.as_ref(), &tool, selection).await?;
    let input = tool.prepare_input(input)?;
    let provider = catalog.providers.get(&tool.provider).cloned().unwrap_or_default();
    let call = Call {
        sc,
        tool: &tool,
        account: &account,
        provider: &provider,
    };
    let mut root = json!({"input": input, "account": account.name()});
    let first = call.execute(&tool.request, Scope::new(&root)).await?;
    root["response"] = first;
    if let Some(each) = &tool.for_each {
        let items = match each.items.eval(Scope::new(&root)).map_err(refused)? {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        };
        // Futures made up front (not in a stream closure): keeps the handler future `Send`.
        let pending: Vec<_> = items
            .iter()
            .take(each.limit)
            .map(|item| call.execute(&each.request, Scope::new(&root).with_it(item)))
            .collect();
        let answers: Vec<Result<Value, ApiError>> = futures::stream::iter(pending)
            .buffered(CONCURRENCY)
            .collect()
            .await;
        let mut responses = Vec::with_capacity(answers.len());
        for a in answers {
            match a {
                Ok(v) => responses.push(v),
                // Gone between the list and the fetch (a deleted mail): leave it out.
                Err(ApiError::Provider { status: 404, .. }) => {}
                Err(e) => return Err(e),
            }
        }
        root["responses"] = Value::Array(responses);
    }
    match &tool.result {
        Some(t) => Ok(t
            .render(Scope::new(&root))
            .map_err(refused)?
            .unwrap_or(Value::Null)),
        None => Ok(root["response"].take()),
    }
}

fn refused(e: TemplateError) -> ApiError {
    match e {
        TemplateError::Refused(m) => ApiError::InvalidInput(InvalidInput(vec![m])),
        TemplateError::Syntax(m) => ApiError::ToolDefinition(m),
    }
}

struct Call<'a> {
    sc: &'a Sidecar,
    tool: &'a Tool,
    account: &'a Target<'a>,
    provider: &'a ProviderSpec,
}

enum Body {
    Empty,
    Json(Value),
    Form(Vec<(String, String)>),
}

impl Call<'_> {
    async fn execute(&self, req: &RequestTemplate, scope: Scope<'_>) -> Result<Value, ApiError> {
        let path = req
            .path
            .render_string(scope, &encode_segment)
            .map_err(refused)?
            .ok_or_else(|| {
                ApiError::InvalidInput(InvalidInput(vec![
                    "a value the request path needs is missing".into(),
                ]))
            })?;
        let query = pairs(&req.query, scope)?;
        let mut headers = HeaderMap::new();
        for (k, v) in &self.provider.headers {
            if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
                headers.insert(k, v);
            }
        }
        for (k, t) in &req.headers {
            if let Some(v) = t.render_string(scope, &|s| Ok(s.to_owned())).map_err(refused)? {
                let v = HeaderValue::from_str(&v).map_err(|_| {
                    ApiError::InvalidInput(InvalidInput(vec![format!("header {k}: unusable value")]))
                })?;
                headers.insert(k.clone(), v);
            }
        }
        let body = match &req.body {
            BodyTemplate::Empty => Body::Empty,
            BodyTemplate::Json(t) => t.render(scope).map_err(refused)?.map_or(Body::Empty, Body::Json),
            BodyTemplate::Form(f) => Body::Form(pairs(f, scope)?),
        };
        let provider = self.provider;
        let answer = self
            .sc
            .upstream
            .send(
                self.account,
                RESPONSE_LIMIT,
                &|status, body| auth_failed(provider, status, body),
                &|cred| {
                    let base = self.sc.routes.base_url(
                        self.account.name(),
                        Some(&self.tool.provider),
                        cred,
                        provider.base_url.as_deref(),
                    )?;
                    let url = join(&base, &path, &query)?;
                    let b = self
                        .sc
                        .upstream
                        .http()
                        .request(req.method.clone(), url)
                        .headers(headers.clone());
                    Ok(match &body {
                        Body::Empty => b,
                        Body::Json(v) => b.json(v),
                        Body::Form(f) => b.form(f),
                    })
                },
            )
            .await?;
        interpret(answer, provider)
    }
}

/// Query or form pairs: lists repeat the name, missing values are left out.
fn pairs(templates: &[(String, Template)], scope: Scope<'_>) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for (k, t) in templates {
        match t.render(scope).map_err(refused)? {
            None => {}
            Some(Value::Array(a)) => out.extend(a.iter().map(|v| (k.clone(), as_text(v)))),
            Some(v) => out.push((k.clone(), as_text(&v))),
        }
    }
    Ok(out)
}

/// One path segment: everything but unreserved characters percent-encoded; `.` and `..` refused.
fn encode_segment(s: &str) -> Result<String, TemplateError> {
    if s.is_empty() || s == "." || s == ".." {
        return Err(TemplateError::Refused(format!("`{s}` cannot be a path segment")));
    }
    Ok(crate::percent::encode(s))
}

/// `base` + `path` + `query`, staying below `base`.
pub fn join(base: &Url, path: &str, query: &[(String, String)]) -> Result<Url, ApiError> {
    let prefix = base.path().trim_end_matches('/');
    let mut url = base.clone();
    url.set_path(&format!("{prefix}{path}"));
    if url.origin() != base.origin() || !url.path().starts_with(prefix) {
        return Err(ApiError::BadPath("the path leaves the provider's API".into()));
    }
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(url)
}

/// The provider rejected the credential: HTTP 401, or a Slack-style error code mapped to 401.
pub fn auth_failed(provider: &ProviderSpec, status: StatusCode, body: &[u8]) -> bool {
    if status == StatusCode::UNAUTHORIZED {
        return true;
    }
    if status.is_success()
        && provider.ok_field.is_some()
        && let Ok(v) = serde_json::from_slice::<Value>(body)
        && let Some(code) = embedded_error(provider, &v)
    {
        return provider.error_status.get(&code) == Some(&401);
    }
    false
}

/// The error code of a 2xx answer whose `okField` is `false`.
fn embedded_error(provider: &ProviderSpec, v: &Value) -> Option<String> {
    let ok = provider.ok_field.as_deref()?;
    if v.get(ok) != Some(&Value::Bool(false)) {
        return None;
    }
    let field = provider.error_field.as_deref().unwrap_or("error");
    Some(v.get(field).and_then(Value::as_str).unwrap_or("error").to_owned())
}

/// The answer's JSON (text for other bodies, `null` when empty), or the provider's error.
fn interpret(answer: Answer, provider: &ProviderSpec) -> Result<Value, ApiError> {
    let parsed = if answer.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&answer.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&answer.body).into_owned()))
    };
    let retry_after = crate::http::retry_after_value(&answer.headers).map(str::to_owned);
    if !answer.status.is_success() {
        return Err(provider_error(
            answer.status.as_u16(),
            parsed,
            answer.credential.secrets(),
            retry_after,
        ));
    }
    if let Some(code) = embedded_error(provider, &parsed) {
        let status = provider.error_status.get(&code).copied().unwrap_or(400);
        return Err(provider_error(
            status,
            parsed,
            answer.credential.secrets(),
            retry_after,
        ));
    }
    Ok(parsed)
}

/// The provider's message and body, cleaned of anything secret.
pub fn provider_error(
    status: u16,
    mut body: Value,
    secrets: &[String],
    retry_after: Option<String>,
) -> ApiError {
    let message = [
        "/error/message",
        "/message",
        "/error_description",
        "/error",
        "/errors/0/message",
        "/detail",
    ]
    .iter()
    .find_map(|p| body.pointer(p).and_then(Value::as_str).filter(|s| !s.is_empty()))
    .map(str::to_owned)
    .unwrap_or_else(|| {
        StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("error")
            .to_owned()
    });
    let mut message = scrub::text(&message, secrets);
    if message.chars().count() > 500 {
        message = message.chars().take(500).collect::<String>() + "…";
    }
    scrub::json(&mut body, secrets);
    if let Value::String(s) = &body
        && s.chars().count() > 2000
    {
        body = Value::String(s.chars().take(2000).collect::<String>() + "…");
    }
    let details = (!body.is_null() && body.to_string().len() <= 8192).then_some(body);
    ApiError::Provider {
        status,
        message,
        details,
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_below_the_base() {
        let base = Url::parse("https://api.example.com/v1").unwrap();
        let u = join(&base, "/a%2Fb/c", &[("q".into(), "x y".into())]).unwrap();
        assert_eq!(u.as_str(), "https://api.example.com/v1/a%2Fb/c?q=x+y");
        assert!(encode_segment("..").is_err());
        assert_eq!(encode_segment("a/b?c#d").unwrap(), "a%2Fb%3Fc%23d");
        assert_eq!(encode_segment("%2e%2e").unwrap(), "%252e%252e");
    }

    #[test]
    fn slack_style_errors_and_messages() {
        let slack = ProviderSpec {
            ok_field: Some("ok".into()),
            error_status: [("invalid_auth".to_owned(), 401)].into(),
            ..Default::default()
        };
        assert!(auth_failed(
            &slack,
            StatusCode::OK,
            br#"{"ok":false,"error":"invalid_auth"}"#
        ));
        assert!(!auth_failed(
            &slack,
            StatusCode::OK,
            br#"{"ok":false,"error":"channel_not_found"}"#
        ));
        let e = provider_error(
            403,
            json!({"error": {"message": "Bearer abcdefghijk rejected", "code": 403}}),
            &[],
            None,
        );
        assert!(
            matches!(&e, ApiError::Provider { message, .. } if message == "[redacted] rejected"),
            "{e:?}"
        );
    }
}
