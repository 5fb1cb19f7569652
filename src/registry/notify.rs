//! Push notifications (`notifications.endpoints` in the config): once a manifest is stored
//! under a tag, an event goes to every endpoint. Each endpoint has its own bounded queue and
//! one sender task, so a slow or dead receiver never slows a push: when its queue is full the
//! event is dropped and counted. Deliveries are retried with backoff (honouring 429 and
//! `Retry-After`), carry `Authorization: Bearer <token file>` (read at each attempt, so the
//! token can rotate), and are counted in `/metrics`. Events are hints: a receiver must
//! tolerate losing them (the ReplicationPolicy controller catches up on its next full run).

use crate::prometheus::header;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// Longest wait between two attempts of one delivery.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One receiver, as the config names it.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationEndpoint {
    /// For logs and metrics.
    pub name: String,
    pub url: String,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
    /// Attempts per event, the first included.
    pub max_attempts: u32,
    /// Events waiting at most; more are dropped.
    pub queue_size: usize,
    /// Wait before the second attempt; doubled each time up to 30 s.
    pub backoff: Duration,
}

/// What the receiver gets, one per stored tag (as `{"events": [...]}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushEvent {
    pub action: &'static str,
    pub repository: String,
    pub tag: String,
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    /// RFC 3339, when the registry stored it.
    pub timestamp: String,
}

impl PushEvent {
    pub fn push(repository: &str, tag: &str, digest: &str, media_type: &str, size: u64) -> Self {
        PushEvent {
            action: "push",
            repository: repository.to_owned(),
            tag: tag.to_owned(),
            digest: digest.to_owned(),
            media_type: media_type.to_owned(),
            size,
            timestamp: k8s_openapi::jiff::Timestamp::now().to_string(),
        }
    }
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    retries: AtomicU64,
    queued: AtomicI64,
}

struct Queue {
    name: String,
    sender: mpsc::Sender<PushEvent>,
    counters: Arc<Counters>,
}

/// Every endpoint's queue; empty when none is configured.
#[derive(Default)]
pub struct Notifier {
    queues: Vec<Queue>,
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("notification endpoint {name}: {message}")]
    Endpoint { name: String, message: String },
}

impl Notifier {
    /// Starts one sender task per endpoint (inside a Tokio runtime).
    pub fn start(endpoints: &[NotificationEndpoint]) -> Result<Notifier, NotifyError> {
        let mut queues = Vec::new();
        for endpoint in endpoints {
            let http = http_client(endpoint)?;
            let (sender, receiver) = mpsc::channel(endpoint.queue_size.max(1));
            let counters = Arc::new(Counters::default());
            tokio::spawn(deliver_all(
                endpoint.clone(),
                http,
                receiver,
                counters.clone(),
            ));
            queues.push(Queue {
                name: endpoint.name.clone(),
                sender,
                counters,
            });
        }
        Ok(Notifier { queues })
    }

    /// Queues `event` for every endpoint without waiting.
    pub fn notify(&self, event: PushEvent) {
        for queue in &self.queues {
            match queue.sender.try_send(event.clone()) {
                Ok(()) => {
                    queue.counters.queued.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    queue.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(endpoint = %queue.name, repository = %event.repository, tag = %event.tag, "notification queue full; event dropped");
                }
            }
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.queues.is_empty() {
            return out;
        }
        header(
            &mut out,
            "wharf_registry_notifications_total",
            "counter",
            "Push events by endpoint and result (sent, failed after every attempt, dropped from a full queue).",
        );
        for q in &self.queues {
            for (result, n) in [
                ("sent", &q.counters.sent),
                ("failed", &q.counters.failed),
                ("dropped", &q.counters.dropped),
            ] {
                let _ = writeln!(
                    out,
                    "wharf_registry_notifications_total{{endpoint=\"{}\",result=\"{result}\"}} {}",
                    q.name,
                    n.load(Ordering::Relaxed)
                );
            }
        }
        header(
            &mut out,
            "wharf_registry_notification_retries_total",
            "counter",
            "Delivery attempts after the first, by endpoint.",
        );
        header(
            &mut out,
            "wharf_registry_notification_queue_length",
            "gauge",
            "Events waiting to be delivered, by endpoint.",
        );
        for q in &self.queues {
            let _ = writeln!(
                out,
                "wharf_registry_notification_retries_total{{endpoint=\"{}\"}} {}",
                q.name,
                q.counters.retries.load(Ordering::Relaxed)
            );
            let _ = writeln!(
                out,
                "wharf_registry_notification_queue_length{{endpoint=\"{}\"}} {}",
                q.name,
                q.counters.queued.load(Ordering::Relaxed).max(0)
            );
        }
        out
    }
}

fn http_client(endpoint: &NotificationEndpoint) -> Result<reqwest::Client, NotifyError> {
    let fail = |message: String| NotifyError::Endpoint {
        name: endpoint.name.clone(),
        message,
    };
    if reqwest::Url::parse(&endpoint.url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .is_none()
    {
        return Err(fail(format!("{:?} is not an http(s) URL", endpoint.url)));
    }
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("wharf/", env!("CARGO_PKG_VERSION")))
        .timeout(endpoint.timeout);
    if let Some(path) = &endpoint.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| fail(format!("cannot read the CA file {}: {e}", path.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| fail(format!("the CA file {}: {e}", path.display())))?;
        builder = builder.tls_certs_only(certs);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    builder.build().map_err(|e| fail(e.to_string()))
}

/// What to do after one attempt (pure).
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Try again after at least this long (`Retry-After`), or the backoff.
    Retry(Option<Duration>),
    /// The receiver refused the event for good (a bad token, a malformed event).
    Refused,
}

pub fn verdict(status: Option<u16>, retry_after: Option<&str>) -> Verdict {
    match status {
        Some(200..=299) => Verdict::Delivered,
        Some(408 | 429) | Some(500..) | None => Verdict::Retry(
            retry_after
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|s| Duration::from_secs(s).min(MAX_BACKOFF)),
        ),
        Some(_) => Verdict::Refused,
    }
}

