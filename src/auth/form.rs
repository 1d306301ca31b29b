//! Hosted forms for `APIKey` and `BearerToken` Connections: which fields they collect, how the
//! submitted values are checked, and how they become the credential agents send.

use std::collections::BTreeMap;

use regex::Regex;

use crate::api::{AuthType, Connection, CredentialForm, FormField, HeaderSettings, VerifyRequest};
use crate::auth::catalog;
use crate::auth::error::ConfigError;
use crate::store::TokenSet;

/// Longest value a form field accepts.
pub const MAX_VALUE_LEN: usize = 4096;

/// A Connection's effective form: explicit settings over the catalog preset over the defaults.
#[derive(Debug, Clone)]
pub struct Form {
    pub fields: Vec<Field>,
    pub instructions: Option<String>,
    pub header_name: String,
    pub prefix: String,
    /// The field whose value goes into the header.
    pub header_field: String,
    pub verify: Option<VerifyRequest>,
}

/// One resolved input.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub label: String,
    pub help: Option<String>,
    pub secret: bool,
    pub optional: bool,
    pattern: Option<Regex>,
}

impl Form {
    /// The form of a Connection of type `APIKey` or `BearerToken`.
    pub fn of(conn: &Connection) -> Result<Form, ConfigError> {
        let spec = &conn.spec;
        let explicit = match spec.auth_type {
            AuthType::APIKey => spec.api_key.as_ref(),
            AuthType::BearerToken => spec.bearer_token.as_ref(),
            other => return Err(ConfigError(format!("authType {other:?} has no hosted form"))),
        };
        let preset = catalog::resolve(spec.provider.as_deref())?;
        let preset = preset.and_then(|p| p.form.as_ref());
        Self::resolve(spec.auth_type, explicit, preset)
    }

