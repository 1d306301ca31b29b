//! Secret hygiene across a whole test binary: tests remember every token, code and client secret
//! they see, and when the binary exits, every operator log line, Event, account/Connection status
//! and the metrics page are scanned for them. A single hit fails the run (the binary aborts).

use std::collections::BTreeSet;
use std::sync::{Mutex, Once};

use agent_auth_operator::api::{ConnectedAccount, Connection};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};

static SECRETS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
static SCAN: Once = Once::new();

/// Remembers a credential value that must never show up outside Secrets. Values shorter than 8
/// characters are ignored (they would match by chance).
pub fn remember(value: &str) {
    if value.len() >= 8
        && let Ok(mut s) = SECRETS.lock()
    {
        s.insert(value.to_owned());
    }
}

/// Registers the exit-time scan (once per binary).
pub fn scan_at_exit() {
    SCAN.call_once(|| agentauth_testcluster::at_exit(scan));
}

extern "C" fn scan() {
    let secrets: Vec<String> = SECRETS
        .lock()
        .map(|s| s.iter().cloned().collect())
        .unwrap_or_default();
    if secrets.is_empty() {
        return;
    }
    let mut places: Vec<(String, String)> = Vec::new();
    if let Some(s) = super::operator::running_stack() {
        places.push(("operator logs".into(), s.operator.logs()));
        // Scraped as an authorized ServiceAccount: an anonymous scrape gets only a refusal.
        let metrics = agentauth_testcluster::block_on(s.operator.metrics()).unwrap_or_else(|e| {
            eprintln!("hygiene: the metrics page was not scanned: {e}");
            String::new()
        });
        places.push(("metrics".into(), metrics));
    }
    if let Ok(cluster) = super::cluster() {
        let listed = agentauth_testcluster::block_on(async move {
            let client = cluster.client().await.ok()?;
            let events = Api::<Event>::all(client.clone())
                .list(&ListParams::default())
                .await
                .ok()?;
            let accounts = Api::<ConnectedAccount>::all(client.clone())
                .list(&ListParams::default())
                .await
                .ok()?;
            let conns = Api::<Connection>::all(client)
                .list(&ListParams::default())
                .await
                .ok()?;
            Some([
                (
                    "Events".to_owned(),
                    serde_json::to_string(&events.items).unwrap_or_default(),
                ),
                (
                    "account status".to_owned(),
                    serde_json::to_string(&accounts.items).unwrap_or_default(),
                ),
                (
                    "Connection status".to_owned(),
                    serde_json::to_string(&conns.items).unwrap_or_default(),
                ),
            ])
        });
        places.extend(listed.into_iter().flatten());
    }
    let hits: Vec<String> = places
        .iter()
        .flat_map(|(place, text)| {
            secrets
                .iter()
                .enumerate()
                .filter(|(_, s)| text.contains(s.as_str()))
                .map(move |(i, _)| format!("secret #{i} in {place}"))
        })
        .collect();
    eprintln!(
        "secret hygiene: scanned {} places for {} secrets: {} hits",
        places.len(),
        secrets.len(),
        hits.len()
    );
    if !hits.is_empty() {
        eprintln!("secret hygiene FAILED: {}", hits.join(", "));
        // `exit` may not be called from an exit handler; abort makes the binary fail all the same.
        std::process::abort();
    }
}
