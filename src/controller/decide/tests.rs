use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::api::{ConnectedAccount, ConnectedAccountStatus};
use crate::store::{FlowError, Record, TokenSet};

pub(super) fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + s).unwrap()
}

pub(super) fn account() -> ConnectedAccount {
    let mut a: ConnectedAccount = serde_json::from_value(serde_json::json!({
        "apiVersion": "agentauth.dev/v1alpha1", "kind": "ConnectedAccount",
        "metadata": {"name": "alice", "namespace": "ns", "uid": "u-1", "generation": 1},
        "spec": {"connectionRef": {"name": "gmail"}, "identifier": "alice@example.com"}
    }))
    .unwrap();
    a.status = Some(ConnectedAccountStatus::default());
    a
}

pub(super) fn conn() -> ConnectionView {
    ConnectionView {
        link_ttl: SignedDuration::from_hours(24),
        refresh_before: None,
        scopes: vec!["email".into()],
        source: Source::Link,
        grant: None,
        rotation: Rotation::Strict,
        refresh_timeout: SignedDuration::from_secs(60),
        delivery: None,
        platform: false,
    }
}

pub(super) fn tokens(obtained: i64, lifetime: i64) -> TokenSet {
    TokenSet {
        access_token: "a".into(),
        refresh_token: Some("r".into()),
        token_type: "Bearer".into(),
        expires_at: Some(t(obtained + lifetime)),
        scopes: vec!["email".into()],
        obtained_at: t(obtained),
        metadata: BTreeMap::new(),
        ..Default::default()
    }
}

pub(super) fn link(nonce: &str, exp: i64) -> LinkClaims {
    LinkClaims {
        ns: "ns".into(),
        name: "alice".into(),
        uid: "u-1".into(),
        nonce: nonce.into(),
        exp: t(exp).as_second(),
    }
}

pub(super) struct Case {
    pub account: ConnectedAccount,
    pub conn: Result<ConnectionView, ConnectionIssue>,
    pub record: Record,
    pub link: Option<LinkClaims>,
    pub secret: Ownership,
    pub secret_current: bool,
    pub failure: Option<RefreshFailure>,
    pub attempt: AttemptState,
    pub now: Timestamp,
}

impl Case {
    pub(super) fn new() -> Self {
        Case {
            account: account(),
            conn: Ok(conn()),
            record: Record::default(),
            link: None,
            secret: Ownership::Missing,
            secret_current: false,
            failure: None,
            attempt: AttemptState::Settled,
            now: t(0),
        }
    }
    pub(super) fn observed(&self) -> Facts<'_> {
        Facts {
            account: &self.account,
            connection: self.conn.as_ref(),
            record: &self.record,
            link: self.link.as_ref(),
            secret: self.secret,
            secret_current: self.secret_current,
            refresh_failure: self.failure.as_ref(),
            attempt: self.attempt,
            now: self.now,
        }
    }
    pub(super) fn plan(&self) -> Plan {
        decide(&self.observed())
    }
}

pub(super) fn ready_reason(p: &Plan) -> Reason {
    p.conditions.iter().find(|c| c.type_ == "Ready").unwrap().reason
}

#[test]
fn new_account_gets_a_link_and_waits() {
    let p = Case::new().plan();
    assert_eq!(p.state, AccountState::PendingAuth);
    assert_eq!(
        p.link,
        LinkPlan::Issue {
            expires_at: t(0) + SignedDuration::from_hours(24)
        }
    );
    assert_eq!(ready_reason(&p), Reason::AwaitingAuthorization);
    assert_eq!(p.requeue_after, Some(Duration::from_secs(24 * 3600)));
}

#[test]
fn a_valid_link_is_kept_and_an_expired_one_replaced() {
    let mut c = Case::new();
    c.link = Some(link("n1", 100));
    assert_eq!(c.plan().link, LinkPlan::Keep);
    c.now = t(100);
    assert!(matches!(c.plan().link, LinkPlan::Issue { .. }));
}

