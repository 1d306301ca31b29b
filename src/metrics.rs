//! Prometheus metrics, served on the admin port at `/metrics`.
//!
//! Labels are bounded: namespace, Connection name, state, result, route and status class. Series
//! per account (labelled by the account's namespace and name) exist only with
//! `--metrics-account-labels` ([`Metrics::with_account_labels`]): they grow with the number of
//! accounts and name every tenant's users, so large installs leave them off and keep the
//! aggregates. No label or value ever carries credential material.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::AccountState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccountLabels {
    pub namespace: String,
    pub connection: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccountRef {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefreshLabels {
    pub namespace: String,
    pub connection: String,
    pub result: RefreshResult,
}

/// How a refresh ended, as the `result` label of `agentauth_refreshes_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum RefreshResult {
    /// New tokens were stored.
    Success,
    /// The provider rejected the grant: the user must authorize again.
    Rejected,
    /// Answered with an error, or never sent: the token was not spent.
    Failed,
    /// Sent, and no usable answer: the provider may have rotated the token.
    NoAnswer,
}

impl RefreshResult {
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshResult::Success => "success",
            RefreshResult::Rejected => "rejected",
            RefreshResult::Failed => "failed",
            RefreshResult::NoAnswer => "no_answer",
        }
    }
}

impl EncodeLabelValue for RefreshResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    pub namespace: String,
    pub connection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: String,
    pub category: String,
}

/// The gateway's latency label: its own type, not the controllers' `controller=` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route template, e.g. `/connect/{token}` (never the token).
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route template, e.g. `/connect/{token}` (never the token).
    pub route: String,
    pub status: u16,
}

/// The broker's decision label: one of a fixed set of outcomes, never a name or token.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `issued`, `invalid_request`, `unauthenticated`, `invalid_target`, `access_denied`,
    /// `not_active` or `unavailable`.
    pub outcome: &'static str,
}

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    accounts: Family<AccountLabels, Gauge>,
    known: Mutex<HashMap<String, AccountLabels>>,
    /// Per account; `None` unless account labels were asked for.
    token_expiry: Option<Family<AccountRef, Gauge>>,
    refreshes: Family<RefreshLabels, Counter>,
    outcome_unknown: Family<ConnectionLabels, Counter>,
    reconcile_duration: Family<ReconcileLabels, Histogram>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabels, Histogram>,
    broker_requests: Family<OutcomeLabels, Counter>,
    broker_duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The aggregate metrics only (the default).
    pub fn new() -> Self {
        Self::with_account_labels(false)
    }

    /// With `per_account`, also the series labelled by account (`--metrics-account-labels`).
    pub fn with_account_labels(per_account: bool) -> Self {
        let mut registry = Registry::with_prefix("agentauth");
        let accounts = Family::<AccountLabels, Gauge>::default();
        registry.register(
            "accounts",
            "ConnectedAccounts by namespace, connection and state",
            accounts.clone(),
        );
        let token_expiry = per_account.then(|| {
            let family = Family::<AccountRef, Gauge>::default();
            registry.register(
                "token_expiry_timestamp_seconds",
                "When each account's access token expires (Unix time)",
                family.clone(),
            );
            family
        });
        let refreshes = Family::<RefreshLabels, Counter>::default();
        registry.register("refreshes", "Token refresh attempts by result", refreshes.clone());
        let outcome_unknown = Family::<ConnectionLabels, Counter>::default();
        registry.register(
            "refresh_outcome_unknown",
            "Refreshes whose outcome stayed unknown, so that the user must authorize again",
            outcome_unknown.clone(),
        );
        let reconcile_duration = Family::<ReconcileLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 14))
        });
        registry.register(
            "reconcile_duration_seconds",
            "Time per reconcile",
            reconcile_duration.clone(),
        );
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciles by error category",
            reconcile_errors.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "gateway_requests",
            "Gateway requests by route and status",
            requests.clone(),
        );
        let request_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        registry.register(
            "gateway_request_duration_seconds",
            "Gateway latency by route",
            request_duration.clone(),
        );
        let broker_requests = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "broker_requests",
            "Token broker decisions by outcome",
            broker_requests.clone(),
        );
        let broker_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "broker_request_duration_seconds",
            "Token broker latency",
            broker_duration.clone(),
        );
        Self {
            registry,
            broker_requests,
            broker_duration,
            accounts,
            known: Mutex::default(),
            token_expiry,
            refreshes,
            outcome_unknown,
            reconcile_duration,
            reconcile_errors,
            requests,
            request_duration,
        }
    }

    /// Records an account's current state (moving it between state series).
    pub fn account_state(
        &self,
        uid: &str,
        namespace: &str,
        name: &str,
        connection: &str,
        state: AccountState,
        expires_at: Option<i64>,
    ) {
        let labels = AccountLabels {
            namespace: namespace.to_owned(),
            connection: connection.to_owned(),
            state: state_name(state),
        };
        if let Ok(mut known) = self.known.lock() {
            match known.insert(uid.to_owned(), labels.clone()) {
                Some(old) if old == labels => {}
                Some(old) => {
                    self.accounts.get_or_create(&old).dec();
                    self.accounts.get_or_create(&labels).inc();
                }
                None => {
                    self.accounts.get_or_create(&labels).inc();
                }
            }
        }
        let Some(token_expiry) = &self.token_expiry else {
            return;
        };
        let key = AccountRef {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        match expires_at {
            Some(t) => {
                token_expiry.get_or_create(&key).set(t);
            }
            None => {
                token_expiry.remove(&key);
            }
        }
    }

    /// Counts one broker decision and its latency.
    pub fn broker_request(&self, outcome: &'static str, elapsed: Duration) {
        self.broker_requests
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        self.broker_duration.observe(elapsed.as_secs_f64());
    }

    /// Forgets a deleted account.
    pub fn account_deleted(&self, uid: &str, namespace: &str, name: &str) {
        if let Ok(mut known) = self.known.lock()
            && let Some(old) = known.remove(uid)
        {
            self.accounts.get_or_create(&old).dec();
        }
        if let Some(token_expiry) = &self.token_expiry {
            token_expiry.remove(&AccountRef {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            });
        }
    }

    pub fn refresh(&self, namespace: &str, connection: &str, result: RefreshResult) {
        let labels = RefreshLabels {
            namespace: namespace.to_owned(),
            connection: connection.to_owned(),
            result,
        };
        self.refreshes.get_or_create(&labels).inc();
    }

    /// An account's refresh token could not be spent again safely (strict rotation).
    pub fn refresh_outcome_unknown(&self, namespace: &str, connection: &str) {
        let labels = ConnectionLabels {
            namespace: namespace.to_owned(),
            connection: connection.to_owned(),
        };
        self.outcome_unknown.get_or_create(&labels).inc();
    }

    pub fn reconciled(&self, controller: &str, took: Duration, error_category: Option<&str>) {
        self.reconcile_duration
            .get_or_create(&ReconcileLabels {
                controller: controller.to_owned(),
            })
            .observe(took.as_secs_f64());
        if let Some(category) = error_category {
            let labels = ErrorLabels {
                controller: controller.to_owned(),
                category: category.to_owned(),
            };
            self.reconcile_errors.get_or_create(&labels).inc();
        }
    }

    pub fn request(&self, route: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                status,
            })
            .inc();
        self.request_duration
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

