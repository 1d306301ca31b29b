//! JSON templates: the request parts and result projections of a tool, written as YAML in the
//! catalog and compiled once when the catalog loads.
//!
//! - A string that is exactly `"{{ expr }}"` becomes the expression's value with its JSON type
//!   (a number stays a number, a list a list).
//! - A string with text around `{{ }}` becomes text; when any expression in it is missing, the whole
//!   string is missing.
//! - Objects and lists keep their shape; members and elements that are missing are left out.
//! - `{$for: expr, $do: template}` maps a list: `$do` is rendered once per element, which it sees as
//!   `it`.
//! - An object with `$if: expr` is missing unless the expression is present (and not `false`).
//! - Everything else is a literal.
//!
//! Modules, each using only those before it: `error` and `text` (leaves), `mime` (the `rfc2822`
//! filter), `expr` (expressions and filters), then this file (templates).

mod error;
mod expr;
mod mime;
mod text;

use serde_json::{Map, Value};

pub use error::TemplateError;
pub use expr::{Expr, Scope};
pub use text::{as_text, strip_braces};

#[derive(Debug, Clone, PartialEq)]
pub enum Template {
    Literal(Value),
    Expr(Expr),
    Text(Vec<Part>),
    Object(Vec<(String, Template)>),
    Array(Vec<Template>),
    For { source: Expr, body: Box<Template> },
    If { cond: Expr, body: Box<Template> },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Lit(String),
    Expr(Expr),
}

impl Template {
    pub fn parse(v: &Value) -> Result<Template, TemplateError> {
        Ok(match v {
            Value::String(s) => parse_string(s)?,
            Value::Array(a) => Template::Array(a.iter().map(Template::parse).collect::<Result<_, _>>()?),
            Value::Object(o) if o.contains_key("$for") => parse_for(o)?,
            Value::Object(o) if o.contains_key("$if") => {
                let mut rest = o.clone();
                let cond = rest.remove("$if").unwrap_or_default();
                let cond = cond
                    .as_str()
                    .ok_or_else(|| TemplateError::Syntax("`$if` must be an expression string".into()))?;
                Template::If {
                    cond: Expr::parse(strip_braces(cond))?,
                    body: Box::new(Template::parse(&Value::Object(rest))?),
                }
            }
            Value::Object(o) => {
                let mut members = Vec::with_capacity(o.len());
                for (k, v) in o {
                    if k.starts_with('$') {
                        return Err(TemplateError::Syntax(format!("unknown directive `{k}`")));
                    }
                    members.push((k.clone(), Template::parse(v)?));
                }
                Template::Object(members)
            }
            other => Template::Literal(other.clone()),
        })
    }

    /// The rendered value, or `None` when missing.
    pub fn render(&self, scope: Scope<'_>) -> Result<Option<Value>, TemplateError> {
        Ok(match self {
            Template::Literal(v) => Some(v.clone()),
            Template::Expr(e) => e.eval(scope)?,
            Template::Text(parts) => {
                self::render_text(parts, scope, &|s| Ok(s.to_owned()))?.map(Value::String)
            }
            Template::Object(members) => {
                let mut out = Map::new();
                for (k, t) in members {
                    if let Some(v) = t.render(scope)? {
                        out.insert(k.clone(), v);
                    }
                }
                Some(Value::Object(out))
            }
            Template::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for t in items {
                    out.extend(t.render(scope)?);
                }
                Some(Value::Array(out))
            }
            Template::For { source, body } => match source.eval(scope)? {
                Some(Value::Array(items)) => {
                    let mut out = Vec::with_capacity(items.len());
                    for item in &items {
                        out.extend(body.render(scope.with_it(item))?);
                    }
                    Some(Value::Array(out))
                }
                _ => None,
            },
            Template::If { cond, body } => match cond.eval(scope)? {
                None | Some(Value::Bool(false)) => None,
                Some(_) => body.render(scope)?,
            },
        })
    }

    /// Renders a string template, passing every value that came from an expression through `encode`
    /// (URL path segments). `None` when missing.
    pub fn render_string(
        &self,
        scope: Scope<'_>,
        encode: &dyn Fn(&str) -> Result<String, TemplateError>,
    ) -> Result<Option<String>, TemplateError> {
        match self {
            Template::Literal(Value::String(s)) => Ok(Some(s.clone())),
            Template::Expr(e) => e.eval(scope)?.map(|v| encode(&as_text(&v))).transpose(),
            Template::Text(parts) => render_text(parts, scope, encode),
            _ => Err(TemplateError::Syntax("expected a string template".into())),
        }
    }

    /// Whether this template renders a single string (or a value inserted into one).
    pub fn is_string(&self) -> bool {
        matches!(
            self,
            Template::Literal(Value::String(_)) | Template::Expr(_) | Template::Text(_)
        )
    }
}

