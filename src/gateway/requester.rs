//! Who is asking: the facts every hosted page shows, so that a tenant's Connection cannot dress a
//! gateway page up as another app's.
//!
//! Guarantees: a page for a Connection names, in visible text, the host the credential goes to or
//! is checked at (from the Connection's endpoints or the form's verify URL, else the preset's API
//! base), the Connection's namespace and name. A catalog preset's display name is the page's title
//! only when the Connection overrides neither the preset's endpoints nor its form; otherwise the
//! title is neutral and names the host. Every value is HTML-escaped (by `maud`).

use kube::ResourceExt;
use maud::{Markup, html};

use crate::api::{AuthType, Connection};
use crate::auth::catalog::{self, Preset};
use crate::auth::form::Form;

/// The facts a hosted page shows about the Connection behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    /// The preset's display name, when the Connection is the preset as shipped.
    pub preset_name: Option<String>,
    /// `host[:port]` of the app (placeholders shown as `*`), when the Connection says.
    pub host: Option<String>,
    pub namespace: String,
    pub connection: String,
    /// The account's `spec.identifier`, on pages that act for one account.
    pub account: Option<String>,
}

impl Requester {
    /// The facts of `conn`.
    pub fn of(conn: &Connection) -> Requester {
        let preset = conn.spec.provider.as_deref().and_then(catalog::lookup);
        Requester {
            preset_name: preset
                .filter(|_| !overridden(conn))
                .map(|p| p.display_name.clone()),
            host: app_url(conn, preset).as_deref().and_then(host_of),
            namespace: conn.namespace().unwrap_or_default(),
            connection: conn.name_any(),
            account: None,
        }
    }

    /// These facts for the account named `identifier` (the page names it, so a user who was sent
    /// someone else's link sees whose account it is).
    pub fn for_account(mut self, identifier: &str) -> Requester {
        self.account = Some(identifier.to_owned());
        self
    }

    /// The app as a page title names it: the preset's name, else its host, else neutral.
    pub fn app(&self) -> String {
        match (&self.preset_name, &self.host) {
            (Some(name), _) => name.clone(),
            (None, Some(host)) => host.clone(),
            (None, None) => "an app".to_owned(),
        }
    }

    /// The title of the hosted form.
    pub fn connect_title(&self) -> String {
        match (&self.preset_name, &self.host) {
            (Some(name), _) => format!("Connect {name}"),
            (None, Some(host)) => format!("Connect to {host}"),
            (None, None) => "Connect an app".to_owned(),
        }
    }

    /// The facts as HTML (escaped), shown under every page's title.
    pub fn html(&self) -> Markup {
        html! {
            dl class="requester" id="requester" {
                dt { "App" }
                dd id="requester-host" {
                    @match &self.host {
                        Some(h) => (h),
                        None => "not stated by the Connection",
                    }
                }
                @if let Some(account) = &self.account {
                    dt { "Account" }
                    dd id="requester-account" { (account) }
                }
                dt { "Requested by" }
                dd id="requester-connection" {
                    "Connection " (self.connection) " in namespace " (self.namespace)
                }
            }
        }
    }
}

/// Whether the Connection replaces the preset's endpoints or form (then the preset's name and
/// looks are not borrowed).
fn overridden(conn: &Connection) -> bool {
    let s = &conn.spec;
    let endpoints = s.oauth2.as_ref().is_some_and(|o| {
        o.authorization_url.is_some() || o.token_url.is_some() || o.revocation_url.is_some()
    });
    endpoints || s.api_key.is_some() || s.bearer_token.is_some() || s.custom_jwt.is_some()
}

/// The URL that best names where the credential goes.
fn app_url(conn: &Connection, preset: Option<&Preset>) -> Option<String> {
    let s = &conn.spec;
    let from_spec = match s.auth_type {
        AuthType::OAuth2 => s
            .oauth2
            .as_ref()
            .and_then(|o| o.authorization_url.clone())
            .or_else(|| preset.and_then(|p| p.authorization_url.clone())),
        AuthType::APIKey | AuthType::BearerToken => Form::of(conn).ok().and_then(|f| f.verify.map(|v| v.url)),
        _ => None,
    };
    from_spec.or_else(|| preset.and_then(|p| p.api_base_url.clone()))
}

