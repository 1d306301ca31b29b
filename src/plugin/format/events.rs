//! The account's Events, from either Events API, and the table `status` prints of the latest.

use jiff::Timestamp;
use k8s_openapi::api::{core::v1 as core, events::v1 as events};
use kube::ResourceExt;

use super::human::human_duration;
use crate::api::ConnectedAccount;

/// How many Events `status` shows.
pub const EVENTS_SHOWN: usize = 5;

/// One Event about the account, from either Events API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLine {
    pub type_: String,
    pub reason: String,
    /// When it last happened.
    pub last_seen: Option<Timestamp>,
    /// How often it happened (series count).
    pub count: i32,
    pub message: String,
}

/// The account's Events among `list` (events.k8s.io/v1): those regarding a ConnectedAccount of this
/// name and, when both are known, this UID (not a deleted namesake).
pub fn events_from_v1(account: &ConnectedAccount, list: &[events::Event]) -> Vec<EventLine> {
    list.iter()
        .filter(|e| e.regarding.as_ref().is_some_and(|r| regards(account, r)))
        .map(|e| {
            let series = e.series.as_ref();
            let last_seen = series
                .map(|s| s.last_observed_time.0)
                .or_else(|| e.event_time.as_ref().map(|t| t.0))
                .or_else(|| e.deprecated_last_timestamp.as_ref().map(|t| t.0));
            let count = series.map(|s| s.count).or(e.deprecated_count);
            line(&e.metadata, [&e.type_, &e.reason, &e.note], last_seen, count)
        })
        .collect()
}

/// [`events_from_v1`] for core/v1 Events (clusters without events.k8s.io/v1).
pub fn events_from_core(account: &ConnectedAccount, list: &[core::Event]) -> Vec<EventLine> {
    list.iter()
        .filter(|e| regards(account, &e.involved_object))
        .map(|e| {
            let series = e.series.as_ref();
            let last_seen = series
                .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
                .or_else(|| e.last_timestamp.as_ref().map(|t| t.0))
                .or_else(|| e.event_time.as_ref().map(|t| t.0));
            let count = series.and_then(|s| s.count).or(e.count);
            line(&e.metadata, [&e.type_, &e.reason, &e.message], last_seen, count)
        })
        .collect()
}

/// One line from an Event of either API: `[type, reason, message]`, its last sighting (else its
/// creation) and its count (else 1).
fn line(
    meta: &kube::api::ObjectMeta,
    [type_, reason, message]: [&Option<String>; 3],
    last_seen: Option<jiff::Timestamp>,
    count: Option<i32>,
) -> EventLine {
    EventLine {
        type_: type_.clone().unwrap_or_default(),
        reason: reason.clone().unwrap_or_default(),
        last_seen: last_seen.or_else(|| meta.creation_timestamp.as_ref().map(|t| t.0)),
        count: count.unwrap_or(1),
        message: message.clone().unwrap_or_default(),
    }
}

fn regards(account: &ConnectedAccount, r: &core::ObjectReference) -> bool {
    let uid_matches = match (r.uid.as_deref(), account.metadata.uid.as_deref()) {
        (Some(a), Some(b)) if !a.is_empty() => a == b,
        _ => true,
    };
    r.name.as_deref() == Some(account.name_any().as_str())
        && r.kind.as_deref().is_none_or(|k| k == "ConnectedAccount")
        && uid_matches
}

/// The most recent `n` Events, oldest first (the order `kubectl describe` uses).
pub fn recent_events(mut events: Vec<EventLine>, n: usize) -> Vec<EventLine> {
    events.sort_by_key(|e| e.last_seen);
    let skip = events.len().saturating_sub(n);
    events.split_off(skip)
}

pub(super) fn events_table(events: &[EventLine], now: Timestamp) -> String {
    let rows: Vec<[String; 4]> = events
        .iter()
        .map(|e| {
            let age = e
                .last_seen
                .map(|t| human_duration(now.duration_since(t)))
                .unwrap_or_else(|| "<unknown>".into());
            let age = if e.count > 1 {
                format!("{age} (x{})", e.count)
            } else {
                age
            };
            [
                e.type_.clone(),
                e.reason.clone(),
                age,
                e.message.split_whitespace().collect::<Vec<_>>().join(" "),
            ]
        })
        .collect();
    let header = ["TYPE", "REASON", "AGE", "MESSAGE"].map(str::to_owned);
    let mut widths = [0usize; 3];
    for r in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&header).chain(&rows) {
        let line = format!(
            "  {:<w0$}  {:<w1$}  {:<w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_filtered_to_the_account_and_the_latest_five_kept() {
        let a = active();
        let lines = events_from_v1(&a, &v1_events());
        let reasons: Vec<&str> = lines.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(reasons, ["LinkIssued", "Refreshed", "RefreshRejected"]);
        assert_eq!(lines[1].count, 3);
        assert_eq!(lines[1].last_seen, Some("2026-05-01T09:45:00Z".parse().unwrap()));

        let many: Vec<EventLine> = (0..8)
            .rev()
            .map(|i| EventLine {
                type_: "Normal".into(),
                reason: format!("R{i}"),
                last_seen: Some(Timestamp::from_second(1_000 + i).unwrap()),
                count: 1,
                message: String::new(),
            })
            .collect();
        let kept: Vec<String> = recent_events(many, EVENTS_SHOWN)
            .into_iter()
            .map(|e| e.reason)
            .collect();
        assert_eq!(kept, ["R3", "R4", "R5", "R6", "R7"]);
    }

    #[test]
    fn core_events_are_read_too() {
        let a = active();
        let list: Vec<core::Event> = serde_json::from_value(json!([
            {"metadata": {"name": "e1"}, "type": "Warning", "reason": "RevocationFailed",
             "message": "revocation endpoint answered 500", "count": 2,
             "lastTimestamp": "2026-05-01T09:58:00Z",
             "involvedObject": {"kind": "ConnectedAccount", "name": "alice", "uid": "uid-1"}},
            {"metadata": {"name": "e2"}, "type": "Normal", "reason": "Scheduled", "message": "x",
             "involvedObject": {"kind": "Pod", "name": "alice"}},
        ]))
        .unwrap();
        assert_eq!(
            events_from_core(&a, &list),
            vec![EventLine {
                type_: "Warning".into(),
                reason: "RevocationFailed".into(),
                last_seen: Some("2026-05-01T09:58:00Z".parse().unwrap()),
                count: 2,
                message: "revocation endpoint answered 500".into(),
            }]
        );
    }
}
