//! `bandwidthLimit`: a token bucket shared by every blob stream of a run, refilled at the
//! limit, holding at most one second's worth so that a pause is not followed by a burst.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Throttle {
    bytes_per_second: f64,
    bucket: Mutex<(f64, Instant)>,
}

impl Throttle {
    pub fn new(bytes_per_second: u64) -> Throttle {
        Throttle {
            bytes_per_second: bytes_per_second.max(1) as f64,
            bucket: Mutex::new((bytes_per_second as f64, Instant::now())),
        }
    }

    /// Waits until `bytes` may pass.
    pub async fn take(&self, bytes: usize) {
        let wait = {
            let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
            debit(&mut bucket, self.bytes_per_second, Instant::now(), bytes)
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Refills the bucket for the time since its last use, takes `bytes` from it and says how long
/// the caller must wait for the debt (a negative balance) to be paid back.
fn debit(bucket: &mut (f64, Instant), rate: f64, now: Instant, bytes: usize) -> Option<Duration> {
    let refill = now.saturating_duration_since(bucket.1).as_secs_f64() * rate;
    bucket.0 = (bucket.0 + refill).min(rate) - bytes as f64;
    bucket.1 = now;
    (bucket.0 < 0.0).then(|| Duration::from_secs_f64(-bucket.0 / rate))
}

/// `50Mi`, `1Gi`, `4096` as bytes.
pub fn parse_rate(text: &str) -> Option<u64> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, ""),
    };
    let factor: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => return None,
    };
    number
        .parse::<u64>()
        .ok()?
        .checked_mul(factor)
        .filter(|&r| r > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("50Mi"), Some(50 << 20));
        assert_eq!(parse_rate("4096"), Some(4096));
        assert_eq!(parse_rate("1Gi"), Some(1 << 30));
        assert_eq!(parse_rate("0"), None);
        assert_eq!(parse_rate("5MB"), None);
    }

    #[test]
    fn the_bucket_holds_back_what_exceeds_the_rate() {
        let start = Instant::now();
        let mut bucket = (1000.0, start);
        assert_eq!(debit(&mut bucket, 1000.0, start, 1000), None);
        let wait = debit(&mut bucket, 1000.0, start, 500).unwrap();
        assert_eq!(wait, Duration::from_millis(500));
        // After a long pause the bucket holds one second's worth, not the whole pause.
        let later = start + Duration::from_secs(60);
        assert_eq!(debit(&mut bucket, 1000.0, later, 1000), None);
        assert!(debit(&mut bucket, 1000.0, later, 1).is_some());
    }
}
