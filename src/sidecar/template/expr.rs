//! Expressions inside `{{ }}` in tool templates.
//!
//! ```text
//! expr     := pipeline ( "??" pipeline )*       first alternative that is present wins
//! pipeline := head ( "|" filter )*
//! head     := path | JSON literal                 path: input.max_results, it.payload.headers, response.0.id
//! filter   := name [ "(" JSON values, comma-separated ")" ]
//! ```
//!
//! A path that does not resolve, or resolves to `null`, is *missing*; filters pass a missing value
//! through, and a template member whose value is missing is left out. Filters are lenient about
//! shapes (a provider that changes a field's type leaves that field out instead of failing the call);
//! only `rfc2822` refuses input, since a bad mail must never be sent.

use serde_json::Value;

use super::error::TemplateError;
use super::mime;
use super::text::as_text;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    alternatives: Vec<Pipeline>,
}

#[derive(Debug, Clone, PartialEq)]
struct Pipeline {
    head: Head,
    filters: Vec<Filter>,
}

#[derive(Debug, Clone, PartialEq)]
enum Head {
    Path(Vec<String>),
    Literal(Value),
}

/// The filters a template may use. `docs/sidecar.md` documents each.
#[derive(Debug, Clone, PartialEq)]
enum Filter {
    Base64,
    Base64Url,
    Find(String, Value),
    First,
    Get(Vec<String>),
    Header(String),
    Join(String),
    Lines,
    NonEmpty,
    Omit(Vec<String>),
    Pluck(Vec<String>),
    Rfc2822,
    Split(String),
    Str,
    Truncate(usize),
    Values,
}

/// Where paths are looked up: the root object (`input`, `response`, ...) and the loop element `it`.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    pub root: &'a Value,
    pub it: Option<&'a Value>,
}

impl<'a> Scope<'a> {
    pub fn new(root: &'a Value) -> Self {
        Scope { root, it: None }
    }

    pub fn with_it(self, it: &'a Value) -> Self {
        Scope { it: Some(it), ..self }
    }
}

impl Expr {
    pub fn parse(src: &str) -> Result<Expr, TemplateError> {
        let alternatives = split_top(src, "??")
            .into_iter()
            .map(parse_pipeline)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Expr { alternatives })
    }

    /// The value, or `None` when missing.
    pub fn eval(&self, scope: Scope<'_>) -> Result<Option<Value>, TemplateError> {
        for p in &self.alternatives {
            let mut value = match &p.head {
                Head::Literal(v) => present(v.clone()),
                Head::Path(path) => lookup(scope, path).cloned().and_then(present),
            };
            for f in &p.filters {
                value = match value {
                    Some(v) => apply(f, v)?,
                    None => None,
                };
            }
            if value.is_some() {
                return Ok(value);
            }
        }
        Ok(None)
    }
}

fn present(v: Value) -> Option<Value> {
    (!v.is_null()).then_some(v)
}

fn lookup<'a>(scope: Scope<'a>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let start = if first == "it" {
        scope.it?
    } else {
        scope.root.get(first.as_str())?
    };
    walk(start, rest)
}

fn walk<'a>(mut v: &'a Value, path: &[String]) -> Option<&'a Value> {
    for seg in path {
        v = match v {
            Value::Object(m) => m.get(seg.as_str())?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// Splits at `sep` outside JSON strings and brackets.
fn split_top<'s>(src: &'s str, sep: &str) -> Vec<&'s str> {
    let mut parts = Vec::new();
    let (mut depth, mut in_str, mut escaped, mut start) = (0i32, false, false, 0usize);
    let bytes = src.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if in_str {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_str = false;
            }
        } else if c == b'"' {
            in_str = true;
        } else if matches!(c, b'(' | b'[' | b'{') {
            depth += 1;
        } else if matches!(c, b')' | b']' | b'}') {
            depth -= 1;
        } else if depth == 0 && src[i..].starts_with(sep) {
            parts.push(&src[start..i]);
            i += sep.len();
            start = i;
            continue;
        }
        i += 1;
    }
    parts.push(&src[start..]);
    parts
}

