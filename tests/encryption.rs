//! Credentials at rest (issue #17), read straight from etcd, as a dump or a backup would hold them:
//! under the cluster's EncryptionConfiguration; under the operator's own KEK (the operator's copy
//! sealed, the agent Secret plain by design); across a KEK rotation while tokens keep refreshing;
//! and an operator whose KEK cannot be loaded, which stops before writing anything.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use agent_auth_operator::api::{AccountState, ConnectedAccount};
use agentauth_testcluster::etcd::AESCBC_PREFIX;
use agentauth_testcluster::{Cluster, ClusterOptions};
use base64::Engine as _;
use common::fixtures::state;
use common::operator::{OPERATOR_NS, Operator, OperatorOptions, prepare_cluster};
use common::rotating::RotatingProvider;
use common::{TestEnv, eventually, rotating_account};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use serde_json::json;

/// Access-token lifetime: short, so refreshes run during the rotation.
const TTL: Duration = Duration::from_secs(8);
const STATUS: &str = "agent-auth-operator-encryption";

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The first bytes of a raw etcd value, printable, for failure messages and the record.
fn excerpt(raw: &[u8]) -> String {
    raw.iter()
        .take(96)
        .map(|b| if b.is_ascii_graphic() { *b as char } else { '.' })
        .collect()
}

/// Writes a KEK file (standard base64 of 32 random bytes) and returns its `--kek` flag.
fn kek(dir: &Path, id: &str) -> String {
    let path = dir.join(id);
    let key: [u8; 32] = rand::random();
    std::fs::write(
        &path,
        format!("{}\n", base64::engine::general_purpose::STANDARD.encode(key)),
    )
    .unwrap();
    format!("--kek={id}={}", path.display())
}

async fn etcd_secret(cluster: &Cluster, ns: &str, name: &str) -> Vec<u8> {
    cluster
        .etcd_get(&format!("/registry/secrets/{ns}/{name}"))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no Secret {ns}/{name} in etcd"))
}

fn copy_name(a: &ConnectedAccount) -> String {
    format!("agentauth-{}", a.uid().unwrap())
}

fn agent_secret_name(a: &ConnectedAccount) -> String {
    a.status.as_ref().and_then(|s| s.secret_name.clone()).unwrap()
}

/// Asserts that `raw` holds none of the tokens `p` issued.
fn no_token_in(raw: &[u8], p: &RotatingProvider, what: &str) {
    for t in p.issued_tokens() {
        assert!(
            !contains(raw, &t),
            "{what} holds a token in plaintext: {}",
            excerpt(raw)
        );
    }
}

/// The encryption status ConfigMap, once `ok` holds for its data.
async fn progress(
    client: &kube::Client,
    what: &str,
    ok: impl Fn(&BTreeMap<String, String>) -> bool,
) -> BTreeMap<String, String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), OPERATOR_NS);
    eventually(Duration::from_secs(60), what, || async {
        let data = api.get_opt(STATUS).await.ok()??.data?;
        ok(&data).then_some(data)
    })
    .await
}

fn is(data: &BTreeMap<String, String>, key: &str, value: &str) -> bool {
    data.get(key).map(String::as_str) == Some(value)
}