/// The wait before attempt `attempt + 1` (pure): the backoff doubled per attempt, capped.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1 << attempt.min(16)).min(MAX_BACKOFF)
}

async fn deliver_all(
    endpoint: NotificationEndpoint,
    http: reqwest::Client,
    mut receiver: mpsc::Receiver<PushEvent>,
    counters: Arc<Counters>,
) {
    while let Some(event) = receiver.recv().await {
        counters.queued.fetch_sub(1, Ordering::Relaxed);
        let body = serde_json::to_vec(&serde_json::json!({"events": [&event]})).unwrap_or_default();
        let mut attempt = 0;
        loop {
            let mut request = http
                .post(&endpoint.url)
                .header("content-type", "application/json")
                .body(body.clone());
            if let Some(path) = &endpoint.token_file {
                match std::fs::read_to_string(path) {
                    Ok(token) => request = request.bearer_auth(token.trim()),
                    Err(e) => {
                        tracing::warn!(endpoint = %endpoint.name, path = %path.display(), error = %e, "cannot read the notification token");
                    }
                }
            }
            let (status, retry_after, error) = match request.send().await {
                Ok(response) => (
                    Some(response.status().as_u16()),
                    response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned),
                    None,
                ),
                Err(e) => (None, None, Some(e.to_string())),
            };
            attempt += 1;
            match verdict(status, retry_after.as_deref()) {
                Verdict::Delivered => {
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(endpoint = %endpoint.name, repository = %event.repository, tag = %event.tag, "push event delivered");
                    break;
                }
                Verdict::Refused => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(endpoint = %endpoint.name, repository = %event.repository, tag = %event.tag, status, "the receiver refused the push event");
                    break;
                }
                Verdict::Retry(_) if attempt >= endpoint.max_attempts => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(endpoint = %endpoint.name, repository = %event.repository, tag = %event.tag, attempts = attempt, status, error = error.as_deref().unwrap_or(""), "push event not delivered; giving up");
                    break;
                }
                Verdict::Retry(after) => {
                    counters.retries.fetch_add(1, Ordering::Relaxed);
                    let wait = after.unwrap_or_else(|| backoff(endpoint.backoff, attempt - 1));
                    tracing::info!(endpoint = %endpoint.name, attempt, status, error = error.as_deref().unwrap_or(""), wait_ms = wait.as_millis() as u64, "push event delivery failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_decide_between_done_retry_and_refused() {
        assert_eq!(verdict(Some(202), None), Verdict::Delivered);
        assert_eq!(verdict(None, None), Verdict::Retry(None));
        assert_eq!(verdict(Some(503), None), Verdict::Retry(None));
        assert_eq!(
            verdict(Some(429), Some("7")),
            Verdict::Retry(Some(Duration::from_secs(7)))
        );
        assert_eq!(
            verdict(Some(429), Some("3600")),
            Verdict::Retry(Some(MAX_BACKOFF))
        );
        assert_eq!(verdict(Some(401), None), Verdict::Refused);
        assert_eq!(verdict(Some(400), None), Verdict::Refused);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let base = Duration::from_millis(500);
        assert_eq!(backoff(base, 0), base);
        assert_eq!(backoff(base, 3), Duration::from_secs(4));
        assert_eq!(backoff(base, 40), MAX_BACKOFF);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        // A receiver that never answers within the test: the one sender holds the first
        // event, the queue of one holds the second, the third is dropped.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let notifier = Notifier::start(&[NotificationEndpoint {
            name: "stuck".into(),
            url,
            token_file: None,
            ca_file: None,
            timeout: Duration::from_secs(30),
            max_attempts: 1,
            queue_size: 1,
            backoff: Duration::from_millis(10),
        }])
        .unwrap();
        let event = PushEvent::push("team/app", "v1", "sha256:00", "application/json", 2);
        notifier.notify(event.clone());
        // Let the sender take the first one off the queue.
        for _ in 0..100 {
            if notifier.queues[0].counters.queued.load(Ordering::Relaxed) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        notifier.notify(event.clone());
        notifier.notify(event);
        let text = notifier.render();
        assert!(
            text.contains(
                "wharf_registry_notifications_total{endpoint=\"stuck\",result=\"dropped\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("wharf_registry_notification_queue_length{endpoint=\"stuck\"} 1"));
        drop(listener);
    }
}