fn parse_pipeline(src: &str) -> Result<Pipeline, TemplateError> {
    let mut parts = split_top(src, "|").into_iter().map(str::trim);
    let head = parts.next().unwrap_or_default();
    let head = parse_head(head)?;
    let filters = parts.map(parse_filter).collect::<Result<Vec<_>, _>>()?;
    Ok(Pipeline { head, filters })
}

fn parse_head(src: &str) -> Result<Head, TemplateError> {
    let bad = || TemplateError::Syntax(format!("`{src}` is neither a path nor a JSON value"));
    let first = src.chars().next().ok_or_else(bad)?;
    if first == '"'
        || first == '['
        || first == '{'
        || first == '-'
        || first.is_ascii_digit()
        || src == "true"
        || src == "false"
    {
        return serde_json::from_str(src).map(Head::Literal).map_err(|_| bad());
    }
    Ok(Head::Path(parse_path(src).ok_or_else(bad)?))
}

fn parse_path(src: &str) -> Option<Vec<String>> {
    let segs: Vec<String> = src.split('.').map(str::to_owned).collect();
    segs.iter()
        .all(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
        .then_some(segs)
}

fn parse_filter(src: &str) -> Result<Filter, TemplateError> {
    let (name, args) = match src.split_once('(') {
        Some((name, rest)) => {
            let inner = rest
                .trim_end()
                .strip_suffix(')')
                .ok_or_else(|| TemplateError::Syntax(format!("filter `{src}`: missing `)`")))?;
            let args: Vec<Value> = serde_json::from_str(&format!("[{inner}]"))
                .map_err(|e| TemplateError::Syntax(format!("filter `{src}`: arguments: {e}")))?;
            (name.trim(), args)
        }
        None => (src.trim(), Vec::new()),
    };
    let wrong = || TemplateError::Syntax(format!("filter `{src}`: wrong arguments"));
    let string = |i: usize| {
        args.get(i)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(wrong)
    };
    let path = |i: usize| string(i).and_then(|p| parse_path(&p).ok_or_else(wrong));
    let arity = |n: usize| if args.len() == n { Ok(()) } else { Err(wrong()) };
    let filter = match name {
        "base64" => arity(0).map(|()| Filter::Base64),
        "base64url" => arity(0).map(|()| Filter::Base64Url),
        "find" => arity(2).and_then(|()| Ok(Filter::Find(string(0)?, args[1].clone()))),
        "first" => arity(0).map(|()| Filter::First),
        "get" => arity(1).and_then(|()| path(0).map(Filter::Get)),
        "header" => arity(1).and_then(|()| string(0).map(Filter::Header)),
        "join" => arity(1).and_then(|()| string(0).map(Filter::Join)),
        "lines" => arity(0).map(|()| Filter::Lines),
        "nonempty" => arity(0).map(|()| Filter::NonEmpty),
        "omit" => (0..args.len())
            .map(string)
            .collect::<Result<_, _>>()
            .map(Filter::Omit),
        "pluck" => arity(1).and_then(|()| path(0).map(Filter::Pluck)),
        "rfc2822" => arity(0).map(|()| Filter::Rfc2822),
        "split" => arity(1).and_then(|()| string(0).map(Filter::Split)),
        "string" => arity(0).map(|()| Filter::Str),
        "truncate" => arity(1).and_then(|()| {
            let n = args[0]
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(wrong)?;
            Ok(Filter::Truncate(n))
        }),
        "values" => arity(0).map(|()| Filter::Values),
        other => Err(TemplateError::Syntax(format!("unknown filter `{other}`"))),
    }?;
    Ok(filter)
}

fn apply(f: &Filter, v: Value) -> Result<Option<Value>, TemplateError> {
    use base64::Engine as _;
    let out = match (f, v) {
        (Filter::Base64, v) => Some(
            base64::engine::general_purpose::STANDARD
                .encode(as_text(&v))
                .into(),
        ),
        (Filter::Base64Url, v) => Some(
            base64::engine::general_purpose::URL_SAFE
                .encode(as_text(&v))
                .into(),
        ),
        (Filter::Find(key, want), Value::Array(a)) => a.into_iter().find(|e| e.get(key) == Some(want)),
        (Filter::First, Value::Array(a)) => a.into_iter().next(),
        (Filter::Get(path), v) => walk(&v, path).cloned(),
        (Filter::Header(name), Value::Array(a)) => a
            .into_iter()
            .find(|h| {
                h.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
            .and_then(|h| h.get("value").cloned()),
        (Filter::Join(sep), Value::Array(a)) => {
            Some(a.iter().map(as_text).collect::<Vec<_>>().join(sep).into())
        }
        (Filter::Lines, Value::String(s)) => Some(
            s.lines()
                .map(str::trim_end)
                .filter(|l| !l.trim().is_empty())
                .map(|l| Value::String(l.to_owned()))
                .collect(),
        ),
        (Filter::NonEmpty, v) => match &v {
            Value::String(s) if s.is_empty() => None,
            Value::Array(a) if a.is_empty() => None,
            Value::Object(o) if o.is_empty() => None,
            _ => Some(v),
        },
        (Filter::Omit(keys), Value::Object(mut o)) => {
            o.retain(|k, _| !keys.contains(k));
            Some(Value::Object(o))
        }
        (Filter::Pluck(path), Value::Array(a)) => Some(
            a.iter()
                .filter_map(|e| walk(e, path).cloned().and_then(present))
                .collect(),
        ),
        (Filter::Rfc2822, v) => Some(mime::rfc2822(&v)?.into()),
        (Filter::Split(sep), Value::String(s)) => Some(
            s.split(sep.as_str())
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| Value::String(p.to_owned()))
                .collect(),
        ),
        (Filter::Str, v) => Some(as_text(&v).into()),
        (Filter::Truncate(n), Value::String(s)) => Some(if s.chars().count() > *n {
            let mut t: String = s.chars().take(*n).collect();
            t.push('…');
            t.into()
        } else {
            s.into()
        }),
        (Filter::Values, Value::Object(o)) => Some(o.into_iter().map(|(_, v)| v).collect()),
        // Any other shape: the value is missing.
        _ => None,
    };
    Ok(out.and_then(present))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(src: &str, root: &Value) -> Option<Value> {
        Expr::parse(src).unwrap().eval(Scope::new(root)).unwrap()
    }

    #[test]
    fn paths_literals_fallbacks_and_filters() {
        let root = json!({
            "input": {"q": "is:unread", "n": 5, "tags": ["a", "b"], "empty": ""},
            "response": {"items": [{"id": 1, "name": "x"}, {"id": 2}], "headers": [{"name": "subject", "value": "Hi"}]}
        });
        assert_eq!(eval("input.q", &root), Some(json!("is:unread")));
        assert_eq!(eval("input.missing", &root), None);
        assert_eq!(
            eval("input.missing ?? \"primary\"", &root),
            Some(json!("primary"))
        );
        assert_eq!(eval("input.tags | join(\",\")", &root), Some(json!("a,b")));
        assert_eq!(eval("response.items.1.id", &root), Some(json!(2)));
        assert_eq!(
            eval("response.items | pluck(\"name\")", &root),
            Some(json!(["x"]))
        );
        assert_eq!(
            eval("response.items | find(\"id\", 2) | get(\"id\")", &root),
            Some(json!(2))
        );
        assert_eq!(
            eval("response.headers | header(\"Subject\")", &root),
            Some(json!("Hi"))
        );
        assert_eq!(eval("input.empty | nonempty ?? 7", &root), Some(json!(7)));
        assert_eq!(
            eval("\"a|b ?? c\" | split(\"|\")", &root),
            Some(json!(["a", "b ?? c"]))
        );
        assert_eq!(eval("input.q | truncate(3)", &root), Some(json!("is:…")));
        assert_eq!(eval("input.n | string", &root), Some(json!("5")));
        // A shape the filter does not expect is missing, not an error.
        assert_eq!(eval("input.q | join(\",\")", &root), None);
    }

    #[test]
    fn syntax_errors_are_caught_when_parsing() {
        for bad in [
            "",
            "input..q",
            "input.q | nosuch",
            "input.q | join",
            "input.q | join(1)",
            "\"unterminated",
        ] {
            assert!(Expr::parse(bad).is_err(), "{bad}");
        }
    }
}
