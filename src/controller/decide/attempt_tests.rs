//! Decisions around a refresh whose outcome is outstanding (see `controller::refresh`).

use jiff::SignedDuration;

use super::tests::{Case, conn, ready_reason, t, tokens};
use super::*;
use crate::store::Record;

/// An ACTIVE account whose refresh (due before 2400 s of 3600 s) was sent at 2900 s.
fn refreshing(attempt: AttemptState, rotation: Rotation) -> Case {
    let mut c = Case::new();
    c.record = Record {
        tokens: Some(tokens(0, 3600)),
        ..Default::default()
    };
    c.secret = Ownership::Ours;
    c.secret_current = true;
    c.conn = Ok(ConnectionView { rotation, ..conn() });
    c.attempt = attempt;
    c.now = t(3000);
    c
}

fn unknown(replay: bool) -> AttemptState {
    AttemptState::Unknown {
        started_at: t(2900),
        replay,
    }
}

fn refresh_reason(p: &Plan) -> Reason {
    p.conditions
        .iter()
        .find(|c| c.type_ == TOKEN_REFRESH)
        .unwrap()
        .reason
}

#[test]
fn a_strict_provider_is_never_sent_a_token_of_unknown_fate() {
    let c = refreshing(unknown(false), Rotation::Strict);
    assert!(!refresh_due(&c.observed()), "no replay");
    let p = c.plan();
    assert_eq!(p.state, AccountState::Active, "the access token still works");
    assert_eq!(ready_reason(&p), Reason::RefreshOutcomeUnknown);
    assert_eq!(refresh_reason(&p), Reason::RefreshOutcomeUnknown);
    assert!(matches!(p.link, LinkPlan::Issue { .. }), "a fresh link at once");
    assert_eq!(p.next_refresh_at, None);
    assert_eq!(p.requeue_after, Some(Duration::from_secs(600)), "turns at expiry");
    let mut later = refreshing(unknown(false), Rotation::Strict);
    later.now = t(3600);
    let p = later.plan();
    assert_eq!(p.state, AccountState::Expired);
    assert_eq!(ready_reason(&p), Reason::RefreshOutcomeUnknown);
}

#[test]
fn a_late_answer_still_being_read_is_treated_as_unknown_but_not_replayed() {
    let c = refreshing(AttemptState::Late, Rotation::Strict);
    assert!(!refresh_due(&c.observed()));
    assert_eq!(ready_reason(&c.plan()), Reason::RefreshOutcomeUnknown);
}

#[test]
fn a_grace_window_allows_one_replay_inside_it() {
    let window = Rotation::Grace(SignedDuration::from_mins(10));
    let c = refreshing(unknown(false), window);
    assert!(refresh_due(&c.observed()), "replay once inside the window");
    assert_eq!(ready_reason(&c.plan()), Reason::Active);
    assert!(
        !refresh_due(&refreshing(unknown(true), window).observed()),
        "only once"
    );
    assert_eq!(
        ready_reason(&refreshing(unknown(true), window).plan()),
        Reason::RefreshOutcomeUnknown
    );
    let mut outside = refreshing(unknown(false), window);
    outside.now = t(2900 + 600);
    assert!(!refresh_due(&outside.observed()), "not after the window");
}

#[test]
fn a_non_rotating_provider_is_replayed_freely() {
    let c = refreshing(unknown(true), Rotation::None);
    assert!(refresh_due(&c.observed()));
    assert_eq!(ready_reason(&c.plan()), Reason::Active);
}

#[test]
fn a_refresh_in_flight_is_not_started_again_and_turns_unknown_at_its_timeout() {
    let c = refreshing(AttemptState::Waiting { until: t(3060) }, Rotation::Strict);
    assert!(!refresh_due(&c.observed()));
    let p = c.plan();
    assert_eq!(ready_reason(&p), Reason::Active);
    assert_eq!(p.requeue_after, Some(Duration::from_secs(60)));
    let mut expired = refreshing(AttemptState::Waiting { until: t(4000) }, Rotation::Strict);
    expired.now = t(3600);
    let p = expired.plan();
    assert_eq!(
        p.state,
        AccountState::Expired,
        "the state turns at expiresAt while waiting"
    );
    assert_eq!(ready_reason(&p), Reason::TokenExpired);
}

#[test]
fn next_refresh_at_shows_the_next_attempt_while_retries_back_off() {
    let mut c = refreshing(AttemptState::Settled, Rotation::Strict);
    c.failure = Some(RefreshFailure {
        message: "the endpoint answered HTTP 503".into(),
        attempts: 2,
        retry_at: t(3010),
    });
    assert_eq!(c.plan().next_refresh_at, Some(t(3010)));
}

#[test]
fn an_expired_machine_credential_that_cannot_be_renewed_is_an_error_not_expired() {
    let mut c = refreshing(AttemptState::Settled, Rotation::Strict);
    c.conn = Ok(ConnectionView {
        source: Source::Operator,
        ..conn()
    });
    c.failure = Some(RefreshFailure {
        message: "the provider rejected the client (invalid_client)".into(),
        attempts: 3,
        retry_at: t(3700),
    });
    assert_eq!(c.plan().state, AccountState::Active, "while its token is valid");
    c.now = t(3600);
    let p = c.plan();
    assert_eq!(p.state, AccountState::Error);
    assert_eq!(ready_reason(&p), Reason::CredentialUnavailable);
    assert_eq!(p.link, LinkPlan::Clear, "no user can fix it");
}

#[test]
fn a_link_issued_for_an_unknown_outcome_is_withdrawn_once_the_answer_arrived() {
    let mut c = refreshing(AttemptState::Settled, Rotation::Strict);
    c.link = Some(super::tests::link("n1", 4000));
    let p = c.plan();
    assert_eq!(p.link, LinkPlan::Clear, "nothing left for the link to do");
    assert_eq!(ready_reason(&p), Reason::Active);
    // A link handed out for a re-authorization request stays until it is used.
    let mut asked = refreshing(AttemptState::Settled, Rotation::Strict);
    asked.link = Some(super::tests::link("n1", 4000));
    let annotations = [(crate::api::REAUTHORIZE_ANNOTATION.to_owned(), "1".to_owned())];
    asked.account.metadata.annotations = Some(annotations.into_iter().collect());
    asked.account.status.as_mut().unwrap().reauthorize_request = Some("1".into());
    assert_eq!(asked.plan().link, LinkPlan::Keep);
}
