//! The catalog the sidecar serves: the built-in `tools.yaml` plus every `*.yaml`, `*.yml` and
//! `*.json` file of the `--tools-dir` directories (a mounted ConfigMap). A user's tool with the name
//! of a built-in one replaces it; a user's provider entry replaces the built-in entry of that name,
//! except that it can never move a built-in provider (its `baseUrl`) or set its credential headers:
//! a file that tries is refused whole, like a file that does not parse (see [`super::trust`]), so
//! none of its tools runs against a base it did not expect.
//!
//! The directories are checked on every use (one `readlink` of the kubelet's `..data` link, or the
//! file list with sizes and times): an edited ConfigMap takes effect without a restart. A broken
//! edit is logged and the previous catalog stays; at startup it is an error.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use super::tools::{InvalidTool, ProviderSpec, Tool, ToolsFile};

const BUILT_IN: &str = include_str!("tools.yaml");

/// Tools by name and provider settings by provider name.
#[derive(Debug, Default)]
pub struct Catalog {
    pub tools: BTreeMap<String, Arc<Tool>>,
    pub providers: BTreeMap<String, ProviderSpec>,
    /// The provider names of the built-in `tools.yaml` (user files may not move them).
    built_in_providers: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{file}: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}: does not parse: {source}")]
    Parse {
        file: String,
        source: Box<serde_saphyr::Error>,
    },
    #[error("{file}: {source}")]
    Tool { file: String, source: InvalidTool },
    #[error("{file}: {problem}")]
    Invalid { file: String, problem: String },
    /// The file tries to change where a built-in provider's tokens go, or how they are sent.
    #[error("{file}: refused: {problem}")]
    Refused { file: String, problem: String },
}

impl Catalog {
    /// The built-in catalog alone.
    pub fn built_in() -> Result<Catalog, LoadError> {
        let mut c = Catalog::default();
        c.add("built-in", BUILT_IN, false)?;
        c.built_in_providers = c.providers.keys().cloned().collect();
        Ok(c)
    }

    /// The built-in catalog with every file of `dirs` on top; any file that fails to load or is
    /// refused by the trust rules fails the whole load (the caller keeps what it had).
    pub fn load(dirs: &[PathBuf]) -> Result<Catalog, LoadError> {
        let mut c = Catalog::built_in()?;
        let mut user_tools = BTreeMap::new();
        for file in files(dirs)? {
            let name = file.display().to_string();
            let text = std::fs::read_to_string(&file).map_err(|source| LoadError::Read {
                file: name.clone(),
                source,
            })?;
            for tool in c.add(&name, &text, true)? {
                if let Some(before) = user_tools.insert(tool.clone(), name.clone()) {
                    return Err(LoadError::Invalid {
                        file: name,
                        problem: format!("tool {tool} is also defined in {before}"),
                    });
                }
            }
        }
        Ok(c)
    }

    /// Adds one file's providers and tools; returns the tool names. A `user` file may replace
    /// tools, and is held to the trust rules for providers.
    fn add(&mut self, file: &str, text: &str, user: bool) -> Result<Vec<String>, LoadError> {
        let parsed: ToolsFile = serde_saphyr::from_str(text).map_err(|source| LoadError::Parse {
            file: file.to_owned(),
            source: Box::new(source),
        })?;
        let invalid = |problem: String| LoadError::Invalid {
            file: file.to_owned(),
            problem,
        };
        for (name, spec) in parsed.providers {
            spec.check(&name).map_err(invalid)?;
            if user {
                let built_in = super::trust::built_in_provider(&name, &self.built_in_providers);
                if let Some(problem) = super::trust::user_provider_problem(
                    &name,
                    spec.base_url.as_deref(),
                    spec.headers.keys(),
                    built_in,
                ) {
                    return Err(LoadError::Refused {
                        file: file.to_owned(),
                        problem,
                    });
                }
            }
            self.providers.insert(name, spec);
        }
        let mut names = Vec::new();
        for spec in parsed.tools {
            let tool = spec.compile(file).map_err(|source| LoadError::Tool {
                file: file.to_owned(),
                source,
            })?;
            if !user && self.tools.contains_key(&tool.name) {
                return Err(invalid(format!("tool {} is defined twice", tool.name)));
            }
            names.push(tool.name.clone());
            self.tools.insert(tool.name.clone(), Arc::new(tool));
        }
        Ok(names)
    }
}

/// Catalog files of `dirs`, sorted by name; hidden entries (the kubelet's `..data`) are skipped.
fn files(dirs: &[PathBuf]) -> Result<Vec<PathBuf>, LoadError> {
    let mut out = Vec::new();
    for dir in dirs {
        let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Read {
            file: dir.display().to_string(),
            source,
        })?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or(".");
                !name.starts_with('.')
                    && [".yaml", ".yml", ".json"].iter().any(|x| name.ends_with(x))
                    && p.is_file()
            })
            .collect();
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

/// What identifies the content of the directories: the `..data` target, or names, sizes, times.
fn stamp(dirs: &[PathBuf]) -> Vec<String> {
    let mut out = Vec::new();
    for dir in dirs {
        if let Ok(target) = std::fs::read_link(dir.join("..data")) {
            out.push(format!("{}:{}", dir.display(), target.display()));
            continue;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            out.push(format!("{}:unreadable", dir.display()));
            continue;
        };
        let mut listed: Vec<String> = entries
            .filter_map(Result::ok)
            .map(|e| {
                let meta = e.metadata().ok();
                format!(
                    "{}:{:?}:{:?}",
                    e.path().display(),
                    meta.as_ref().map(std::fs::Metadata::len),
                    meta.and_then(|m| m.modified().ok())
                )
            })
            .collect();
        listed.sort();
        out.extend(listed);
    }
    out
}

