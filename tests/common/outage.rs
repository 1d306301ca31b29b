//! Control-plane outages (used by `outage_apiserver.rs` and `outage_etcd.rs`, one control plane
//! each): a component goes down for 20 s while tokens (20 s lifetime) keep rotating at Dex. The
//! operator recovers on its own, refresh schedules resume, and no credential is lost: no refresh
//! is sent while its intent cannot be recorded, and a refresh token rotated just before the API
//! went away is held in memory and persisted once it answers again.

use super::*;
use std::time::Duration;

use super::fixtures::*;
use super::operator::stack;
use agent_auth_operator::api::{AccountState, ConnectedAccount};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

async fn token_works(s: &super::operator::Stack, authorization: &str) -> bool {
    let resp = reqwest::Client::new()
        .get(s.dex.userinfo_url())
        .header("Authorization", authorization)
        .send()
        .await;
    resp.is_ok_and(|r| r.status().is_success())
}

/// Takes `component` down for 20 s while an ACTIVE account keeps refreshing, and checks that the
/// account and its credential come through.
pub async fn survive(component: &'static str) {
    let env = setup("outage").await;
    let s = stack();
    let (client, ns) = (&env.client, env.ns.as_str());
    dex_connection(client, ns, "dex", &s.dex, &["openid", "email", "offline_access"]).await;
    authorized(client, ns, "olga", "dex", &s.dex.user(0)).await;

    {
        let cluster = super::cluster().unwrap();
        tokio::task::spawn_blocking(move || cluster.outage(component, Duration::from_secs(20)))
            .await
            .unwrap()
            .unwrap();
        let back = jiff::Timestamp::now();
        // Fresh clients: the old connections died with the server.
        let client = super::cluster().unwrap().client().await.unwrap();
        let accounts: Api<ConnectedAccount> = Api::namespaced(client.clone(), ns);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let renewed = loop {
            let a = accounts.get("olga").await.ok();
            let last = a
                .as_ref()
                .and_then(|a| a.status.as_ref()?.last_refreshed_at.as_ref().map(|t| t.0));
            if let Some(a) = a
                .as_ref()
                .filter(|a| state(a) == Some(AccountState::Active) && last > Some(back))
            {
                break a.clone();
            }
            if std::time::Instant::now() > deadline {
                let logs = s.operator.logs();
                let tail: Vec<&str> = logs
                    .lines()
                    .filter(|l| !l.contains("DEBUG"))
                    .rev()
                    .take(60)
                    .collect();
                panic!(
                    "no refresh after the {component} outage; account: {:?}\noperator log (newest first):\n{}",
                    a.map(|a| a.status),
                    tail.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await; // poll interval
        };
        assert_eq!(ready(&renewed).unwrap().0, "True");
        let secret = eventually(Duration::from_secs(30), "published token works", || async {
            let s2 = secrets.get("olga-credentials").await.ok()?;
            let auth = secret_text(&s2)["authorization"].clone();
            token_works(s, &auth).await.then_some(s2)
        })
        .await;
        assert!(secret_text(&secret)["authorization"].starts_with("Bearer "));
    }
    assert!(s.operator.logs().contains("token refreshed"));
}
