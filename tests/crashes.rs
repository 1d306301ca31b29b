//! SIGKILL at each step of the flow. After a restart every account reaches the right state, no
//! credential is lost, and no refresh token is ever sent to the provider twice (at a strict
//! rotating provider not even when it rotated and the answer was lost).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::time::Duration;

use agent_auth_operator::api::{AccountState, ConnectedAccount};
use common::dex::{browser, login};
use common::fixtures::*;
use common::operator::stack;
use common::proxy::{Fault, active_behind_proxy, proxied_connection};
use common::rotating::{RotatingOptions, RotatingProvider};
use common::rotating_account;
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

    // 3. During a refresh, before the provider answered, at a provider with a grace window (Dex
    //    accepts a used refresh token again for a while): after the restart the operator replays
    //    the token once, which the provider sees for the first time, and renewal carries on.
    //    (tests/rotation.rs: the same at a strict provider, where nothing is replayed.)
    let env = setup("crash-refresh").await;
    let (accounts, proxy) = active_behind_proxy(&env, 3).await;
    let patch = json!({"spec": {"refresh": {"rotation": {"policy": "Grace", "window": "10m"}}}});
    patch_connection(&env.client, &env.ns, "dex", patch).await;
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

    // 4. At the instant of rotation, at a strict provider: it rotated, the answer never arrived.
    //    No refresh token is sent twice, the agent's access token keeps working, the account shows
    //    RefreshOutcomeUnknown with a link, then EXPIRED; the link brings it back.
    let env = setup("crash-strict").await;
    let accounts: Api<ConnectedAccount> = Api::namespaced(env.client.clone(), &env.ns);
    let opts = rotating_account::options(&env.ns, Duration::from_secs(20));
    let (p, _) = rotating_account::start(&env, opts, json!({}), "sid").await;
    let held_token = rotating_account::agent_token(&env.client, &env.ns, "sid").await;
    kill_during_a_held_rotation(&p).await;
    let unknown = wait_account(&accounts, "sid", "RefreshOutcomeUnknown", |a| {
        ready(a).is_some_and(|r| r.1 == "RefreshOutcomeUnknown") && link(a).is_some()
    })
    .await;
    assert!(
        matches!(
            state(&unknown),
            Some(AccountState::Active | AccountState::Expired)
        ),
        "{:?}",
        state(&unknown)
    );
    assert!(
        p.access_token_valid(&held_token),
        "the agent's access token still works"
    );
    let expired = wait_state(&accounts, "sid", AccountState::Expired).await;
    assert_eq!(ready(&expired).unwrap().1, "RefreshOutcomeUnknown");
    assert!(reasons_include(&env, "sid", "RefreshOutcomeUnknown").await);
    rotating_account::follow(&link(&expired).unwrap()).await;
    wait_state(&accounts, "sid", AccountState::Active).await;
    assert!(rotating_account::assert_no_replay(&p) >= 1);

    // 5. The same at a provider with a grace window: replayed once, inside it; ACTIVE again.
    let env = setup("crash-grace").await;
    let accounts: Api<ConnectedAccount> = Api::namespaced(env.client.clone(), &env.ns);
    let opts = RotatingOptions {
        grace: Some(Duration::from_secs(120)),
        ..rotating_account::options(&env.ns, Duration::from_secs(20))
    };
    let refresh = json!({"rotation": {"policy": "Grace", "window": "2m"}});
    let (p, first) = rotating_account::start(&env, opts, refresh, "tam").await;
    kill_during_a_held_rotation(&p).await;
    let t0 = first
        .status
        .as_ref()
        .unwrap()
        .last_refreshed_at
        .clone()
        .unwrap()
        .0;
    let renewed = wait_account(&accounts, "tam", "renewed by the replay", |a| {
        a.status
            .as_ref()
            .and_then(|s| s.last_refreshed_at.as_ref())
            .is_some_and(|t| t.0 > t0)
    })
    .await;
    assert_eq!(state(&renewed), Some(AccountState::Active));
    assert_eq!(ready(&renewed).unwrap().1, "Active");
    assert_eq!(p.replays_accepted(), 1, "one replay inside the window");
    assert_eq!(p.reuse_count(), 0);
}

/// SIGKILLs (and restarts) the operator while `p` holds the answer to a rotation it already made.
async fn kill_during_a_held_rotation(p: &RotatingProvider) {
    p.hold_rotations();
    assert!(
        p.wait_held(Duration::from_secs(30)).await,
        "a rotation held at the provider"
    );
    stack().operator.restart().unwrap();
    p.release();
}

async fn reasons_include(env: &common::TestEnv, name: &str, reason: &str) -> bool {
    let env_client = env.client.clone();
    eventually(Duration::from_secs(30), reason, || async {
        event_reasons(&env_client, &env.ns, name)
            .await
            .iter()
            .any(|r| r == reason)
            .then_some(())
    })
    .await;
    true
}