#[test]
fn completed_link_makes_the_account_active_and_publishes() {
    let mut c = Case::new();
    c.link = Some(link("n1", 100));
    c.record = Record {
        tokens: Some(tokens(0, 3600)),
        completed_link: Some("n1".into()),
        ..Default::default()
    };
    let p = c.plan();
    assert_eq!(p.state, AccountState::Active);
    assert_eq!(p.link, LinkPlan::Clear);
    assert!(p.publish);
    assert_eq!(ready_reason(&p), Reason::Active);
    assert!(p.next_refresh_at.unwrap() < t(3600));
    c.secret = Ownership::Ours;
    c.secret_current = true;
    assert!(!c.plan().publish, "nothing to write when the Secret is current");
}

#[test]
fn broker_delivery_writes_no_secret_removes_ours_and_ignores_foreign_names() {
    use crate::api::Delivery;
    let mut c = Case::new();
    c.record = Record {
        tokens: Some(tokens(0, 3600)),
        ..Default::default()
    };
    c.conn = Ok(ConnectionView {
        delivery: Some(Delivery::Broker),
        ..conn()
    });
    let p = c.plan();
    assert_eq!(
        (p.state, p.delivery, p.publish, p.unpublish),
        (AccountState::Active, Delivery::Broker, false, false)
    );
    c.secret = Ownership::Ours;
    assert!(
        c.plan().unpublish,
        "a Secret written before the switch to Broker goes"
    );
    c.secret = Ownership::Foreign;
    assert_eq!(
        c.plan().state,
        AccountState::Active,
        "a foreign Secret of the name is none of its business"
    );
    c.now = t(3590);
    assert!(refresh_due(&c.observed()), "and does not stop renewal");
    c.now = t(0);
    c.account.spec.delivery = Some(Delivery::SecretAndBroker);
    assert_eq!(
        c.plan().state,
        AccountState::Error,
        "the account's own delivery wins and needs the Secret"
    );
    c.secret = Ownership::Missing;
    assert!(c.plan().publish);
}

#[test]
fn refresh_is_due_at_the_scheduled_time_and_not_during_backoff() {
    let mut c = Case::new();
    c.record = Record {
        tokens: Some(tokens(0, 3600)),
        ..Default::default()
    };
    assert!(!refresh_due(&c.observed()));
    c.now = t(2500);
    assert!(refresh_due(&c.observed()));
    c.failure = Some(RefreshFailure {
        message: "503".into(),
        attempts: 1,
        retry_at: t(2510),
    });
    assert!(!refresh_due(&c.observed()));
    let p = c.plan();
    assert_eq!(
        p.state,
        AccountState::Active,
        "still ACTIVE while the token is valid"
    );
    assert_eq!(p.requeue_after, Some(Duration::from_secs(10)));
    assert!(p.conditions.iter().any(|c| c.type_ == TOKEN_REFRESH && !c.ok));
}

#[test]
fn rejected_refresh_means_expired_with_a_new_link() {
    let mut c = Case::new();
    c.record = Record {
        tokens: Some(tokens(0, 60)),
        rejected: true,
        ..Default::default()
    };
    let p = c.plan();
    assert_eq!(p.state, AccountState::Expired);
    assert!(matches!(p.link, LinkPlan::Issue { .. }));
    assert_eq!(ready_reason(&p), Reason::RefreshRejected);
    assert!(!p.publish);
}

#[test]
fn disconnected_removes_credentials_and_clears_the_link() {
    let mut c = Case::new();
    c.account.spec.disconnected = Some(true);
    c.record = Record {
        tokens: Some(tokens(0, 60)),
        ..Default::default()
    };
    c.link = Some(link("n1", 100));
    let p = c.plan();
    assert_eq!(p.state, AccountState::Disconnected);
    assert!(p.remove_credentials);
    assert_eq!(p.link, LinkPlan::Clear);
}

