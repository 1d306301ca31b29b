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
        let dir = self.env.cluster.dir().to_owned();
        let tool = self.p.load;
        let base = load::run(
            tool,
            &self.op.admin_url(),
            &["/healthz".to_owned()],
            connections,
            duration,
            &dir,
            None,
        )
        .await?;
        let m0 = self.op.metrics().await?;
        let r = load::run_requests(tool, &broker, &requests, connections, duration, &dir, None).await?;
        let m1 = self.op.metrics().await?;
        let issued = harness::metric_sum(&m1, "agentauth_broker_requests_total", &[("outcome", "issued")])
            - harness::metric_sum(&m0, "agentauth_broker_requests_total", &[("outcome", "issued")]);
        let what = format!(
            "POST /token on a cache hit, {n} accounts, {connections} connections, {:.0} s ({}; {issued:.0} issued)",
            r.seconds, r.tool
        );
        self.load_rows(
            "9. broker",
            (&what, "POST /token latency p50 / p99"),
            &r,
            (&base, "/healthz"),
            (2000.0, 5.0),
        );
        self.detail(
            "broker",
            json!({"token": r, "healthz": base, "issued_counted_by_operator": issued}),
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
