//! When to try a request again and how long to wait: exponential backoff with jitter, or what
//! the registry asks for in `Retry-After` (seconds, or an HTTP date), within a ceiling.

use reqwest::header::{HeaderMap, RETRY_AFTER};
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries after the first.
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            first_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before try `attempt + 1`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(asked) = retry_after {
            return asked.min(self.max_delay);
        }
        let exponential = self.first_delay.saturating_mul(1 << attempt.min(16));
        let capped = exponential.min(self.max_delay);
        // Up to a quarter more, so that many copies refused at once do not return at once.
        let jitter = capped.mul_f64(fastrand_fraction() * 0.25);
        capped + jitter
    }
}

/// 429 Too Many Requests and the gateway answers of a registry that is restarting.
pub fn retried_status(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate_parse(value)?;
    Some(date.duration_since(SystemTime::now()).unwrap_or_default())
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form `Retry-After` dates take.
fn httpdate_parse(value: &str) -> Option<SystemTime> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let parsed = time::PrimitiveDateTime::parse(value, &format).ok()?;
    let unix = parsed.assume_utc().unix_timestamp();
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).ok()?))
}

fn fastrand_fraction() -> f64 {
    let mut byte = [0u8; 2];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut byte);
    f64::from(u16::from_le_bytes(byte)) / f64::from(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_the_ceiling_and_honours_retry_after() {
        let policy = RetryPolicy {
            attempts: 5,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        let d0 = policy.delay(0, None);
        let d3 = policy.delay(3, None);
        assert!(
            d0 >= Duration::from_millis(100) && d0 <= Duration::from_millis(125),
            "{d0:?}"
        );
        assert!(
            d3 >= Duration::from_millis(800) && d3 <= Duration::from_millis(1000),
            "{d3:?}"
        );
        assert!(policy.delay(10, None) <= Duration::from_millis(1250));
        assert_eq!(
            policy.delay(0, Some(Duration::from_secs(7))),
            Duration::from_secs(1)
        );
        assert_eq!(
            policy.delay(0, Some(Duration::from_millis(300))),
            Duration::from_millis(300)
        );
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(
            RETRY_AFTER,
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
        assert!(
            retried_status(429)
                && retried_status(503)
                && !retried_status(500)
                && !retried_status(404)
        );
    }
}