/// The catalog, reloaded when the tools directories change.
pub struct Source {
    dirs: Vec<PathBuf>,
    current: RwLock<(Vec<String>, Arc<Catalog>)>,
}

impl Source {
    /// Loads the catalog; a broken file is an error here.
    pub fn new(dirs: Vec<PathBuf>) -> Result<Source, LoadError> {
        let stamp = stamp(&dirs);
        let catalog = Catalog::load(&dirs)?;
        Ok(Source {
            dirs,
            current: RwLock::new((stamp, Arc::new(catalog))),
        })
    }

    /// The current catalog (reloaded first if the directories changed).
    pub fn get(&self) -> Arc<Catalog> {
        let now = stamp(&self.dirs);
        if let Ok(cur) = self.current.read()
            && cur.0 == now
        {
            return cur.1.clone();
        }
        let Ok(mut cur) = self.current.write() else {
            return Arc::new(Catalog::default());
        };
        if cur.0 != now {
            match Catalog::load(&self.dirs) {
                Ok(c) => {
                    tracing::info!(tools = c.tools.len(), "tool catalog reloaded");
                    *cur = (now, Arc::new(c));
                }
                Err(e) => {
                    tracing::error!(error = %e, "tool catalog not reloaded; keeping the previous one");
                    cur.0 = now;
                }
            }
        }
        cur.1.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_catalog_loads_and_has_the_promised_tools() {
        let c = Catalog::built_in().unwrap();
        for name in [
            "gmail_fetch_mails",
            "gmail_send_mail",
            "google_calendar_list_events",
            "google_calendar_create_event",
            "google_drive_search",
            "slack_send_message",
            "slack_list_channels",
            "notion_search",
            "notion_create_page",
            "hubspot_list_contacts",
            "hubspot_create_contact",
            "github_list_issues",
            "github_create_issue",
        ] {
            assert!(c.tools.contains_key(name), "{name} missing");
        }
        // Every tool's provider is one the operator's catalog knows (so it has an API base).
        for t in c.tools.values() {
            let base = crate::auth::catalog::lookup(&t.provider).and_then(|p| p.api_base_url.clone());
            assert!(
                base.is_some() || c.providers.get(&t.provider).is_some_and(|p| p.base_url.is_some()),
                "{}",
                t.name
            );
        }
    }

    #[test]
    fn user_files_add_and_replace_tools_and_broken_files_are_errors() {
        let dir = std::env::temp_dir().join(format!("sidecar-loader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tool = |name: &str, provider: &str| {
            format!(
                "tools:\n  - name: {name}\n    provider: {provider}\n    description: d\n    inputSchema: {{type: object}}\n    request: {{method: GET, path: /x}}\n"
            )
        };
        std::fs::write(dir.join("a.yaml"), tool("acme_ping", "acme")).unwrap();
        std::fs::write(dir.join("b.yml"), tool("github_list_issues", "github")).unwrap();
        std::fs::write(dir.join("ignored.txt"), "not: [yaml").unwrap();
        let c = Catalog::load(std::slice::from_ref(&dir)).unwrap();
        assert!(c.tools.contains_key("acme_ping"));
        assert!(c.tools["github_list_issues"].origin.ends_with("b.yml"));
        std::fs::write(dir.join("c.yaml"), tool("acme_ping", "acme")).unwrap();
        assert!(
            Catalog::load(std::slice::from_ref(&dir))
                .unwrap_err()
                .to_string()
                .contains("also defined")
        );
        std::fs::write(dir.join("c.yaml"), "tools: [{name: Bad}]").unwrap();
        assert!(Catalog::load(std::slice::from_ref(&dir)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_that_moves_a_built_in_provider_is_refused_whole() {
        let dir = std::env::temp_dir().join(format!("sidecar-loader-trust-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let tool = "tools:\n  - name: acme_ping\n    provider: acme\n    description: d\n    inputSchema: {type: object}\n    request: {method: GET, path: /x}\n";
        let load = || Catalog::load(std::slice::from_ref(&dir));
        // A new provider with its own base, and headers for a built-in one: fine.
        std::fs::write(
            dir.join("ok.yaml"),
            format!("providers:\n  acme: {{baseUrl: https://api.acme.example}}\n  github: {{headers: {{X-Extra: '1'}}}}\n{tool}"),
        )
        .unwrap();
        let c = load().unwrap();
        assert!(c.tools.contains_key("acme_ping"));
        assert_eq!(c.providers["github"].headers["X-Extra"], "1");
        // Built-in providers of both catalogs (tools.yaml's github, the operator's salesforce).
        for (provider, entry) in [
            ("github", "{baseUrl: 'https://collector.example'}"),
            ("salesforce", "{baseUrl: 'https://collector.example'}"),
            ("google", "{headers: {Authorization: 'Bearer x'}}"),
            ("acme", "{headers: {Host: 'other.example'}}"),
        ] {
            std::fs::write(
                dir.join("ok.yaml"),
                format!("providers:\n  {provider}: {entry}\n{tool}"),
            )
            .unwrap();
            let err = load().unwrap_err();
            assert!(matches!(err, LoadError::Refused { .. }), "{provider}: {err}");
            assert!(err.to_string().contains(provider), "{err}");
        }
        // A tool's own Host header is refused too.
        std::fs::write(
            dir.join("ok.yaml"),
            tool.replace("path: /x}", "path: /x, headers: {Host: other.example}}"),
        )
        .unwrap();
        assert!(load().unwrap_err().to_string().contains("Host"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
