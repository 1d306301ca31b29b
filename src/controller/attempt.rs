//! Where an account's last refresh stands, and what the provider's rotation allows after a
//! refresh whose outcome is unknown (see [`super::refresh`]). Pure: the record, what this process
//! is waiting for, and the clock.

use jiff::{SignedDuration, Timestamp};

use crate::store::Record;

/// What the provider does with a refresh token that was already used: decides what follows a
/// refresh that was sent and never answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// Reuse revokes the grant: never replay.
    Strict,
    /// Reuse is accepted within the window after first use: replay once inside it.
    Grace(SignedDuration),
    /// Tokens are not rotated: replay freely.
    None,
}

/// Where the account's last refresh stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptState {
    /// No outcome is outstanding.
    Settled,
    /// This process is waiting for the answer; it counts as unknown from `until`.
    Waiting { until: Timestamp },
    /// Past the timeout, and the answer is still being read (strict providers): it may yet come.
    Late,
    /// Nobody waits for the answer any more (restart, failover, or the read ended without one).
    Unknown { started_at: Timestamp, replay: bool },
}

impl AttemptState {
    /// The refresh token's fate is unknown and sending it again could cost the grant: the user
    /// must re-authorize.
    pub fn stranded(self, rotation: Rotation, now: Timestamp) -> bool {
        match (self, rotation) {
            // Past the timeout only a strict provider's answer is still read; elsewhere the read
            // ends with the timeout and the rules for `Unknown` follow.
            (AttemptState::Late, Rotation::Strict) => true,
            (AttemptState::Unknown { .. }, Rotation::Strict) => true,
            (AttemptState::Unknown { started_at, replay }, Rotation::Grace(window)) => {
                replay || started_at + window <= now
            }
            _ => false,
        }
    }

    pub fn busy(self) -> bool {
        matches!(self, AttemptState::Waiting { .. } | AttemptState::Late)
    }
}

/// A refresh whose answer this process is still reading after the reconcile moved on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    pub attempt: Option<String>,
    /// From then on the outcome counts as unknown.
    pub until: Timestamp,
}

/// Where the account's last refresh stands, from its record and what this process is waiting for.
pub fn attempt_state(record: &Record, in_flight: Option<&InFlight>, now: Timestamp) -> AttemptState {
    let Some(attempt) = &record.attempt else {
        return match in_flight {
            // An attempt without an intent (non-rotating provider, machine credential).
            Some(f) if f.attempt.is_none() && f.until > now => AttemptState::Waiting { until: f.until },
            _ => AttemptState::Settled,
        };
    };
    match in_flight.filter(|f| f.attempt.as_deref() == Some(attempt.id.as_str())) {
        Some(f) if f.until > now => AttemptState::Waiting { until: f.until },
        Some(_) => AttemptState::Late,
        None => AttemptState::Unknown {
            started_at: attempt.started_at,
            replay: attempt.replay,
        },
    }
}