/// The operator of one phase: KEK flags `keks`, on the shared cluster.
fn operator(cluster: &Cluster, instance: &str, keks: Vec<String>) -> Operator {
    Operator::start_with(
        cluster,
        OperatorOptions {
            instance: Some(instance.into()),
            extra_args: keks,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Waits until every account is ACTIVE with an agent token other than the one in `before`, valid at
/// the provider: refreshes go on. Returns the new tokens.
async fn refreshed(
    env: &TestEnv,
    p: &RotatingProvider,
    before: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut now = BTreeMap::new();
    for (name, old) in before {
        let token = eventually(Duration::from_secs(40), &format!("{name} refreshed"), || async {
            let a = env.accounts.get(name).await.ok()?;
            let t = rotating_account::agent_token(&env.client, &env.ns, name).await;
            (state(&a) == Some(AccountState::Active) && t != *old && p.access_token_valid(&t)).then_some(t)
        })
        .await;
        now.insert(name.clone(), token);
    }
    now
}

/// Test A: the cluster-level layer. Its own control plane, whose API server encrypts Secrets
/// (`aescbc`); the operator runs without a KEK. Both Secrets are ciphertext in etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_encryption_keeps_tokens_out_of_etcd() {
    let cluster = tokio::task::spawn_blocking(|| {
        Cluster::start_with(ClusterOptions {
            encryption: true,
            ..Default::default()
        })
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("control plane with encryption unavailable: {e}"));
    let client = cluster.client().await.unwrap();
    common::install_crds(&client).await;
    for ns in [OPERATOR_NS, "team-a"] {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(ns.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
    }
    let env = TestEnv {
        accounts: Api::namespaced(client.clone(), "team-a"),
        secrets: Api::namespaced(client.clone(), "team-a"),
        client: client.clone(),
        ns: "team-a".into(),
    };
    let op = operator(&cluster, "cluster-layer", vec![]);
    let (p, active) =
        rotating_account::start(&env, rotating_account::options(&env.ns, TTL), json!({}), "ada").await;

    for (ns, name) in [
        (OPERATOR_NS.to_owned(), copy_name(&active)),
        (env.ns.clone(), agent_secret_name(&active)),
    ] {
        let raw = etcd_secret(&cluster, &ns, &name).await;
        assert!(
            raw.starts_with(AESCBC_PREFIX),
            "{ns}/{name} is not encrypted by the API server: {}",
            excerpt(&raw)
        );
        no_token_in(&raw, &p, &format!("etcd's {ns}/{name}"));
        eprintln!(
            "etcd /registry/secrets/{ns}/{name}: {} bytes: {}",
            raw.len(),
            excerpt(&raw)
        );
    }
    assert!(op.logs().contains("no --kek"), "the missing KEK is warned about");
    drop(op);
    cluster.stop();
}

/// Tests B and C: the operator layer on the shared (unencrypted) control plane. Plaintext copies
/// from before any KEK are sealed once a KEK is given; then the KEK is rotated while tokens keep
/// refreshing; the old key is retired; and a copy under a key that is no longer loaded is reported,
/// never overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_kek_seals_copies_and_rotates_without_losing_a_token() {
    let env = common::setup("seal").await;
    let cluster = prepare_cluster().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (k1, k2, k3) = (
        kek(keys.path(), "k1"),
        kek(keys.path(), "k2"),
        kek(keys.path(), "k3"),
    );
    let mut logs = Vec::new();

    // Before any KEK: two accounts, their copies plaintext (the upgrade path starts here).
    let op = operator(cluster, "seal-plain", vec![]);
    let opts = rotating_account::options(&env.ns, TTL);
    let (p, ada) = rotating_account::start(&env, opts, json!({}), "ada").await;
    let bo = rotating_account::authorized(&env.client, &env.ns, "bo", "rot").await;
    let accounts = [ada, bo];
    let copies: Api<Secret> = Api::namespaced(env.client.clone(), OPERATOR_NS);
    for a in &accounts {
        let copy = copies.get(&copy_name(a)).await.unwrap();
        assert!(
            copy.data.unwrap().contains_key("record.json"),
            "written in plaintext without a KEK"
        );
    }
    logs.push(op.logs());
    drop(op);

    // k1: the plaintext copies are re-sealed; etcd holds no token of the copies, while the agent
    // Secrets (what agent pods mount) are plain by design.
    let op = operator(cluster, "seal-k1", vec![k1.clone()]);
    progress(&env.client, "every copy under k1", |d| {
        is(d, "primary", "k1")
            && is(d, "records.k1", "2")
            && is(d, "records.plaintext", "0")
            && is(d, "remaining", "0")
    })
    .await;
    // An authorization completed under the KEK is sealed from its first write.
    let cy = rotating_account::authorized(&env.client, &env.ns, "cy", "rot").await;
    let accounts: Vec<ConnectedAccount> = accounts.into_iter().chain([cy]).collect();
    let mut tokens = BTreeMap::new();
    for a in &accounts {
        let raw = etcd_secret(cluster, OPERATOR_NS, &copy_name(a)).await;
        assert!(
            contains(&raw, "record.sealed") && !contains(&raw, "record.json"),
            "{}",
            excerpt(&raw)
        );
        assert!(contains(&raw, "\"kek\":\"k1\""), "the envelope names its key");
        no_token_in(&raw, &p, "the sealed operator copy in etcd");
        let agent = etcd_secret(cluster, &env.ns, &agent_secret_name(a)).await;
        let token = rotating_account::agent_token(&env.client, &env.ns, &a.name_any()).await;
        assert!(
            contains(&agent, &token),
            "the agent Secret is plain in etcd by design"
        );
        tokens.insert(a.name_any(), token);
        let at = raw.windows(13).rposition(|w| w == b"record.sealed").unwrap_or(0);
        eprintln!(
            "etcd operator copy {}: {} bytes, from {at}: {}",
            copy_name(a),
            raw.len(),
            excerpt(&raw[at..])
        );
    }
    // Refreshes read and write sealed copies.
    let tokens = refreshed(&env, &p, &tokens).await;
    logs.push(op.logs());
    drop(op);

    // Rotation: k1 + k2, primary k2. The pass re-seals under k2 while refreshes go on.
    let op = operator(
        cluster,
        "seal-k2",
        vec![k1.clone(), k2.clone(), "--kek-primary=k2".into()],
    );
    let rotated = progress(&env.client, "no copy left under k1", |d| {
        is(d, "primary", "k2")
            && is(d, "records.k1", "0")
            && is(d, "records.k2", "3")
            && is(d, "remaining", "0")
    })
    .await;
    eprintln!("encryption status after the rotation: {rotated:?}");
    let metrics = op.metrics().await.unwrap();
    assert!(
        metrics.contains("agentauth_credential_records{key_id=\"k1\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("agentauth_credential_records{key_id=\"k2\"} 3"),
        "{metrics}"
    );
    let tokens = refreshed(&env, &p, &tokens).await;
    logs.push(op.logs());
    drop(op);

    // k1 retired: everything opens with k2 alone and keeps refreshing.
    let op = operator(cluster, "seal-k2-only", vec![k2.clone()]);
    progress(&env.client, "k1 gone from the status", |d| {
        is(d, "primary", "k2") && !d.contains_key("records.k1") && is(d, "records.k2", "3")
    })
    .await;
    refreshed(&env, &p, &tokens).await;
    logs.push(op.logs());
    drop(op);

    // The copies' key (k2) is not loaded: they are reported, and left untouched though refreshes
    // are due.
    let names: Vec<String> = accounts.iter().map(copy_name).collect();
    let before = versions(&copies, &names).await;
    let op = operator(cluster, "seal-k3", vec![k3]);
    progress(&env.client, "copies under a missing key", |d| {
        is(d, "missingKeys", "k2") && is(d, "records.k2", "3")
    })
    .await;
    let due = Instant::now() + TTL + Duration::from_secs(2);
    eventually(TTL * 3, "the key error in the operator's log", || async {
        (Instant::now() > due && op.logs().contains("which is not loaded (--kek)")).then_some(())
    })
    .await;
    assert_eq!(
        versions(&copies, &names).await,
        before,
        "a copy under a missing key was rewritten"
    );
    logs.push(op.logs());
    drop(op);

    // Nothing lost, nothing replayed, and no token or key in any log.
    assert_eq!(p.grants_revoked(), 0, "a grant was revoked");
    assert!(
        rotating_account::assert_no_replay(&p) >= 9,
        "refreshes ran in every phase"
    );
    let keys_b64: Vec<String> = ["k1", "k2"]
        .iter()
        .map(|id| {
            std::fs::read_to_string(keys.path().join(id))
                .unwrap()
                .trim()
                .to_owned()
        })
        .collect();
    let all = logs.join("\n");
    for secret in p.issued_tokens().iter().chain(&keys_b64) {
        assert!(
            !all.contains(secret.as_str()),
            "a token or key in the operator's log"
        );
    }
}

async fn versions(copies: &Api<Secret>, names: &[String]) -> Vec<Option<String>> {
    let mut v = Vec::new();
    for n in names {
        v.push(copies.get(n).await.unwrap().resource_version());
    }
    v
}

/// Test D: a KEK that cannot be loaded (missing file, short key, unknown primary) stops the
/// operator with exit code 2 and a message naming it, before anything is written to the cluster.
#[tokio::test]
async fn an_unloadable_kek_stops_the_operator_before_it_writes() {
    let env = common::setup("kek-refused").await;
    let cluster = common::cluster().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let good = kek(keys.path(), "k1");
    let short = keys.path().join("short");
    std::fs::write(
        &short,
        base64::engine::general_purpose::STANDARD.encode([7u8; 16]),
    )
    .unwrap();
    let cases = [
        (
            vec!["--kek=k1=/nonexistent/kek".to_owned()],
            "cannot read key \"k1\" from /nonexistent/kek",
        ),
        (
            vec![format!("--kek=k1={}", short.display())],
            "has 16 bytes; a KEK must have exactly 32",
        ),
        (
            vec![good, "--kek-primary=k9".into()],
            "--kek-primary \"k9\" names no loaded --kek",
        ),
    ];
    for (flags, message) in cases {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_agent-auth-operator"))
            .args([
                "run",
                &format!("--namespace={}", env.ns),
                "--gateway-url=http://127.0.0.1:9",
            ])
            .args([
                "--gateway-addr=127.0.0.1:0",
                "--admin-addr=127.0.0.1:0",
                "--broker-addr=127.0.0.1:0",
            ])
            .args(&flags)
            .env("KUBECONFIG", cluster.kubeconfig_path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the operator with {flags:?} kept running");
            }
            tokio::time::sleep(Duration::from_millis(50)).await; // poll interval
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(message), "{flags:?}: {stderr}");
    }
    // The operator namespace of those runs holds nothing they wrote.
    let lp = ListParams::default();
    let secrets = Api::<Secret>::namespaced(env.client.clone(), &env.ns)
        .list(&lp)
        .await
        .unwrap();
    assert!(
        secrets.items.is_empty(),
        "a Secret was written: {:?}",
        secrets.items.iter().map(|s| s.name_any()).collect::<Vec<_>>()
    );
    let leases = Api::<Lease>::namespaced(env.client.clone(), &env.ns)
        .list(&lp)
        .await
        .unwrap();
    assert!(leases.items.is_empty());
    let maps = Api::<ConfigMap>::namespaced(env.client.clone(), &env.ns);
    assert!(maps.get_opt(STATUS).await.unwrap().is_none());
}
