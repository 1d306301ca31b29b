//! Kubernetes-style conditions (`type`, `status`, `reason`, `message`, `observedGeneration`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The condition every resource carries: is this object usable right now?
pub const READY: &str = "Ready";

/// Builds a condition; `last_transition_time` is filled in by [`merge`].
pub fn condition(
    type_: &str,
    ok: bool,
    reason: super::Reason,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: reason.as_str().to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
    }
}

/// Replaces the condition of the same type in `existing`, keeping its transition time when the
/// status did not change, so that re-applying an unchanged condition is a no-op.
pub fn merge(existing: &[Condition], mut new: Condition, now: jiff::Timestamp) -> Vec<Condition> {
    let mut out: Vec<Condition> = existing
        .iter()
        .filter(|c| c.type_ != new.type_)
        .cloned()
        .collect();
    new.last_transition_time = match existing.iter().find(|c| c.type_ == new.type_) {
        Some(old) if old.status == new.status => old.last_transition_time.clone(),
        _ => Time(now),
    };
    out.push(new);
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// The condition of the given type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_transition_time_when_status_is_unchanged() {
        let t0 = jiff::Timestamp::from_second(100).unwrap();
        let t1 = jiff::Timestamp::from_second(200).unwrap();
        let first = merge(
            &[],
            condition(
                READY,
                false,
                super::super::Reason::AwaitingAuthorization,
                "waiting",
                Some(1),
            ),
            t0,
        );
        let second = merge(
            &first,
            condition(
                READY,
                false,
                super::super::Reason::AwaitingAuthorization,
                "still waiting",
                Some(2),
            ),
            t1,
        );
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].last_transition_time.0, t0);
        assert_eq!(second[0].message, "still waiting");
        let third = merge(
            &second,
            condition(READY, true, super::super::Reason::Active, "ok", Some(2)),
            t1,
        );
        assert_eq!(third[0].last_transition_time.0, t1);
    }
}