#[test]
fn connection_problems_and_foreign_secrets_are_errors() {
    let mut c = Case::new();
    c.conn = Err(ConnectionIssue {
        reason: Reason::ConnectionNotFound,
        message: "no Connection gmail".into(),
    });
    assert_eq!(c.plan().state, AccountState::Error);
    assert_eq!(ready_reason(&c.plan()), Reason::ConnectionNotFound);
    let mut c = Case::new();
    c.secret = Ownership::Foreign;
    c.record = Record {
        tokens: Some(tokens(0, 60)),
        ..Default::default()
    };
    assert_eq!(ready_reason(&c.plan()), Reason::SecretConflict);
    assert!(!c.plan().publish);
}

#[test]
fn added_scopes_keep_the_account_active_but_not_ready_with_a_link() {
    let mut c = Case::new();
    c.record = Record {
        tokens: Some(tokens(0, 3600)),
        ..Default::default()
    };
    c.conn.as_mut().unwrap().scopes.push("calendar".into());
    let p = c.plan();
    assert_eq!(p.state, AccountState::Active);
    assert_eq!(ready_reason(&p), Reason::ScopesChanged);
    assert!(matches!(p.link, LinkPlan::Issue { .. }));
}

#[test]
fn reauthorize_annotation_issues_a_fresh_link_once() {
    let mut c = Case::new();
    c.record = Record {
        tokens: Some(tokens(0, 3600)),
        ..Default::default()
    };
    c.link = Some(link("n1", 100));
    c.account.metadata.annotations = Some(BTreeMap::from([(
        REAUTHORIZE_ANNOTATION.to_owned(),
        "1".to_owned(),
    )]));
    assert!(
        matches!(c.plan().link, LinkPlan::Issue { .. }),
        "even a valid link is replaced"
    );
    c.account.status.as_mut().unwrap().reauthorize_request = Some("1".into());
    assert_eq!(c.plan().link, LinkPlan::Keep);
    assert_eq!(c.plan().state, AccountState::Active);
    c.record.completed_link = Some("n1".into());
    assert_eq!(c.plan().link, LinkPlan::Clear);
}

#[test]
fn a_declined_authorization_is_shown_on_the_current_link_only() {
    let mut c = Case::new();
    c.link = Some(link("n1", 100));
    c.record.flow_error = Some(FlowError {
        reason: Reason::AccessDenied,
        message: "the user declined".into(),
        link: "n1".into(),
    });
    assert_eq!(ready_reason(&c.plan()), Reason::AccessDenied);
    c.link = Some(link("n2", 100));
    assert_eq!(ready_reason(&c.plan()), Reason::AwaitingAuthorization);
}

fn source(src: Source) -> ConnectionView {
    ConnectionView {
        source: src,
        ..conn()
    }
}

#[test]
fn an_operator_obtained_credential_needs_no_link_and_is_due_when_missing() {
    let mut c = Case::new();
    c.conn = Ok(source(Source::Operator));
    assert!(refresh_due(&c.observed()), "nothing yet: obtain now");
    let p = c.plan();
    assert_eq!((p.state, p.link.clone()), (AccountState::Error, LinkPlan::Clear));
    assert_eq!(ready_reason(&p), Reason::CredentialUnavailable);

    // A failure waits for its retry time, and the account says why.
    c.failure = Some(RefreshFailure {
        message: "invalid_client".into(),
        attempts: 2,
        retry_at: t(10),
    });
    assert!(!refresh_due(&c.observed()));
    let p = c.plan();
    assert_eq!(p.requeue_after, Some(Duration::from_secs(10)));
    assert!(p.conditions[0].message.contains("invalid_client"));
    c.now = t(10);
    assert!(refresh_due(&c.observed()));

    // Obtained: ACTIVE, renewed without a refresh token a third of the lifetime before expiry.
    c.failure = None;
    c.now = t(0);
    c.record.tokens = Some(TokenSet {
        refresh_token: None,
        ..tokens(0, 3600)
    });
    let p = c.plan();
    assert_eq!(
        (p.state, p.link.clone(), p.publish),
        (AccountState::Active, LinkPlan::Clear, true)
    );
    let at = p.next_refresh_at.unwrap();
    assert!(at > t(2300) && at <= t(2400), "{at}");
    c.now = t(2400);
    assert!(refresh_due(&c.observed()));
}

