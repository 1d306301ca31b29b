//! Scenario 8, sustained refresh: OAuth 2.0 accounts at a rotating provider
//! (`tests/common/rotating.rs`) renewing continuously, and what each refresh costs in API writes
//! (audit log) with the intent the operator records before spending a refresh token
//! (`rotation.policy: Strict`, the default) and without it (`None`), in the same run.

use std::time::{Duration, Instant};

use agent_auth_operator::api::{ConnectedAccount, Connection};
use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use super::{Suite, progress};
use crate::harness::{self, OPERATOR_USER, Res, Tracker, has_link, is_active};
use crate::report::Row;
use crate::rotating::{RotatingOptions, RotatingProvider};

/// Accounts, token lifetime and measuring window per phase, by scale.
fn sizes(full: bool) -> (usize, Duration, Duration) {
    if full {
        (200, Duration::from_secs(30), Duration::from_secs(60))
    } else {
        (4, Duration::from_secs(20), Duration::from_secs(15))
    }
}

impl Suite<'_> {
    pub(super) async fn sustained_refresh(&mut self) -> Res<()> {
        let (n, ttl, window) = sizes(self.p.targets);
        self.start_operator().await?;
        let ns = self.env.namespace("sustained").await?;
        let opts = RotatingOptions {
            client_id: format!("bench-{ns}"),
            access_ttl: ttl,
            ..Default::default()
        };
        let provider = RotatingProvider::start(opts.clone()).await;
        let admin = self.env.admin.clone();
        let oauth2 = json!({
            "clientId": opts.client_id,
            "authorizationUrl": provider.authorize_url(),
            "tokenUrl": provider.token_url(),
            "scopes": ["read"],
        });
        harness::connection("rot", &opts.client_secret, oauth2)
            .create::<Connection>(&admin, &ns)
            .await?;
        let conns: Api<Connection> = Api::namespaced(admin.clone(), &ns);
        harness::wait_connection_ready(&admin, &ns, "rot").await?;

        // Every account authorized through its link, as a user would (the provider consents at once).
        let linked = Tracker::start(&admin, &ns, has_link).await?;
        harness::create_accounts(&self.env.bench, &ns, "s", n, self.p.concurrency, "rot").await?;
        linked.wait_count(n, Duration::from_secs(120)).await?;
        let active = Tracker::start(&admin, &ns, is_active).await?;
        let links: Vec<String> = Api::<ConnectedAccount>::namespaced(admin.clone(), &ns)
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .iter()
            .filter_map(|a| a.status.as_ref()?.authorization_link.clone())
            .collect();
        // One browser (cookie jar) per user: the gateway ties a sign-in to its browser session.
        let failed = futures::stream::iter(links)
            .map(|l| async move {
                // The link shows its interstitial first; Continue leads on to the provider.
                let browser = agentauth_testcluster::dex::browser();
                let Ok(pressed) = agentauth_testcluster::dex::press_continue(&browser, &l).await else {
                    return true;
                };
                let Ok(to_provider) = agentauth_testcluster::dex::provider_url(pressed).await else {
                    return true;
                };
                browser
                    .get(to_provider)
                    .send()
                    .await
                    .map(|r| r.status().as_u16() != 200)
                    .unwrap_or(true)
            })
            .buffer_unordered(16)
            .filter(|bad| futures::future::ready(*bad))
            .count()
            .await;
        if failed > 0 {
            return Err(format!("{failed} of {n} authorizations failed"));
        }
        active.wait_count(n, Duration::from_secs(120)).await?;
        progress(&format!("  {n} accounts ACTIVE at the rotating provider"));

        // Phase 1: Strict (intent written); phase 2: None (no intent), same accounts.
        let mut per_refresh = Vec::new();
        for policy in ["Strict", "None"] {
            let patch = json!({"spec": {"refresh": {"rotation": {"policy": policy}}}});
            conns
                .patch("rot", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| format!("patch Connection: {e}"))?;
            harness::wait_connection_ready(&admin, &ns, "rot").await?;
            let (offset, from, rotations) = (self.audit_offset(), Timestamp::now(), provider.rotations());
            let t = Instant::now();
            tokio::time::sleep(window).await; // the measuring window
            let refreshes = provider.rotations() - rotations;
            let writes: Vec<_> = self
                .writes(offset, from)?
                .into_iter()
                .filter(|w| w.user == OPERATOR_USER)
                .collect();
            let secs = t.elapsed().as_secs_f64();
            let by = harness::breakdown(&writes, OPERATOR_USER);
            let per = writes.len() as f64 / refreshes.max(1) as f64;
            self.detail(
                &format!("sustained_{}", policy.to_lowercase()),
                json!({"accounts": n, "token_lifetime_s": ttl.as_secs(), "window_s": secs,
                       "refreshes": refreshes, "operator_writes": writes.len(), "writes_by_verb_resource": by}),
            );
            per_refresh.push((policy, per, refreshes, by));
        }
        let reuse = provider.reuse_count();
        for (policy, per, refreshes, by) in &per_refresh {
            let copies = by
                .iter()
                .filter(|(k, _)| k.ends_with(" secrets"))
                .map(|(_, v)| *v)
                .sum::<u64>() as f64
                / (*refreshes).max(1) as f64;
            self.row(Row::new(
                "8. sustained refresh",
                &format!(
                    "operator API writes per refresh, rotation {policy} ({n} accounts, {} s tokens)",
                    ttl.as_secs()
                ),
                format!("{per:.2} ({refreshes} refreshes; Secret writes {copies:.2}/refresh)"),
                *per,
            ));
        }
        self.row(
            Row::new(
                "8. sustained refresh",
                "refresh tokens the strict provider saw twice",
                reuse.to_string(),
                reuse as f64,
            )
            .target(self.p.targets, "0", reuse == 0),
        );
        harness::delete_namespace(&admin, &ns).await?;
        harness::wait_no_accounts(&admin, &ns, Duration::from_secs(300)).await?;
        drop(provider);
        Ok(())
    }
}
