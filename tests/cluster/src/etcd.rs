//! etcd as the API server stores it: the cluster-level encryption layer
//! ([`super::ClusterOptions::encryption`]) and raw reads of etcd keys, to see what a dump of etcd
//! or a backup would hold.
//!
//! Raw reads go to etcd's own v3 JSON gateway (`POST /v3/kv/range`, on by default on the client
//! port): the same bytes `etcdctl get` prints, without building etcdctl.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The prefix kube-apiserver writes before a value its `aescbc` provider encrypted.
pub const AESCBC_PREFIX: &[u8] = b"k8s:enc:aescbc:v1:test:";

/// Writes an EncryptionConfiguration that encrypts Secrets with `aescbc` under a fresh random key
/// (key name `test`) and still reads plaintext written before; returns its path.
pub(crate) fn write_encryption_config(dir: &Path) -> Result<PathBuf, String> {
    let mut key = [0u8; 32];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").map_err(|e| format!("/dev/urandom: {e}"))?,
        &mut key,
    )
    .map_err(|e| format!("/dev/urandom: {e}"))?;
    let config = format!(
        "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources: [secrets]
  providers:
  - aescbc:
      keys:
      - name: test
        secret: {}
  - identity: {{}}
",
        STANDARD.encode(key)
    );
    let path = dir.join("encryption-config.yaml");
    std::fs::write(&path, config).map_err(|e| format!("cannot write the encryption config: {e}"))?;
    Ok(path)
}

impl super::Cluster {
    /// The raw value etcd holds under `key` (e.g. `/registry/secrets/NS/NAME`), as stored: with
    /// cluster-level encryption it starts with `k8s:enc:`. `None` when the key does not exist.
    pub async fn etcd_get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        let url = format!("{}/v3/kv/range", self.etcd_url);
        let body = serde_json::json!({"key": STANDARD.encode(key)});
        let answer: serde_json::Value = reqwest::Client::new()
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("etcd range {key}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("etcd range {key}: {e}"))?;
        match answer["kvs"][0]["value"].as_str() {
            Some(v) => STANDARD
                .decode(v)
                .map(Some)
                .map_err(|e| format!("etcd range {key}: {e}")),
            None if answer.get("header").is_some() => Ok(None),
            None => Err(format!("etcd range {key}: unexpected answer {answer}")),
        }
    }
}
