//! Human durations as users write them in config files and CRDs: `90s`, `15m`, `24h`, `1h30m`, `7d`.

use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a duration like 90s, 15m, 24h, 1h30m or 7d")]
pub struct DurationError(pub String);

pub fn parse(s: &str) -> Result<Duration, DurationError> {
    let err = || DurationError(s.to_owned());
    let s = s.trim();
    if s.is_empty() {
        return Err(err());
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(err()),
        };
        let n: u64 = number.parse().map_err(|_| err())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(err)?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(err());
    }
    Ok(Duration::from_secs(total))
}

/// Serde adapter for optional duration fields written as strings.
pub mod serde_opt {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let raw: Option<String> = Option::deserialize(d)?;
        raw.map(|s| super::parse(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(604_800)));
        for bad in ["", "10", "h", "1.5h", "-1h", "10x", "1h 30m"] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse("99999999999999999999d").is_err());
    }
}
