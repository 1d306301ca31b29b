//! Reading one mounted agent Secret (the contract in `store::agent_secret`).
//!
//! The kubelet writes a Secret volume as `..<timestamp>/` holding the files, a `..data` link to it,
//! and one link per key (`authorization -> ..data/authorization`). An update writes a new timestamped
//! directory, points `..data_tmp` at it and renames that over `..data` (atomic), then deletes the old
//! directory. Reading through the resolved `..data` target gives one consistent version of every key;
//! if that version is deleted while being read, the read starts over. A plain directory of files
//! (no `..data`) works too. Files are read on every call: rotation needs no restart and no watch.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// One version of an account's credential.
#[derive(Clone)]
pub struct Credential {
    /// `Authorization` unless the Secret names another header.
    pub header_name: String,
    pub header_value: String,
    /// The Connection's catalog name (`google`, `slack`, ...), when it names one.
    pub provider: Option<String>,
    /// Provider metadata from `credentials.json` (Salesforce `instance_url`, Slack team, ...).
    pub metadata: Map<String, Value>,
    /// Top-level string fields of `credentials.json` (API-key form fields like `subdomain`).
    pub fields: BTreeMap<String, String>,
    /// Every value that must never leave the sidecar (for scrubbing provider errors).
    secrets: Vec<String>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("header_name", &self.header_name)
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read {key} of the mounted credential: {source}")]
    Io {
        key: &'static str,
        source: std::io::Error,
    },
    #[error("the mounted credential has no usable `authorization`")]
    Empty,
    #[error("credentials.json does not parse")]
    BadJson,
}

/// Keys of `credentials.json` that are not secret (everything else is scrubbed from errors).
const PUBLIC_KEYS: [&str; 5] = ["provider", "token_type", "expires_at", "scope", "header_name"];

impl Credential {
    /// Reads the current version of the credential mounted at `dir`.
    pub fn read(dir: &Path) -> Result<Credential, CredentialError> {
        let mut last = CredentialError::Empty;
        // A version deleted under our feet (a swap in between) is retried with the new one.
        for _ in 0..5 {
            let version = version_dir(dir);
            match Self::read_version(&version) {
                // Optional keys read as absent from a version deleted meanwhile: read again.
                Ok(_) if !version.is_dir() => {}
                Err(CredentialError::Io { source, key })
                    if source.kind() == ErrorKind::NotFound && dir.join("..data").exists() =>
                {
                    last = CredentialError::Io { key, source };
                }
                other => return other,
            }
        }
        Err(last)
    }

    fn read_version(base: &Path) -> Result<Credential, CredentialError> {
        let read = |key: &'static str| match std::fs::read_to_string(base.join(key)) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == ErrorKind::NotFound && key != "authorization" => Ok(None),
            Err(source) => Err(CredentialError::Io { key, source }),
        };
        let header_value = read("authorization")?.unwrap_or_default();
        let header_name = read("header_name")?;
        let doc: Map<String, Value> = match read("credentials.json")? {
            Some(text) => serde_json::from_str(&text).map_err(|_| CredentialError::BadJson)?,
            None => Map::new(),
        };
        let provider = read("provider")?;
        let access_token = read("access_token")?;
        Self::assemble(&header_value, header_name, doc, provider, access_token)
    }

    /// The credential of a `credentials.json` document (what the token broker answers in
    /// `credentials`): the same keys as the mounted files, so both read alike.
    pub fn from_document(doc: Map<String, Value>) -> Result<Credential, CredentialError> {
        let text = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_owned);
        let header_value = text("authorization").unwrap_or_default();
        let (header_name, access_token) = (text("header_name"), text("access_token"));
        Self::assemble(&header_value, header_name, doc, None, access_token)
    }

    fn assemble(
        header_value: &str,
        header_name: Option<String>,
        doc: Map<String, Value>,
        provider: Option<String>,
        access_token: Option<String>,
    ) -> Result<Credential, CredentialError> {
        let header_value = header_value.trim().to_owned();
        if header_value.is_empty() || header_value.contains(['\r', '\n']) {
            return Err(CredentialError::Empty);
        }
        let header_name = header_name
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "Authorization".to_owned());
        let provider = provider
            .map(|s| s.trim().to_owned())
            .or_else(|| doc.get("provider").and_then(Value::as_str).map(str::to_owned))
            .filter(|s| !s.is_empty());
        let metadata = match doc.get("metadata") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        let fields: BTreeMap<String, String> = doc
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect();
        let mut secrets = vec![header_value.clone()];
        // `Bearer abc`: the token alone too.
        if let Some((_, token)) = header_value.split_once(' ') {
            secrets.push(token.trim().to_owned());
        }
        secrets.extend(access_token.map(|s| s.trim().to_owned()));
        secrets.extend(
            fields
                .iter()
                .filter(|(k, _)| !PUBLIC_KEYS.contains(&k.as_str()))
                .map(|(_, v)| v.clone()),
        );
        // Short values (a subdomain) would redact ordinary words.
        secrets.retain(|s| s.len() >= 8);
        secrets.sort();
        secrets.dedup();
        Ok(Credential {
            header_name,
            header_value,
            provider,
            metadata,
            fields,
            secrets,
        })
    }

    /// Values to scrub from anything returned to the agent.
    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// Whether two reads saw the same credential.
    pub fn same_as(&self, other: &Credential) -> bool {
        self.header_name == other.header_name && self.header_value == other.header_value
    }
}