    fn resolve(
        kind: AuthType,
        explicit: Option<&CredentialForm>,
        preset: Option<&CredentialForm>,
    ) -> Result<Form, ConfigError> {
        let bearer = kind == AuthType::BearerToken;
        let pick = |f: fn(&CredentialForm) -> bool| explicit.filter(|e| f(e)).or(preset.filter(|p| f(p)));
        let fields: Vec<FormField> = match pick(|f| !f.fields.is_empty()) {
            Some(f) => f.fields.clone(),
            None => vec![FormField {
                name: if bearer { "token" } else { "api_key" }.to_owned(),
                label: Some(if bearer { "Token" } else { "API key" }.to_owned()),
                ..Default::default()
            }],
        };
        let header: HeaderSettings = {
            let e = explicit.and_then(|f| f.header.clone()).unwrap_or_default();
            let p = preset.and_then(|f| f.header.clone()).unwrap_or_default();
            HeaderSettings {
                name: e.name.or(p.name),
                prefix: e.prefix.or(p.prefix),
                field: e.field.or(p.field),
            }
        };
        let fields = fields
            .into_iter()
            .map(|f| {
                let pattern = match &f.pattern {
                    Some(p) => Some(Regex::new(&format!("^(?:{p})$")).map_err(|e| {
                        ConfigError(format!(
                            "field {}: pattern is not a valid regular expression: {e}",
                            f.name
                        ))
                    })?),
                    None => None,
                };
                Ok(Field {
                    label: f.label.clone().unwrap_or_else(|| f.name.clone()),
                    help: f.help.clone(),
                    secret: f.secret.unwrap_or(true),
                    optional: f.optional.unwrap_or(false),
                    name: f.name,
                    pattern,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let header_field = match header.field {
            Some(name) => fields
                .iter()
                .find(|f| f.name == name)
                .map(|f| f.name.clone())
                .ok_or_else(|| {
                    ConfigError(format!("header.field {name:?} is not one of the form's fields"))
                })?,
            None => fields
                .iter()
                .find(|f| f.secret)
                .or(fields.first())
                .map(|f| f.name.clone())
                .ok_or_else(|| ConfigError("the form has no fields".into()))?,
        };
        if fields.iter().any(|f| f.name == header_field && f.optional) {
            return Err(ConfigError(format!(
                "header field {header_field:?} cannot be optional"
            )));
        }
        Ok(Form {
            instructions: pick(|f| f.instructions.is_some()).and_then(|f| f.instructions.clone()),
            verify: pick(|f| f.verify.is_some()).and_then(|f| f.verify.clone()),
            header_name: header.name.unwrap_or_else(|| "Authorization".into()),
            prefix: header
                .prefix
                .unwrap_or_else(|| if bearer { "Bearer ".into() } else { String::new() }),
            header_field,
            fields,
        })
    }

    /// Checks submitted values; on failure, a message per field name (values are never echoed).
    pub fn validate(
        &self,
        values: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, BTreeMap<String, String>> {
        let mut clean = BTreeMap::new();
        let mut errors = BTreeMap::new();
        for f in &self.fields {
            let v = values.get(&f.name).map(|v| v.trim()).unwrap_or_default();
            let problem = if v.is_empty() {
                (!f.optional).then(|| format!("{} is required.", f.label))
            } else if v.len() > MAX_VALUE_LEN {
                Some(format!(
                    "{} is too long (at most {MAX_VALUE_LEN} characters).",
                    f.label
                ))
            } else if v.chars().any(char::is_control) {
                Some(format!("{} contains control characters.", f.label))
            } else if f.pattern.as_ref().is_some_and(|p| !p.is_match(v)) {
                Some(format!("{} does not have the expected format.", f.label))
            } else if self.in_verify_host(&f.name) && !host_labels(v) {
                Some(format!(
                    "{} may contain only letters, digits, '-' and '.'.",
                    f.label
                ))
            } else {
                None
            };
            match problem {
                Some(m) => {
                    errors.insert(f.name.clone(), m);
                }
                None if !v.is_empty() => {
                    clean.insert(f.name.clone(), v.to_owned());
                }
                None => {}
            }
        }
        if errors.is_empty() { Ok(clean) } else { Err(errors) }
    }

    /// The credential for validated values.
    pub fn credential(&self, values: BTreeMap<String, String>, now: jiff::Timestamp) -> TokenSet {
        let key = values.get(&self.header_field).cloned().unwrap_or_default();
        let authorization = format!("{}{key}", self.prefix);
        let bearer = self.header_name.eq_ignore_ascii_case("authorization") && self.prefix == "Bearer ";
        TokenSet {
            access_token: if bearer { key } else { String::new() },
            token_type: if bearer { "Bearer".into() } else { String::new() },
            obtained_at: now,
            header_name: (!self.header_name.eq_ignore_ascii_case("authorization"))
                .then(|| self.header_name.clone()),
            header_value: Some(authorization),
            fields: values,
            ..Default::default()
        }
    }

    /// The verification URL with `{{field}}` placeholders filled from non-secret values, RFC 3986
    /// percent-encoded (a value can add no path segment, query or host; values placed in the host
    /// were checked to be host labels by [`Form::validate`]).
    pub fn verify_url(&self, values: &BTreeMap<String, String>) -> Option<String> {
        let verify = self.verify.as_ref()?;
        let value_of = |name: &str| {
            self.fields
                .iter()
                .any(|f| !f.secret && f.name == name)
                .then(|| values.get(name).map(String::as_str).unwrap_or_default())
        };
        Some(crate::auth::template::fill(
            &verify.url,
            value_of,
            crate::percent::encode,
        ))
    }

    /// Whether `{{name}}` sits in the host of the verification URL.
    fn in_verify_host(&self, name: &str) -> bool {
        let Some(verify) = &self.verify else {
            return false;
        };
        let after_scheme = verify
            .url
            .split_once("://")
            .map_or(verify.url.as_str(), |(_, r)| r);
        let authority = after_scheme.split(['/', '?', '#']).next().unwrap_or_default();
        authority.contains(&placeholder(name))
    }
}

fn placeholder(name: &str) -> String {
    format!("{{{{{name}}}}}")
}

/// Dot-separated DNS labels: letters, digits and `-`, 1 to 63 each.
fn host_labels(v: &str) -> bool {
    v.split('.')
        .all(|l| !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn form(kind: AuthType, explicit: Option<CredentialForm>) -> Form {
        Form::resolve(kind, explicit.as_ref(), None).unwrap()
    }

    #[test]
    fn defaults_per_type() {
        let api = form(AuthType::APIKey, None);
        assert_eq!((api.header_field.as_str(), api.prefix.as_str()), ("api_key", ""));
        let bearer = form(AuthType::BearerToken, None);
        let t = bearer.credential(
            BTreeMap::from([("token".into(), "abc".into())]),
            jiff::Timestamp::UNIX_EPOCH,
        );
        assert_eq!(t.authorization(), "Bearer abc");
        assert_eq!((t.access_token.as_str(), t.header_name.as_deref()), ("abc", None));
    }

    #[test]
    fn validation_reports_per_field_and_never_echoes_values() {
        let f = form(
            AuthType::APIKey,
            Some(CredentialForm {
                fields: vec![
                    FormField {
                        name: "api_key".into(),
                        pattern: Some("sk_[a-z]+".into()),
                        ..Default::default()
                    },
                    FormField {
                        name: "subdomain".into(),
                        secret: Some(false),
                        ..Default::default()
                    },
                    FormField {
                        name: "note".into(),
                        optional: Some(true),
                        ..Default::default()
                    },
                ],
                header: Some(HeaderSettings {
                    name: Some("X-Api-Key".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        );
        let bad = BTreeMap::from([("api_key".into(), "sk_WRONG-secret".into())]);
        let errors = f.validate(&bad).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.values().all(|m| !m.contains("WRONG")));
        let good = BTreeMap::from([
            ("api_key".into(), " sk_ok ".into()),
            ("subdomain".into(), "acme".into()),
        ]);
        let values = f.validate(&good).unwrap();
        let t = f.credential(values, jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(
            (t.authorization().as_str(), t.header_name.as_deref()),
            ("sk_ok", Some("X-Api-Key"))
        );
        assert_eq!(t.fields.get("subdomain").map(String::as_str), Some("acme"));
    }

    #[test]
    fn bad_patterns_and_unknown_header_fields_are_config_errors() {
        let bad = CredentialForm {
            fields: vec![FormField {
                name: "k".into(),
                pattern: Some("(".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(Form::resolve(AuthType::APIKey, Some(&bad), None).is_err());
        let unknown = CredentialForm {
            header: Some(HeaderSettings {
                field: Some("nope".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(Form::resolve(AuthType::APIKey, Some(&unknown), None).is_err());
    }

    #[test]
    fn verify_url_fills_only_public_fields() {
        let f = form(
            AuthType::APIKey,
            Some(CredentialForm {
                fields: vec![
                    FormField {
                        name: "api_key".into(),
                        ..Default::default()
                    },
                    FormField {
                        name: "subdomain".into(),
                        secret: Some(false),
                        ..Default::default()
                    },
                ],
                verify: Some(VerifyRequest {
                    url: "https://{{subdomain}}.example.com/me?k={{api_key}}".into(),
                    method: None,
                }),
                ..Default::default()
            }),
        );
        let bad = BTreeMap::from([
            ("api_key".into(), "s3cret".into()),
            ("subdomain".into(), "a b".into()),
        ]);
        let errors = f.validate(&bad).unwrap_err();
        assert!(errors["subdomain"].contains("only letters"), "{errors:?}");
        for odd in ["a/b", "a@b", "a:1", "-.", "a..b"] {
            let v = BTreeMap::from([("api_key".into(), "k".into()), ("subdomain".into(), odd.into())]);
            assert!(f.validate(&v).is_err(), "{odd} accepted in the host");
        }
        let good = BTreeMap::from([
            ("api_key".into(), "s3cret".into()),
            ("subdomain".into(), "acme-eu.prod".into()),
        ]);
        let clean = f.validate(&good).unwrap();
        assert_eq!(
            f.verify_url(&clean).unwrap(),
            "https://acme-eu.prod.example.com/me?k={{api_key}}",
            "secret fields are never filled in"
        );
    }
}
