//! SIGKILL at each step of the flow. After a restart every account reaches the right state, no
//! credential is lost, and no refresh token is ever sent to the provider twice.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::time::Duration;

use agent_auth_operator::api::{AccountState, ConnectedAccount};
use common::dex::{browser, login};
use common::fixtures::*;
use common::operator::stack;
use common::proxy::{Fault, active_behind_proxy, proxied_connection};
use common::{eventually, setup};
use kube::api::Api;
use serde_json::json;

/// The steps run one after another: each kills the one operator of this binary.
#[tokio::test]
async fn sigkill_at_each_step_loses_nothing() {
    let s = stack();

    // 1. After the link is issued: the same link still works after the restart.
    let env = setup("crash-link").await;
    let accounts: Api<ConnectedAccount> = Api::namespaced(env.client.clone(), &env.ns);
    dex_connection(&env.client, &env.ns, "dex", &s.dex, &["openid", "offline_access"]).await;
    account(&env.client, &env.ns, "pia", "dex", json!({})).await;
    let pending = wait_account(&accounts, "pia", "link", |a| link(a).is_some()).await;
    s.operator.restart().unwrap();
    sign_in(&link(&pending).unwrap(), &s.dex.user(1)).await;
    let active = wait_state(&accounts, "pia", AccountState::Active).await;
    remember_credentials(&env.client, &env.ns, &active).await;

    // 2. During the code exchange: the provider is slow, the operator dies mid-exchange; the link
    //    was not spent, so the user simply tries again.
    let env = setup("crash-exchange").await;
    let accounts: Api<ConnectedAccount> = Api::namespaced(env.client.clone(), &env.ns);
    let proxy = proxied_connection(&env).await;
    account(&env.client, &env.ns, "quin", "dex", json!({})).await;
    let pending = wait_account(&accounts, "quin", "link", |a| link(a).is_some()).await;
    *proxy.hold_exchanges.lock().unwrap() = true;
    let the_link = link(&pending).unwrap();
    let user = s.dex.user(2);
    let attempt = tokio::spawn({
        let (l, u) = (the_link.clone(), user.clone());
        async move { login(&browser(), &l, &u).await.map(|r| r.status()) }
    });
    eventually(
        Duration::from_secs(30),
        "the code exchange reached the provider",
        || async { (*proxy.exchanges.lock().unwrap() > 0).then_some(()) },
    )
    .await;
    s.operator.restart().unwrap();
    assert!(
        !matches!(attempt.await.unwrap(), Ok(status) if status == 200),
        "the interrupted attempt did not succeed"
    );
    *proxy.hold_exchanges.lock().unwrap() = false;
    assert_eq!(
        state(&accounts.get("quin").await.unwrap()),
        Some(AccountState::PendingAuth)
    );
    sign_in(&the_link, &user).await;
    let active = wait_state(&accounts, "quin", AccountState::Active).await;
    remember_credentials(&env.client, &env.ns, &active).await;

    // 3. During a refresh, before the provider answered: after the restart the same refresh
    //    token is still the valid one and renewal carries on.
    let env = setup("crash-refresh").await;
    let (accounts, proxy) = active_behind_proxy(&env, 3).await;
    *proxy.fault.lock().unwrap() = Some(Fault::Slow);
    eventually(
        Duration::from_secs(40),
        "a refresh held at the provider",
        || async { (*proxy.faulted_refreshes.lock().unwrap() > 0).then_some(()) },
    )
    .await;
    s.operator.restart().unwrap();
    *proxy.fault.lock().unwrap() = None;
    let restarted = jiff::Timestamp::now();
    eventually(Duration::from_secs(60), "a refresh after the restart", || async {
        let a = accounts.get("acct").await.ok()?;
        let last = a.status.as_ref()?.last_refreshed_at.as_ref()?.0;
        (state(&a) == Some(AccountState::Active) && last > restarted).then_some(())
    })
    .await;
    let forwarded = proxy.forwarded_refresh_tokens.lock().unwrap().clone();
    let mut unique = forwarded.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        forwarded.len(),
        "a refresh token was sent to the provider twice"
    );
    assert!(!forwarded.is_empty());
}
