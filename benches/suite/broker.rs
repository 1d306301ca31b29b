//! Scenario 9, token broker: `POST /token` (RFC 8693) on a cache hit, under load from a separate
//! process, beside `/healthz` of the same process under the same load. ClientCredentials accounts
//! (`delivery: Broker`, ACTIVE without a user) at the local token server; one ServiceAccount with
//! `use` on them, its token from the TokenRequest API; the load rotates over the accounts, so
//! after the first round every answer comes from the broker's caches.

use std::time::Duration;

use agent_auth_operator::api::{ConnectedAccount, Connection};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use super::Suite;
use crate::harness::{self, Res, is_active};
use crate::load::{self, Req};
use crate::report::Row;
use crate::token_server::{TokenServer, TokenServerConfig};

/// Accounts, load connections and seconds, by scale.
fn sizes(full: bool) -> (usize, usize, Duration) {
    if full {
        (100, 8, Duration::from_secs(20))
    } else {
        (3, 2, Duration::from_secs(2))
    }
}

impl Suite<'_> {
    pub(super) async fn broker(&mut self) -> Res<()> {
        let (n, connections, duration) = sizes(self.p.targets);
        let Some(broker) = self.op.broker_url() else {
            self.row(Row::new(
                "9. broker",
                "POST /token",
                "not run: this build has no broker".into(),
                f64::NAN,
            ));
            return Ok(());
        };
        self.start_operator().await?;
        let admin = self.env.admin.clone();
        let ns = self.env.namespace("broker").await?;
        let server = TokenServer::start(TokenServerConfig {
            expires_in: Duration::from_secs(3600),
            ..Default::default()
        })
        .await;
        harness::connection(
            "cc",
            "test-secret",
            json!({"clientId": "test-client", "tokenUrl": server.token_url()}),
        )
        .auth_type("ClientCredentials")
        .extra(json!({"delivery": "Broker"}))
        .create::<Connection>(&admin, &ns)
        .await?;
        harness::wait_connection_ready(&admin, &ns, "cc").await?;
        harness::create_accounts(&self.env.bench, &ns, "b", n, self.p.concurrency, "cc").await?;
        let accounts: Api<ConnectedAccount> = Api::namespaced(admin.clone(), &ns);
        harness::poll(
            Duration::from_secs(120),
            "every broker account ACTIVE",
            || async {
                let l = accounts.list(&ListParams::default()).await.ok()?;
                (l.items.iter().filter(|a| is_active(a)).count() >= n).then_some(())
            },
        )
        .await?;
        let token = agent_token(&admin, &ns).await?;
        let body = |i: usize| {
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs([
                    ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
                    ("subject_token", token.as_str()),
                    ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
                    ("resource", &format!("agentauth://{ns}/b-{i}")),
                ])
                .finish()
        };
        let requests: Vec<Req> = (0..n)
            .map(|i| Req {
                path: "/token".into(),
                form: Some(body(i)),
            })
            .collect();
        // Every answer by hand first: a token, so the load measures issued tokens, not refusals.
        let http = reqwest::Client::new();
        for r in &requests {
            let a = http
                .post(format!("{broker}{}", r.path))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(r.form.clone().unwrap_or_default())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if a.status() != 200 {
                return Err(format!(
                    "the broker answered {}: {}",
                    a.status(),
                    a.text().await.unwrap_or_default()
                ));
            }
        }
        // The target's load: 2,000 req/s, open loop, beside /healthz at the same rate. Then the
        // ceiling: wrk as fast as it goes.
        let rate = if self.p.targets { 2000.0 } else { 200.0 };
        let admin = self.op.admin_url();
        let healthz = [Req::get("/healthz")];
        let base = load::at_rate(&admin, &healthz, 16, rate, duration).await?;
        let m0 = self.op.metrics().await?;
        let r = load::at_rate(&broker, &requests, 16, rate, duration).await?;
        let m1 = self.op.metrics().await?;
        let issued = harness::metric_sum(&m1, "agentauth_broker_requests_total", &[("outcome", "issued")])
            - harness::metric_sum(&m0, "agentauth_broker_requests_total", &[("outcome", "issued")]);
        let what = format!(
            "POST /token on a cache hit at {rate:.0} req/s (open loop, {} accounts, {:.0} s; {issued:.0} issued, sent at most {:.1} ms late)",
            n,
            r.seconds,
            r.late_ms.unwrap_or(f64::NAN)
        );
        self.load_rows(
            "9. broker",
            (&what, "POST /token latency p50 / p99 at that rate"),
            &r,
            (&base, "/healthz"),
            (rate * 0.99, 5.0),
        );
        let dir = self.env.cluster.dir().to_owned();
        let tool = self.p.load;
        let ceiling = load::run_requests(tool, &broker, &requests, connections, duration, &dir, None).await?;
        self.row(Row::new(
            "9. broker",
            &format!(
                "ceiling: as fast as {} with {connections} connections goes",
                ceiling.tool
            ),
            format!(
                "{:.0} req/s ({} errors), p50 / p99 {:.2} / {:.2} ms",
                ceiling.rps, ceiling.errors, ceiling.p50_ms, ceiling.p99_ms
            ),
            ceiling.rps,
        ));
        self.detail(
            "broker",
            json!({"token": r, "healthz": base, "ceiling": ceiling, "issued_counted_by_operator": issued}),
        );
        Ok(())
    }
}

/// A ServiceAccount with `use` on every account of `ns`, and its token for the broker's audience.
async fn agent_token(admin: &kube::Client, ns: &str) -> Res<String> {
    let e = |e: kube::Error| e.to_string();
    let pp = PostParams::default();
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "agent"}})).map_err(|e| e.to_string())?;
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
    sas.create(&pp, &sa).await.map_err(e)?;
    let role: Role = serde_json::from_value(json!({"metadata": {"name": "agent"},
        "rules": [{"apiGroups": ["agentauth.dev"], "resources": ["connectedaccounts"], "verbs": ["use"]}]}))
    .map_err(|e| e.to_string())?;
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(&pp, &role)
        .await
        .map_err(e)?;
    let binding: RoleBinding = serde_json::from_value(json!({"metadata": {"name": "agent"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "agent"},
        "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": ns}]}))
    .map_err(|e| e.to_string())?;
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&pp, &binding)
        .await
        .map_err(e)?;
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": ["agentauth.dev"], "expirationSeconds": 3600}});
    let issued: TokenRequest = sas
        .create_subresource("token", "agent", &pp, &request)
        .await
        .map_err(e)?;
    issued
        .status
        .and_then(|s| s.token)
        .ok_or_else(|| "no token issued".into())
}