fn state_name(state: AccountState) -> String {
    state.as_str().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_account_series_only_with_the_flag() {
        for per_account in [false, true] {
            let m = Metrics::with_account_labels(per_account);
            m.account_state(
                "u1",
                "ns",
                "alice",
                "gmail",
                AccountState::Active,
                Some(1_800_000_000),
            );
            m.refresh("ns", "gmail", RefreshResult::Success);
            let text = m.render();
            assert_eq!(
                text.contains(r#"name="alice""#),
                per_account,
                "account labels with per_account={per_account}: {text}"
            );
            assert_eq!(
                text.contains("agentauth_token_expiry_timestamp_seconds"),
                per_account
            );
            // The aggregates are there either way.
            assert!(
                text.contains(r#"agentauth_accounts{namespace="ns",connection="gmail",state="ACTIVE"} 1"#),
                "{text}"
            );
            assert!(text.contains(
                r#"agentauth_refreshes_total{namespace="ns",connection="gmail",result="success"} 1"#
            ));
        }
    }

    #[test]
    fn accounts_move_between_state_series_and_vanish_on_delete() {
        let m = Metrics::with_account_labels(true);
        m.account_state("u1", "ns", "alice", "gmail", AccountState::PendingAuth, None);
        m.account_state(
            "u1",
            "ns",
            "alice",
            "gmail",
            AccountState::Active,
            Some(1_800_000_000),
        );
        let text = m.render();
        assert!(
            text.contains(r#"agentauth_accounts{namespace="ns",connection="gmail",state="PENDING_AUTH"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"agentauth_accounts{namespace="ns",connection="gmail",state="ACTIVE"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"agentauth_token_expiry_timestamp_seconds{namespace="ns",name="alice"} 1800000000"#
            )
        );
        m.account_deleted("u1", "ns", "alice");
        let text = m.render();
        assert!(text.contains(r#"state="ACTIVE"} 0"#));
        assert!(!text.contains("token_expiry_timestamp_seconds{"));
    }
}
