//! How values read in the plugin's output: durations the way kubectl prints ages, timestamps with
//! their distance from now, states and conditions as in the CRD.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::AccountState;

/// `ACTIVE`, `PENDING_AUTH`, ... as in the CRD; `None` before the operator wrote a status.
pub fn state_name(state: Option<AccountState>) -> Option<String> {
    state.map(|s| s.as_str().to_owned())
}

pub(super) fn condition_text(c: &Condition) -> String {
    format!("{} ({})", c.status, reason_message(&c.reason, &c.message))
}

pub(super) fn reason_message(reason: &str, message: &str) -> String {
    if message.is_empty() {
        reason.to_owned()
    } else {
        format!("{reason}: {message}")
    }
}

pub(super) fn time_text(t: Option<&Time>, now: Timestamp) -> String {
    let Some(Time(t)) = t else {
        return "<none>".into();
    };
    let when = t.strftime("%Y-%m-%dT%H:%M:%SZ");
    let d = t.duration_since(now);
    if d.is_negative() {
        format!("{when} ({} ago)", human_duration(-d))
    } else {
        format!("{when} (in {})", human_duration(d))
    }
}

/// A duration the way kubectl prints ages: `45s`, `3m20s`, `25m`, `5h10m`, `30h`, `3d4h`, `20d`, `1y30d`.
pub fn human_duration(d: SignedDuration) -> String {
    if d < SignedDuration::from_secs(-1) {
        return "<invalid>".into();
    }
    let seconds = d.as_secs().max(0);
    let (minutes, hours) = (seconds / 60, seconds / 3600);
    let days = hours / 24;
    let years = days / 365;
    let with_rest = |big: i64, unit: &str, rest: i64, rest_unit: &str| {
        if rest == 0 {
            format!("{big}{unit}")
        } else {
            format!("{big}{unit}{rest}{rest_unit}")
        }
    };
    if seconds < 120 {
        format!("{seconds}s")
    } else if minutes < 10 {
        with_rest(minutes, "m", seconds % 60, "s")
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        with_rest(hours, "h", minutes % 60, "m")
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        with_rest(days, "d", hours % 24, "h")
    } else if days < 365 * 2 {
        format!("{days}d")
    } else if days < 365 * 8 {
        with_rest(years, "y", days % 365, "d")
    } else {
        format!("{years}y")
    }
}

pub(super) fn ns_flag(namespace: &str) -> String {
    if namespace == "default" {
        String::new()
    } else {
        format!(" -n {namespace}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        let s = SignedDuration::from_secs;
        let cases = [
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (600, "10m"),
            (3 * 3600 - 1, "179m"),
            (3 * 3600 + 600, "3h10m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (2 * 86400 + 3600, "2d1h"),
            (8 * 86400, "8d"),
            (3 * 365 * 86400 + 86400, "3y1d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(s(secs)), want, "{secs}s");
        }
        assert_eq!(human_duration(s(-5)), "<invalid>");
        assert_eq!(human_duration(SignedDuration::from_millis(-500)), "0s");
    }
}
