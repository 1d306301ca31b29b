//! `docs/tools.md`, generated from the built-in catalog. A unit test fails when the committed file
//! differs; `UPDATE_DOCS=1 cargo test --lib sidecar::docs` rewrites it.

use std::fmt::Write as _;

use serde_json::Value;

use super::template::as_text;
use super::tool_catalog::Catalog;
use super::tools::Tool;

/// The Markdown page listing every built-in tool with its input schema.
pub fn tools_markdown(catalog: &Catalog) -> String {
    let mut out = String::new();
    out.push_str("# Built-in tools\n\n");
    out.push_str(
        "<!-- Generated from src/sidecar/tools.yaml; do not edit. \
         Regenerate: UPDATE_DOCS=1 cargo test --lib sidecar::docs -->\n\n",
    );
    out.push_str(
        "The sidecar ([sidecar.md](sidecar.md)) offers these tools for the accounts mounted in the pod: a tool \
         appears in `GET /v1/tools` and MCP `tools/list` when an account of its provider is mounted. Inputs are \
         checked against the schema below (defaults are filled in first); results are compact JSON. Add your own \
         tools with a ConfigMap ([sidecar.md](sidecar.md#custom-tools)).\n\n",
    );
    out.push_str("| tool | provider | request | what it does |\n| --- | --- | --- | --- |\n");
    for t in catalog.tools.values() {
        let _ = writeln!(
            out,
            "| [`{}`](#{}) | `{}` | `{}` | {} |",
            t.name,
            t.name,
            t.provider,
            t.endpoints.first().map_or("", String::as_str),
            first_sentence(&t.description)
        );
    }
    for t in catalog.tools.values() {
        tool_section(&mut out, t);
    }
    out
}

fn first_sentence(s: &str) -> String {
    let line = s.lines().next().unwrap_or_default();
    match line.find(". ") {
        Some(i) => line[..=i].to_owned(),
        None => line.to_owned(),
    }
    .replace('|', "\\|")
}

fn tool_section(out: &mut String, t: &Tool) {
    let _ = writeln!(out, "\n## {}\n", t.name);
    let _ = writeln!(out, "{}\n", t.description);
    let _ = writeln!(out, "- provider: `{}`", t.provider);
    let endpoints: Vec<String> = t.endpoints.iter().map(|e| format!("`{e}`")).collect();
    let _ = writeln!(out, "- calls: {}", endpoints.join(", then for each item: "));
    if !t.scopes.is_empty() {
        let scopes: Vec<String> = t.scopes.iter().map(|s| format!("`{s}`")).collect();
        let _ = writeln!(out, "- scopes: {}", scopes.join(" or "));
    }
    out.push_str("\n| input | type | required | default | description |\n| --- | --- | --- | --- | --- |\n");
    let required: Vec<&str> = t
        .input_schema
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(Value::Object(props)) = t.input_schema.get("properties") {
        for (name, p) in props {
            let _ = writeln!(
                out,
                "| `{name}` | {} | {} | {} | {} |",
                type_of(p),
                if required.contains(&name.as_str()) {
                    "yes"
                } else {
                    ""
                },
                p.get("default").map(|d| format!("`{d}`")).unwrap_or_default(),
                p.get("description")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .replace('|', "\\|")
                    .replace('\n', " ")
            );
        }
    }
    let schema = serde_json::to_string_pretty(&t.input_schema).unwrap_or_default();
    let _ = writeln!(out, "\nInput schema:\n\n```json\n{schema}\n```");
}

fn type_of(p: &Value) -> String {
    let base = p.get("type").map(|t| match t {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    let mut s = base.unwrap_or_else(|| "any".into());
    if s == "array"
        && let Some(items) = p.get("items").and_then(|i| i.get("type")).and_then(Value::as_str)
    {
        s = format!("array of {items}");
    }
    if let Some(f) = p.get("format").and_then(Value::as_str) {
        s = format!("{s} ({f})");
    }
    if let Some(Value::Array(e)) = p.get("enum") {
        let vals: Vec<String> = e.iter().map(|v| format!("`{}`", as_text(v))).collect();
        s = format!("{s}: {}", vals.join(", "));
    }
    s.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_tools_md_is_up_to_date() {
        let catalog = Catalog::built_in().unwrap();
        let generated = tools_markdown(&catalog);
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/tools.md");
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/tools.md is stale: run `UPDATE_DOCS=1 cargo test --lib sidecar::docs` and commit the result"
        );
        for t in catalog.tools.values() {
            assert!(
                committed.contains(&format!("\n## {}\n", t.name)),
                "{} undocumented",
                t.name
            );
        }
    }
}
