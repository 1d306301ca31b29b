//! Durations in specs (`30m`, `1h30m`, `45s`, `500ms`), parsed when an object is read, so that a
//! value that cannot be used never reaches a controller and no reader falls back to a default
//! in silence.
//!
//! The schema pattern admits exactly what the parser (jiff's friendly format, restricted to `h`,
//! `m`, `s`, `ms`, largest unit first, each once) accepts: the API server refuses the rest with a
//! message, and CEL's `duration()` reads every admitted value the same way.

use std::borrow::Cow;
use std::str::FromStr;

use jiff::SignedDuration;

/// The schema pattern of every duration field.
pub const DURATION_PATTERN: &str = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?$";

/// A duration as written in a spec, with its parsed value. Serializes as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duration {
    text: String,
    value: SignedDuration,
}

/// Why a text is not a spec duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {0:?}: use hours, minutes, seconds or milliseconds, largest first (`1h30m`, `45s`, `500ms`)"
)]
pub struct InvalidDuration(String);

impl Duration {
    /// The value.
    pub fn get(&self) -> SignedDuration {
        self.value
    }

    /// The value as a `std` duration (spec durations are never negative).
    pub fn to_std(&self) -> std::time::Duration {
        self.value.unsigned_abs()
    }

    /// As written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for Duration {
    type Err = InvalidDuration;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let units_ok = s.len() >= 2
            && s.len() <= 32
            && s.bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'h' | b'm' | b's'))
            && s.as_bytes().first().is_some_and(u8::is_ascii_digit);
        let value = units_ok
            .then(|| s.parse::<SignedDuration>().ok())
            .flatten()
            .ok_or_else(|| InvalidDuration(s.chars().take(40).collect()))?;
        Ok(Duration {
            text: s.to_owned(),
            value,
        })
    }
}

impl std::fmt::Display for Duration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl serde::Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "minLength": 2,
            "maxLength": 32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_pattern_admits_and_nothing_else() {
        let pattern = regex::Regex::new(DURATION_PATTERN).unwrap();
        for ok in ["1h30m", "45s", "500ms", "90m", "24h", "1m30s500ms", "0s", "720h"] {
            assert!(pattern.is_match(ok), "{ok}");
            assert!(ok.parse::<Duration>().is_ok(), "{ok}");
        }
        for bad in [
            "soon", "30m1h", "1h1h", "5", "", "1H", "1.5h", "1h 30m", "-5s", "1d", "PT1H",
        ] {
            let admitted = pattern.is_match(bad) && bad.len() >= 2;
            assert!(!admitted, "the schema admits {bad:?}");
            assert!(bad.parse::<Duration>().is_err(), "{bad}");
        }
        let d: Duration = "1h30m".parse().unwrap();
        assert_eq!(d.get(), SignedDuration::from_secs(5400));
        assert_eq!(serde_json::to_value(&d).unwrap(), serde_json::json!("1h30m"));
        assert!(serde_json::from_value::<Duration>(serde_json::json!("30m1h")).is_err());
    }
}
