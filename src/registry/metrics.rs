//! Prometheus metrics, kept in fixed structures so that recording costs a lock-free add or one
//! short uncontended lock, and every label set is bounded (route kinds, methods, status codes).

use axum::http::{Method, StatusCode};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::prometheus::Histogram;

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, &'static str, u16), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    requests_in_flight: AtomicI64,
    uploads_in_flight: AtomicI64,
    storage_bytes: AtomicU64,
    uploads_purged: AtomicU64,
}

pub struct UploadGuard<'a>(&'a AtomicI64);

impl Drop for UploadGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

impl Metrics {
    pub fn request_started(&self) {
        self.requests_in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn request_finished(
        &self,
        route: &'static str,
        method: &Method,
        status: StatusCode,
        elapsed: Duration,
    ) {
        self.requests_in_flight.fetch_sub(1, Ordering::Relaxed);
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((route, method_label(method), status.as_u16()))
            .or_default() += 1;
        self.latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(route)
            .or_default()
            .observe(elapsed.as_secs_f64());
    }

    pub fn bytes_received(&self, n: u64) {
        self.bytes_received.fetch_add(n, Ordering::Relaxed);
    }

    pub fn bytes_sent(&self, n: u64) {
        self.bytes_sent.fetch_add(n, Ordering::Relaxed);
    }

    pub fn upload_started(&self) -> UploadGuard<'_> {
        self.uploads_in_flight.fetch_add(1, Ordering::Relaxed);
        UploadGuard(&self.uploads_in_flight)
    }

    pub fn set_storage_bytes(&self, n: u64) {
        self.storage_bytes.store(n, Ordering::Relaxed);
    }

    pub fn uploads_purged(&self, n: u64) {
        self.uploads_purged.fetch_add(n, Ordering::Relaxed);
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP wharf_registry_http_requests_total Requests by route kind, method and status.\n");
        out.push_str("# TYPE wharf_registry_http_requests_total counter\n");
        for ((route, method, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "wharf_registry_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP wharf_registry_http_request_duration_seconds Request latency by route kind.\n",
        );
        out.push_str("# TYPE wharf_registry_http_request_duration_seconds histogram\n");
        for (route, h) in self
            .latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            h.render(
                "wharf_registry_http_request_duration_seconds",
                &format!("route=\"{route}\""),
                &mut out,
            );
        }
        let scalars: [(&str, &str, &str, i128); 6] = [
            (
                "wharf_registry_bytes_received_total",
                "counter",
                "Blob and manifest bytes received.",
                self.bytes_received.load(Ordering::Relaxed).into(),
            ),
            (
                "wharf_registry_bytes_sent_total",
                "counter",
                "Blob and manifest bytes sent.",
                self.bytes_sent.load(Ordering::Relaxed).into(),
            ),
            (
                "wharf_registry_http_requests_in_flight",
                "gauge",
                "Requests being served.",
                self.requests_in_flight.load(Ordering::Relaxed).into(),
            ),
            (
                "wharf_registry_uploads_in_flight",
                "gauge",
                "Upload requests streaming data.",
                self.uploads_in_flight.load(Ordering::Relaxed).into(),
            ),
            (
                "wharf_registry_storage_bytes",
                "gauge",
                "Bytes in the blob store (sampled).",
                self.storage_bytes.load(Ordering::Relaxed).into(),
            ),
            (
                "wharf_registry_uploads_purged_total",
                "counter",
                "Stale uploads removed.",
                self.uploads_purged.load(Ordering::Relaxed).into(),
            ),
        ];
        for (name, kind, help, value) in scalars {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.request_started();
        m.request_finished(
            "blob",
            &Method::GET,
            StatusCode::OK,
            Duration::from_millis(3),
        );
        m.bytes_sent(42);
        {
            let _g = m.upload_started();
            assert!(m.render().contains("wharf_registry_uploads_in_flight 1"));
        }
        let text = m.render();
        assert!(text.contains(
            "wharf_registry_http_requests_total{route=\"blob\",method=\"GET\",status=\"200\"} 1"
        ));
        assert!(text.contains(
            "wharf_registry_http_request_duration_seconds_bucket{route=\"blob\",le=\"0.0025\"} 0"
        ));
        assert!(text.contains(
            "wharf_registry_http_request_duration_seconds_bucket{route=\"blob\",le=\"0.005\"} 1"
        ));
        assert!(text.contains("wharf_registry_bytes_sent_total 42"));
        assert!(text.contains("wharf_registry_uploads_in_flight 0"));
        assert!(text.contains("wharf_registry_http_requests_in_flight 0"));
    }
}