#[test]
fn a_credential_from_a_secret_ref_is_rechecked_and_never_linked() {
    let mut c = Case::new();
    c.conn = Ok(source(Source::SecretRef));
    c.record.tokens = Some(TokenSet {
        expires_at: None,
        refresh_token: None,
        ..tokens(0, 0)
    });
    c.secret_current = true;
    let p = c.plan();
    assert_eq!((p.state, p.link.clone()), (AccountState::Active, LinkPlan::Clear));
    assert_eq!(p.requeue_after, Some(SECRET_REF_RECHECK));
    assert!(!refresh_due(&c.observed()));
    assert!(
        p.conditions.iter().all(|c| c.type_ != TOKEN_REFRESH),
        "nothing renews"
    );
}

#[test]
fn a_pending_verification_holds_back_the_credential_until_it_expires() {
    let mut c = Case::new();
    c.record.completed_link = Some("n1".into());
    c.link = Some(link("n1", 3600));
    c.record.pending = Some(crate::store::PendingVerification {
        request: "r1".into(),
        tokens: tokens(0, 3600),
        grant: None,
        expires_at: t(900),
        confirmed: false,
    });
    let p = c.plan();
    assert_eq!(p.state, AccountState::PendingVerification);
    assert_eq!((p.link.clone(), p.publish), (LinkPlan::Clear, false));
    assert_eq!(p.requeue_after, Some(Duration::from_secs(900)));

    // Refused or expired: back to PENDING_AUTH with a new link and the reason.
    c.record.pending = None;
    c.link = None;
    c.record.flow_error = Some(FlowError {
        reason: Reason::VerificationFailed,
        message: "another user".into(),
        link: "n1".into(),
    });
    let p = c.plan();
    assert_eq!(p.state, AccountState::PendingAuth);
    assert!(matches!(p.link, LinkPlan::Issue { .. }));
    assert_eq!(ready_reason(&p), Reason::VerificationFailed);
}

#[test]
fn an_agent_secret_without_an_operator_copy_is_removed() {
    let mut c = Case::new();
    c.secret = Ownership::Ours;
    let p = c.plan();
    assert!(p.unpublish, "the copy is gone: the agent Secret goes too");
    assert_eq!(p.state, AccountState::PendingAuth);
    c.record.tokens = Some(tokens(0, 3600));
    assert!(!c.plan().unpublish);
    c.secret = Ownership::Missing;
    c.record.tokens = None;
    assert!(!c.plan().unpublish, "nothing to remove");
}

#[test]
fn a_moved_connection_asks_for_a_new_link_and_renews_only_under_the_same_client() {
    let pinned = crate::store::Grant {
        client_id: "c".into(),
        token_url: "https://idp.example.com/token".into(),
        ..Default::default()
    };
    let mut c = Case::new();
    c.record = Record {
        tokens: Some(tokens(0, 3600)),
        completed_link: Some("n1".into()),
        grant: Some(pinned.clone()),
        ..Default::default()
    };
    let moved = |client_id: &str, token_url: &str| {
        Ok(ConnectionView {
            grant: Some(crate::store::Grant {
                client_id: client_id.into(),
                token_url: token_url.into(),
                ..Default::default()
            }),
            ..conn()
        })
    };
    c.conn = moved("c", "https://attacker.example.net/token");
    let p = c.plan();
    assert_eq!(p.state, AccountState::Active);
    assert_eq!(ready_reason(&p), Reason::ConnectionChanged);
    assert!(matches!(p.link, LinkPlan::Issue { .. }));
    assert!(p.next_refresh_at.is_some(), "renewed at the pinned endpoint");
    c.conn = moved("other", &pinned.token_url);
    let p = c.plan();
    assert_eq!(p.next_refresh_at, None, "another client cannot renew this grant");
    assert_eq!(ready_reason(&p), Reason::ConnectionChanged);
}
