//! Faults at the provider: a fault-injecting proxy (test code) sits in front of Dex's token
//! endpoint. Each fault gives the documented state and condition, retries back off (requests are
//! counted), `Retry-After` is honoured, and nothing panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use common::proxy::{Fault, HOSTILE_SECRET, active_behind_proxy, proxied_connection};

use std::time::Duration;

use agent_auth_operator::api::{AccountState, ConnectedAccount};

use common::fixtures::*;
use common::{eventually, setup};

fn refresh_condition(a: &ConnectedAccount) -> Option<(String, String, String)> {
    let c = a
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "TokenRefresh")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test]
async fn server_errors_back_off_keep_the_account_active_then_recover() {
    let env = setup("fault-5xx").await;
    let (accounts, proxy) = active_behind_proxy(&env, 8).await;
    *proxy.fault.lock().unwrap() = Some(Fault::ServerError);
    let failing = wait_account(&accounts, "acct", "RefreshFailing", |a| {
        refresh_condition(a).is_some_and(|c| c.1 == "RefreshFailing")
    })
    .await;
    assert_eq!(
        state(&failing),
        Some(AccountState::Active),
        "still ACTIVE while the token is valid"
    );
    let expired = eventually(
        Duration::from_secs(40),
        "EXPIRED after the token lapsed",
        || async {
            let a = accounts.get("acct").await.ok()?;
            (state(&a) == Some(AccountState::Expired)).then_some(a)
        },
    )
    .await;
    assert_eq!(ready(&expired).unwrap().1, "TokenExpired");
    assert!(link(&expired).is_none(), "no new link for a transient failure");
    // 5 s, 10 s, 20 s ...: a handful of attempts, not a storm.
    let attempts = *proxy.faulted_refreshes.lock().unwrap();
    assert!(
        (2..=5).contains(&attempts),
        "{attempts} refresh attempts while failing"
    );

    *proxy.fault.lock().unwrap() = None;
    eventually(
        Duration::from_secs(60),
        "ACTIVE after the provider recovered",
        || async {
            let a = accounts.get("acct").await.ok()?;
            (state(&a) == Some(AccountState::Active) && refresh_condition(&a).is_some_and(|c| c.0 == "True"))
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn malformed_responses_and_rejected_clients_are_retried_without_losing_the_account() {
    for (i, (fault, words)) in [
        (Fault::Truncated, "malformed token response"),
        (Fault::InvalidClient, "rejected the client"),
    ]
    .into_iter()
    .enumerate()
    {
        let env = setup(&format!("fault-odd-{i}")).await;
        let (accounts, proxy) = active_behind_proxy(&env, 9 - 2 * i).await;
        *proxy.fault.lock().unwrap() = Some(fault);
        let failing = wait_account(&accounts, "acct", &format!("{fault:?} reported"), |a| {
            refresh_condition(a).is_some_and(|c| c.1 == "RefreshFailing" && c.2.contains(words))
        })
        .await;
        assert_eq!(state(&failing), Some(AccountState::Active));
        assert!(link(&failing).is_none());
    }
}

#[tokio::test]
async fn invalid_grant_expires_the_account_with_a_new_link() {
    let env = setup("fault-grant").await;
    let (accounts, proxy) = active_behind_proxy(&env, 3).await;
    *proxy.fault.lock().unwrap() = Some(Fault::InvalidGrant);
    let expired = eventually(Duration::from_secs(40), "EXPIRED", || async {
        let a = accounts.get("acct").await.ok()?;
        (state(&a) == Some(AccountState::Expired)).then_some(a)
    })
    .await;
    assert_eq!(ready(&expired).unwrap().1, "RefreshRejected");
    assert!(link(&expired).is_some());
    assert_eq!(
        *proxy.faulted_refreshes.lock().unwrap(),
        1,
        "a rejected grant is not retried"
    );
}

#[tokio::test]
async fn rate_limits_are_honoured() {
    let env = setup("fault-429").await;
    let (accounts, proxy) = active_behind_proxy(&env, 4).await;
    *proxy.fault.lock().unwrap() = Some(Fault::RateLimited);
    let limited = wait_account(&accounts, "acct", "rate limit reported", |a| {
        refresh_condition(a).is_some_and(|c| c.2.contains("retry after 40s"))
    })
    .await;
    assert_eq!(state(&limited), Some(AccountState::Active));
    let seen = *proxy.faulted_refreshes.lock().unwrap();
    assert_eq!(seen, 1, "first attempt: {:?}", refresh_condition(&limited));
    // Backoff alone would retry after ~5 s; the provider asked for 40 s. Watch for 15 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        assert_eq!(
            *proxy.faulted_refreshes.lock().unwrap(),
            seen,
            "retried before Retry-After"
        );
        tokio::time::sleep(Duration::from_millis(500)).await; // observation interval
    }
}

#[tokio::test]
async fn a_hung_provider_times_out_and_is_retried() {
    let env = setup("fault-slow").await;
    let (accounts, proxy) = active_behind_proxy(&env, 0).await;
    // A provider that does not rotate may be asked again after `refresh.timeout`.
    let patch = serde_json::json!({"spec": {"refresh": {"timeout": "5s", "rotation": {"policy": "None"}}}});
    patch_connection(&env.client, &env.ns, "dex", patch).await;
    *proxy.fault.lock().unwrap() = Some(Fault::Slow);
    let failing = eventually(Duration::from_secs(45), "timeout reported", || async {
        let a = accounts.get("acct").await.ok()?;
        refresh_condition(&a)
            .is_some_and(|c| c.1 == "RefreshFailing" && c.2.contains("did not answer in time"))
            .then_some(a)
    })
    .await;
    assert!(matches!(
        state(&failing),
        Some(AccountState::Active | AccountState::Expired)
    ));
    eventually(Duration::from_secs(45), "the refresh retried", || async {
        (*proxy.faulted_refreshes.lock().unwrap() >= 2).then_some(())
    })
    .await;
}

/// A hostile token endpoint answers the code exchange, the refresh and the revocation with an
/// `error_description` (and `error_uri`) full of markup, a fake secret and the secrets it was
/// sent. The user, the account's status, its Events and the operator's logs get the RFC 6749 code
/// and the HTTP status, never the endpoint's words.
#[tokio::test]
async fn a_hostile_endpoints_error_text_reaches_no_status_event_page_or_log() {
    use k8s_openapi::api::core::v1::Event;
    let env = setup("fault-hostile").await;
    let s = common::operator::stack();
    let proxy = proxied_connection(&env).await;
    let patch = serde_json::json!({"spec": {"oauth2": {"revocationUrl": proxy.revocation_url()}}});
    patch_connection(&env.client, &env.ns, "dex", patch).await;
    let accounts: kube::Api<ConnectedAccount> = kube::Api::namespaced(env.client.clone(), &env.ns);
    authorized(&env.client, &env.ns, "ray", "dex", &s.dex.user(1)).await;
    *proxy.fault.lock().unwrap() = Some(Fault::Hostile);

    // The refresh (Dex's tokens live 20 s): refused, so the user must authorize again.
    let expired = eventually(Duration::from_secs(40), "ray EXPIRED", || async {
        let a = accounts.get("ray").await.ok()?;
        (state(&a) == Some(AccountState::Expired)).then_some(a)
    })
    .await;
    assert_eq!(ready(&expired).unwrap().1, "RefreshRejected");

    // The code exchange: the user sees our page, the account says the exchange failed.
    account(&env.client, &env.ns, "eve", "dex", serde_json::json!({})).await;
    let pending = wait_account(&accounts, "eve", "link", |a| link(a).is_some()).await;
    let page = common::dex::login(&common::dex::browser(), &link(&pending).unwrap(), &s.dex.user(2))
        .await
        .unwrap();
    assert_eq!(page.status(), 502);
    let page = page.text().await.unwrap();
    assert!(page.contains("did not accept"), "{page}");
    wait_account(&accounts, "eve", "ExchangeFailed", |a| {
        ready(a).is_some_and(|r| r.1 == "ExchangeFailed")
    })
    .await;

    // The revocation, when ray is deleted: refused with the code and status only.
    accounts.delete("ray", &Default::default()).await.unwrap();
    wait_gone(&accounts, "ray").await;
    let events: kube::Api<Event> = kube::Api::namespaced(env.client.clone(), &env.ns);
    let failed = eventually(Duration::from_secs(20), "RevocationFailed Event", || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("RevocationFailed"))
    })
    .await;
    assert_eq!(
        failed.message.as_deref(),
        Some("revocation refused with HTTP 400 (invalid_grant)")
    );

    let status = serde_json::to_string(&accounts.list(&Default::default()).await.unwrap().items).unwrap();
    let events = serde_json::to_string(&events.list(&Default::default()).await.unwrap().items).unwrap();
    let logs = s.operator.logs();
    for (place, text) in [
        ("page", &page),
        ("status", &status),
        ("Events", &events),
        ("logs", &logs),
    ] {
        for word in [HOSTILE_SECRET, "alert(", "attacker.example"] {
            assert!(!text.contains(word), "{word:?} in {place}");
        }
    }
    assert!(status.contains("invalid_grant"), "the code is shown: {status}");
}
