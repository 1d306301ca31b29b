//! The hosted form's page: who is asking, the Connection's instructions, one input per field, and
//! the hidden signed `state` of the session.
//!
//! Guarantees: secret values are never written back into the page, not even after a failed
//! submission; every value is HTML-escaped (by `maud`).

use std::collections::BTreeMap;

use maud::{Markup, html};

use super::pages;
use super::requester::Requester;
use crate::auth::form::{Field, Form};

/// What the page shows besides the inputs.
#[derive(Default)]
pub struct Feedback {
    /// Previous non-secret values.
    pub values: BTreeMap<String, String>,
    /// Messages per field.
    pub errors: BTreeMap<String, String>,
    /// A message about the whole submission.
    pub general: Option<String>,
}

/// The whole form page for `who`, posting `state` back with the inputs.
pub fn page(who: &Requester, form: &Form, state: &str, feedback: &Feedback) -> Markup {
    let body = html! {
        (who.html())
        @if let Some(text) = &form.instructions {
            p { (text) }
        }
        @if let Some(general) = &feedback.general {
            p class="error" role="alert" id="form-error" { (general) }
        }
        form method="post" autocomplete="off" {
            input type="hidden" name="state" value=(state);
            @for f in &form.fields {
                (field(f, feedback))
            }
            button type="submit" { "Connect" }
        }
    };
    pages::layout(&who.connect_title(), body)
}

/// The label, input, help and error of one field.
fn field(f: &Field, feedback: &Feedback) -> Markup {
    let id = format!("f-{}", f.name);
    let help_id = format!("{id}-help");
    let error_id = format!("{id}-error");
    let error = feedback.errors.get(&f.name);
    let described: Vec<&str> = [
        f.help.as_ref().map(|_| help_id.as_str()),
        error.map(|_| error_id.as_str()),
    ]
    .into_iter()
    .flatten()
    .collect();
    // Secret values are never sent back to the browser, not even after a failed submission.
    let value = (!f.secret).then(|| feedback.values.get(&f.name)).flatten();
    html! {
        label for=(id) {
            (f.label)
            @if f.optional { " (optional)" }
        }
        input id=(id) name=(f.name) type=(if f.secret { "password" } else { "text" }) value=[value]
            required[!f.optional] aria-invalid=[error.map(|_| "true")]
            aria-describedby=[(!described.is_empty()).then(|| described.join(" "))]
            spellcheck="false" autocapitalize="off";
        @if let Some(help) = &f.help {
            p class="help" id=(help_id) { (help) }
        }
        @if let Some(e) = error {
            p class="error" id=(error_id) { (e) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Connection;

    fn crm() -> Connection {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "agentauth.dev/v1alpha1", "kind": "Connection",
            "metadata": {"name": "crm", "namespace": "team-a"},
            "spec": {"authType": "APIKey", "apiKey": {
                "instructions": "Find your key under Settings > API.",
                "fields": [
                    {"name": "api_key", "label": "API key", "pattern": "[a-z-]+"},
                    {"name": "subdomain", "label": "Subdomain", "secret": false, "help": "acme for acme.crm.example"},
                    {"name": "note", "label": "Note", "secret": false, "optional": true}
                ],
                "verify": {"url": "https://api.crm.example/me"}
            }}
        }))
        .unwrap()
    }

    #[test]
    fn fields_are_labelled_described_and_secrets_never_refilled() {
        let conn = crm();
        let form = Form::of(&conn).unwrap();
        let feedback = Feedback {
            values: [("api_key", "SECRET"), ("subdomain", "acme")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into(),
            errors: [("api_key".to_owned(), "bad <key>".to_owned())].into(),
            general: Some("Try again.".into()),
        };
        let html = page(&Requester::of(&conn), &form, "st.ate", &feedback).into_string();
        for part in [
            "<title>Connect to api.crm.example</title>",
            "<dd id=\"requester-host\">api.crm.example</dd>",
            "<p>Find your key under Settings &gt; API.</p>\
             <p class=\"error\" role=\"alert\" id=\"form-error\">Try again.</p>\
             <form method=\"post\" autocomplete=\"off\"><input type=\"hidden\" name=\"state\" value=\"st.ate\">",
            "<label for=\"f-api_key\">API key</label><input id=\"f-api_key\" name=\"api_key\" type=\"password\" \
             required aria-invalid=\"true\" aria-describedby=\"f-api_key-error\" spellcheck=\"false\" autocapitalize=\"off\">\
             <p class=\"error\" id=\"f-api_key-error\">bad &lt;key&gt;</p>",
            "<label for=\"f-subdomain\">Subdomain</label><input id=\"f-subdomain\" name=\"subdomain\" type=\"text\" \
             value=\"acme\" required aria-describedby=\"f-subdomain-help\" spellcheck=\"false\" autocapitalize=\"off\">\
             <p class=\"help\" id=\"f-subdomain-help\">acme for acme.crm.example</p>",
            "<label for=\"f-note\">Note (optional)</label><input id=\"f-note\" name=\"note\" type=\"text\" \
             spellcheck=\"false\" autocapitalize=\"off\"><button type=\"submit\">Connect</button></form>",
        ] {
            assert!(html.contains(part), "{part}\nin {html}");
        }
        assert!(!html.contains("SECRET"), "{html}");
    }
}
