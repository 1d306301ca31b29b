//! `/v1/proxy/{account}/{path}`: any method, path, query and body, forwarded to the account's API
//! base with the credential's header set.
//!
//! `{account}` is a mounted account's name, or in broker mode any account name (`name`, or
//! `namespace%2Fname`), or `_`: then the `X-Agentauth-Connected-Account` header, or
//! `X-Agentauth-Connection` and `X-Agentauth-Identifier` (or the same query parameters) name it,
//! and those parameters are taken out of the forwarded query. `X-Agentauth-*` headers are never forwarded.
//!
//! The path stays below the base: `.`/`..` segments (also percent-encoded) and backslashes are
//! refused, and the final URL must have the base's origin and path prefix. The agent cannot choose
//! the auth header (its own `Authorization`, cookies and the credential's header are dropped) nor
//! the host. Bodies are capped both ways; `Set-Cookie` never comes back; error bodies are cleaned of
//! the credential.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use url::Url;

use super::error::ApiError;
use super::scrub;
use super::selection::{PARAMS, Selection};
use super::state::Sidecar;
use super::target;

/// The `{account}` segment that leaves the choice to headers or query parameters.
const BY_HEADERS: &str = "_";

/// Largest request body forwarded and largest answer passed back.
pub const BODY_LIMIT: usize = 10 * 1024 * 1024;

/// Request headers never forwarded (hop-by-hop, credentials, the proxy's own).
const DROP_REQUEST: [&str; 15] = [
    "host",
    "authorization",
    "proxy-authorization",
    "cookie",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "accept-encoding",
    "forwarded",
    "origin",
    "referer",
];

/// Response headers never passed back.
const DROP_RESPONSE: [&str; 8] = [
    "set-cookie",
    "set-cookie2",
    "authorization",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "trailer",
];

pub async fn handle(State(sc): State<Arc<Sidecar>>, req: Request) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let result = forward(&sc, req).await;
    let ms = started.elapsed().as_millis();
    match result {
        Ok((account, resp)) => {
            tracing::info!(%account, %method, status = resp.status().as_u16(), ms, "proxied");
            resp
        }
        Err(e) => {
            tracing::info!(%method, code = e.code(), status = e.status().as_u16(), ms, "proxy call failed");
            e.into_response()
        }
    }
}

/// Splits `/v1/proxy/{account}/{rest}` (raw, still percent-encoded) and checks the rest.
fn split_path(raw: &str) -> Result<(&str, &str), ApiError> {
    let rest = raw.strip_prefix("/v1/proxy/").unwrap_or_default();
    let (account, path) = rest.split_once('/').unwrap_or((rest, ""));
    for seg in path.split('/') {
        let decoded = seg.to_ascii_lowercase().replace("%2e", ".");
        if decoded == "." || decoded == ".." {
            return Err(ApiError::BadPath("`.` and `..` segments are not allowed".into()));
        }
        if seg.contains('\\') || seg.to_ascii_lowercase().contains("%5c") {
            return Err(ApiError::BadPath("backslashes are not allowed".into()));
        }
    }
    if path.starts_with('/') {
        return Err(ApiError::BadPath(
            "the path must be relative to the API base".into(),
        ));
    }
    Ok((account, path))
}

/// The target below `base`: its origin and path prefix are checked after parsing.
fn target(base: &Url, path: &str, query: Option<&str>) -> Result<Url, ApiError> {
    let prefix = base.path().trim_end_matches('/');
    let mut s = format!("{}{}/{}", base.origin().ascii_serialization(), prefix, path);
    if let Some(q) = query {
        s.push('?');
        s.push_str(q);
    }
    let url = Url::parse(&s).map_err(|_| ApiError::BadPath("not a valid URL path".into()))?;
    if url.origin() != base.origin() || !url.path().starts_with(prefix) {
        return Err(ApiError::BadPath("the path leaves the provider's API".into()));
    }
    Ok(url)
}

/// The account the request names, and the query to forward.
fn selection(
    segment: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<(Selection, Option<String>), ApiError> {
    let segment = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| ApiError::BadSelection("the account segment is not UTF-8".into()))?;
    if segment != BY_HEADERS {
        // The legacy `X-Agentauth-Account` (for tool calls) may be set on every request: ignored here.
        if PARAMS[1..].iter().any(|(_, h)| headers.contains_key(*h)) {
            return Err(ApiError::BadSelection(format!(
                "the path names the account: use `/v1/proxy/{BY_HEADERS}/...` with X-Agentauth-* headers"
            )));
        }
        return Ok((Selection::named(&segment)?, query.map(str::to_owned)));
    }
    let mut chosen = std::collections::BTreeMap::new();
    let mut kept = Vec::new();
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        match url::form_urlencoded::parse(pair.as_bytes()).next() {
            Some((k, v)) if PARAMS.iter().any(|(p, _)| *p == k) => {
                if chosen.insert(k.into_owned(), v.into_owned()).is_some() {
                    return Err(ApiError::BadSelection(
                        "a selection parameter is given twice".into(),
                    ));
                }
            }
            _ => kept.push(pair),
        }
    }
    let selection = Selection::from_request(&chosen, headers)?;
    if selection == Selection::Any {
        return Err(ApiError::BadSelection(format!(
            "`/v1/proxy/{BY_HEADERS}/...` needs X-Agentauth-Connected-Account, or X-Agentauth-Connection and X-Agentauth-Identifier"
        )));
    }
    Ok((selection, (!kept.is_empty()).then(|| kept.join("&"))))
}