fn render_text(
    parts: &[Part],
    scope: Scope<'_>,
    encode: &dyn Fn(&str) -> Result<String, TemplateError>,
) -> Result<Option<String>, TemplateError> {
    let mut out = String::new();
    for p in parts {
        match p {
            Part::Lit(s) => out.push_str(s),
            Part::Expr(e) => match e.eval(scope)? {
                Some(v) => out.push_str(&encode(&as_text(&v))?),
                None => return Ok(None),
            },
        }
    }
    Ok(Some(out))
}

fn parse_string(s: &str) -> Result<Template, TemplateError> {
    let mut parts = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| TemplateError::Syntax(format!("`{s}`: `{{{{` without `}}}}`")))?;
        if open > 0 {
            parts.push(Part::Lit(rest[..open].to_owned()));
        }
        parts.push(Part::Expr(Expr::parse(after[..close].trim())?));
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Lit(rest.to_owned()));
    }
    Ok(match parts.as_slice() {
        [] => Template::Literal(Value::String(String::new())),
        [Part::Lit(l)] => Template::Literal(Value::String(l.clone())),
        [Part::Expr(e)] => Template::Expr(e.clone()),
        _ => Template::Text(parts),
    })
}

fn parse_for(o: &Map<String, Value>) -> Result<Template, TemplateError> {
    if o.keys().any(|k| k != "$for" && k != "$do") {
        return Err(TemplateError::Syntax("`$for` takes only `$do` beside it".into()));
    }
    let source = o
        .get("$for")
        .and_then(Value::as_str)
        .ok_or_else(|| TemplateError::Syntax("`$for` must be an expression string".into()))?;
    let source = strip_braces(source);
    let body = o
        .get("$do")
        .ok_or_else(|| TemplateError::Syntax("`$for` needs `$do`".into()))?;
    Ok(Template::For {
        source: Expr::parse(source)?,
        body: Box::new(Template::parse(body)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(t: Value, root: Value) -> Option<Value> {
        Template::parse(&t).unwrap().render(Scope::new(&root)).unwrap()
    }

    #[test]
    fn typed_values_text_and_missing_members() {
        let root = json!({"input": {"n": 5, "q": "x", "list": [1, 2]}});
        assert_eq!(render(json!("{{input.n}}"), root.clone()), Some(json!(5)));
        assert_eq!(
            render(json!("n={{ input.n }}!"), root.clone()),
            Some(json!("n=5!"))
        );
        assert_eq!(render(json!("a {{input.none}}"), root.clone()), None);
        assert_eq!(
            render(
                json!({"q": "{{input.q}}", "gone": "{{input.none}}", "l": ["{{input.none}}", 1]}),
                root.clone()
            ),
            Some(json!({"q": "x", "l": [1]}))
        );
        assert_eq!(
            render(
                json!({"$for": "input.list", "$do": {"v": "{{it}}"}}),
                root.clone()
            ),
            Some(json!([{"v": 1}, {"v": 2}]))
        );
        assert_eq!(
            render(json!({"$for": "{{input.none}}", "$do": 1}), root.clone()),
            None
        );
        assert_eq!(render(json!({"$if": "input.none", "a": 1}), root.clone()), None);
        assert_eq!(
            render(json!({"$if": "{{input.q}}", "a": 1}), root),
            Some(json!({"a": 1}))
        );
    }

    #[test]
    fn malformed_templates_are_refused() {
        for bad in [
            json!("{{ input.q"),
            json!({"$for": "x"}),
            json!({"$each": 1}),
            json!({"$for": "x", "$do": 1, "y": 2}),
        ] {
            assert!(Template::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn string_rendering_encodes_expression_values_only() {
        let t = Template::parse(&json!("/repos/{{input.o}}/issues")).unwrap();
        let root = json!({"input": {"o": "a/b"}});
        let enc = |s: &str| Ok(s.replace('/', "%2F"));
        assert_eq!(
            t.render_string(Scope::new(&root), &enc).unwrap().as_deref(),
            Some("/repos/a%2Fb/issues")
        );
    }
}