/// `host[:port]` of `url`, with `{{field}}` and `{subdomain}` placeholders shown as `*`; IDNs in
/// their ASCII (punycode) form, which cannot pass for another name.
fn host_of(url: &str) -> Option<String> {
    let mut text = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(start) = rest.find('{') {
        text.push_str(&rest[..start]);
        let after = &rest[start..];
        let end = after.find('}')?;
        let close = if after[end..].starts_with("}}") {
            end + 2
        } else {
            end + 1
        };
        text.push('*');
        rest = &after[close..];
    }
    text.push_str(rest);
    let parsed = url::Url::parse(&text).ok()?;
    parsed.host_str()?;
    Some(host_port(&parsed))
}

/// `host[:port]` of `url` (the port when it is not the scheme's default).
pub fn host_port(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(spec: serde_json::Value) -> Connection {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "agentauth.dev/v1alpha1", "kind": "Connection",
            "metadata": {"name": "crm", "namespace": "team-a"}, "spec": spec
        }))
        .unwrap()
    }

    #[test]
    fn hosts_come_from_the_connection_and_placeholders_show_as_stars() {
        assert_eq!(
            host_of("https://{{subdomain}}.crm.example/api/me").as_deref(),
            Some("*.crm.example")
        );
        assert_eq!(
            host_of("https://{subdomain}.zendesk.com/api/v2").as_deref(),
            Some("*.zendesk.com")
        );
        assert_eq!(host_of("http://127.0.0.1:9/me").as_deref(), Some("127.0.0.1:9"));
        assert_eq!(
            host_of("https://bücher.example/x").as_deref(),
            Some("xn--bcher-kva.example")
        );
        assert_eq!(host_of("not a url"), None);
        let form = conn(
            serde_json::json!({"authType": "APIKey", "apiKey": {"verify": {"url": "https://api.crm.example/me"}}}),
        );
        let r = Requester::of(&form);
        assert_eq!(r.host.as_deref(), Some("api.crm.example"));
        assert_eq!(r.connect_title(), "Connect to api.crm.example");
        assert_eq!((r.namespace.as_str(), r.connection.as_str()), ("team-a", "crm"));
        let bare = Requester::of(&conn(serde_json::json!({"authType": "APIKey"})));
        assert_eq!(
            (bare.host.clone(), bare.connect_title()),
            (None, "Connect an app".to_owned())
        );
    }

    #[test]
    fn a_preset_lends_its_name_only_when_not_overridden() {
        let github = |oauth2: serde_json::Value| {
            Requester::of(&conn(
                serde_json::json!({"authType": "OAuth2", "provider": "github", "oauth2": oauth2}),
            ))
        };
        let plain = github(serde_json::json!({"clientId": "x"}));
        assert_eq!(plain.preset_name.as_deref(), Some("GitHub"));
        assert_eq!(plain.host.as_deref(), Some("github.com"));
        let moved = github(
            serde_json::json!({"clientId": "x", "authorizationUrl": "https://login.evil.example/auth"}),
        );
        assert_eq!(moved.preset_name, None);
        assert_eq!(moved.app(), "login.evil.example");
    }

    #[test]
    fn the_facts_are_escaped() {
        let r = Requester {
            preset_name: None,
            host: Some("<b>".into()),
            namespace: "a&b".into(),
            connection: "\"x\"".into(),
            account: Some("<i>".into()),
        };
        let html = r.html().into_string();
        assert!(html.contains("&lt;b&gt;") && html.contains("a&amp;b") && html.contains("&quot;x&quot;"));
        assert!(!html.contains("<b>") && html.contains("&lt;i&gt;"));
    }
}