/// The directory holding the current version: the `..data` target, or `dir` itself.
fn version_dir(dir: &Path) -> PathBuf {
    match std::fs::read_link(dir.join("..data")) {
        Ok(target) => dir.join(target),
        Err(_) => dir.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a kubelet-style Secret volume (timestamped dir, `..data`, key links).
    pub fn write_volume(dir: &Path, version: &str, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir.join(version)).unwrap();
        for (k, v) in files {
            std::fs::write(dir.join(version).join(k), v).unwrap();
        }
        let tmp = dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(version, &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("..data")).unwrap();
        for (k, _) in files {
            let link = dir.join(k);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(format!("..data/{k}"), &link).unwrap();
            }
        }
    }

    #[test]
    fn reads_the_current_version_and_lists_its_secrets() {
        let dir = std::env::temp_dir().join(format!("sidecar-cred-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let json = r#"{"access_token":"tok-one-1234","provider":"salesforce","token_type":"Bearer","metadata":{"instance_url":"https://x.my.salesforce.com"}}"#;
        write_volume(
            &dir,
            "..2026_11_27_10_00_00.1",
            &[
                ("authorization", "Bearer tok-one-1234\n"),
                ("provider", "salesforce"),
                ("credentials.json", json),
            ],
        );
        let c = Credential::read(&dir).unwrap();
        assert_eq!(
            (c.header_name.as_str(), c.header_value.as_str()),
            ("Authorization", "Bearer tok-one-1234")
        );
        assert_eq!(c.provider.as_deref(), Some("salesforce"));
        assert_eq!(c.metadata["instance_url"], "https://x.my.salesforce.com");
        assert!(c.secrets().contains(&"tok-one-1234".to_owned()));
        assert!(!c.secrets().iter().any(|s| s == "salesforce"));
        assert!(!format!("{c:?}").contains("tok-one"));
        write_volume(
            &dir,
            "..2026_11_27_11_00_00.2",
            &[("authorization", "Bearer tok-two-5678")],
        );
        std::fs::remove_dir_all(dir.join("..2026_11_27_10_00_00.1")).unwrap();
        let c2 = Credential::read(&dir).unwrap();
        assert_eq!(c2.header_value, "Bearer tok-two-5678");
        assert!(!c.same_as(&c2));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_broker_document_reads_like_the_mounted_files() {
        let doc = serde_json::json!({"authorization": "Api-Key key-abcdefgh", "header_name": "X-Api-Key",
            "provider": "acme", "subdomain": "team", "api_key": "key-abcdefgh", "metadata": {"org": "o1"}});
        let Value::Object(doc) = doc else { unreachable!() };
        let c = Credential::from_document(doc).unwrap();
        assert_eq!(
            (
                c.header_name.as_str(),
                c.header_value.as_str(),
                c.provider.as_deref()
            ),
            ("X-Api-Key", "Api-Key key-abcdefgh", Some("acme"))
        );
        assert_eq!(
            (c.fields["subdomain"].as_str(), &c.metadata["org"]),
            ("team", &Value::from("o1"))
        );
        assert!(c.secrets().contains(&"key-abcdefgh".to_owned()));
        assert!(matches!(
            Credential::from_document(Map::new()),
            Err(CredentialError::Empty)
        ));
    }
}
