//! Durations as people write them in configuration: `250ms`, `1.5s`, `6m`, `24h`.

use std::time::Duration;

/// Parses a number with a unit (`ms`, `s`, `m`, `h`); `None` for anything else.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    // Durations too long to represent are refused, not wrapped or panicked on.
    if !(secs.is_finite() && secs >= 0.0) {
        return None;
    }
    Duration::try_from_secs_f64(secs).ok()
}

/// For `#[serde(with = "stowage_provider::duration::serde")]` on a `Duration` field.
pub mod serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("{s:?} is not a duration like 90s, 6m or 250ms"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("6m"), Some(Duration::from_secs(360)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("6"), None);
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("99999999999999999999999h"), None);
        assert_eq!(parse_duration("1e400s"), None);
    }
}
