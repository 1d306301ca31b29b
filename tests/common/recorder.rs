//! An attacker's (or an internal service's) endpoint for the tenancy tests: the shared recording
//! server ([`agentauth_testcluster::recorder`]), which counts every connection and keeps every
//! byte it was sent, answering every request with a plausible token response (plus a banner in
//! its body), so that a leak or a read channel would show up in what the operator stores or
//! reports.
#![allow(dead_code)]

pub use agentauth_testcluster::recorder::Recorder;
use agentauth_testcluster::recorder::{Answer, Reply};

/// Text in every answer; it must never appear in status, Events or pages.
pub const BANNER: &str = "INTERNAL-BANNER-7731";

/// Listens on `ip` (`127.0.0.1` is on the test operator's egress allowlist; `127.0.0.2` is not).
pub async fn attacker(ip: &str) -> Recorder {
    let body = format!(
        r#"{{"access_token":"attacker-{BANNER}","token_type":"Bearer","expires_in":3600,"refresh_token":"x","error_description":"{BANNER}"}}"#
    );
    let reply = Reply::body(200, "application/json", body).header("connection", "close");
    Recorder::start(&format!("{ip}:0"), Answer::canned(reply))
        .await
        .unwrap()
}