async fn forward(sc: &Sidecar, req: Request) -> Result<(String, Response), ApiError> {
    let (parts, body) = req.into_parts();
    let (segment, path) = split_path(parts.uri.path())?;
    let (selection, query) = selection(segment, parts.uri.query(), &parts.headers)?;
    let account = target::resolve(&sc.accounts, sc.broker.as_ref(), &selection)
        .await?
        .ok_or_else(|| ApiError::UnknownAccount(segment.to_owned()))?;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|l| l > BODY_LIMIT as u64) {
        return Err(ApiError::BodyTooLarge(BODY_LIMIT));
    }
    let body = axum::body::to_bytes(body, BODY_LIMIT)
        .await
        .map_err(|_| ApiError::BodyTooLarge(BODY_LIMIT))?;
    let catalog = sc.catalog.get();
    let provider = account.provider();
    let spec = provider
        .as_deref()
        .and_then(|p| catalog.providers.get(p))
        .cloned()
        .unwrap_or_default();
    let mut headers = HeaderMap::new();
    for (k, v) in &parts.headers {
        let own = k.as_str().starts_with("x-forwarded-") || k.as_str().starts_with("x-agentauth-");
        if !DROP_REQUEST.contains(&k.as_str()) && !own {
            headers.append(k.clone(), v.clone());
        }
    }
    // Provider defaults (Notion-Version, GitHub's Accept) unless the agent chose its own.
    for (k, v) in &spec.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), v.parse()) {
            headers.entry(k).or_insert(v);
        }
    }
    let answer = sc
        .upstream
        .send(
            &account,
            BODY_LIMIT,
            &|status, b| super::call::auth_failed(&spec, status, b),
            &|cred| {
                let base = sc.routes.base_url(
                    account.name(),
                    provider.as_deref(),
                    cred,
                    spec.base_url.as_deref(),
                )?;
                let url = target(&base, path, query.as_deref())?;
                let mut h = headers.clone();
                // Whatever the agent sent under the credential's header name is replaced in `send`;
                // drop it here too so that no second value goes along.
                if let Ok(n) = HeaderName::from_bytes(cred.header_name.as_bytes()) {
                    h.remove(n);
                }
                Ok(sc
                    .upstream
                    .http()
                    .request(parts.method.clone(), url)
                    .headers(h)
                    .body(body.clone()))
            },
        )
        .await?;
    let mut resp_headers = HeaderMap::new();
    for (k, v) in &answer.headers {
        if !DROP_RESPONSE.contains(&k.as_str()) {
            resp_headers.append(k.clone(), v.clone());
        }
    }
    let body = if answer.status.is_client_error() || answer.status.is_server_error() {
        clean_error_body(&answer.body, &answer.headers, answer.credential.secrets())
    } else {
        answer.body.to_vec()
    };
    let status = StatusCode::from_u16(answer.status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut resp = (status, Body::from(body)).into_response();
    resp.headers_mut().extend(resp_headers);
    Ok((account.name().to_owned(), resp))
}

/// Error bodies in text or JSON lose every credential value; other bodies pass unchanged.
fn clean_error_body(body: &[u8], headers: &HeaderMap, secrets: &[String]) -> Vec<u8> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let texty =
        ctype.is_empty() || ctype.contains("json") || ctype.starts_with("text/") || ctype.contains("xml");
    match std::str::from_utf8(body) {
        Ok(s) if texty => scrub::text(s, secrets).into_bytes(),
        _ => body.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_escape_are_refused() {
        assert_eq!(
            split_path("/v1/proxy/acc/repos/o/r").unwrap(),
            ("acc", "repos/o/r")
        );
        assert_eq!(split_path("/v1/proxy/acc").unwrap(), ("acc", ""));
        for bad in [
            "/v1/proxy/acc/../x",
            "/v1/proxy/acc/a/%2e%2E/x",
            "/v1/proxy/acc/a/.%2E/x",
            "/v1/proxy/acc//evil.example.com/x",
            "/v1/proxy/acc/a\\b",
            "/v1/proxy/acc/a%5Cb",
        ] {
            assert!(split_path(bad).is_err(), "{bad}");
        }
        let base = Url::parse("https://api.example.com/v1").unwrap();
        assert_eq!(
            target(&base, "users/me", Some("a=1&b=2")).unwrap().as_str(),
            "https://api.example.com/v1/users/me?a=1&b=2"
        );
        assert_eq!(
            target(&base, "https://evil.example.com/x", None)
                .unwrap()
                .host_str(),
            Some("api.example.com")
        );
    }
}
