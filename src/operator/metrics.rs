//! The operator's Prometheus metrics: reconciles by controller and outcome, errors by static
//! category, reconcile durations, API requests by verb (counted in the client itself, so nothing
//! escapes the count), objects written, and leadership.

use crate::prometheus::{Histogram, header};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

#[derive(Default)]
pub struct Metrics {
    reconciles: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    errors: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    durations: Mutex<BTreeMap<&'static str, Histogram>>,
    api_requests: Mutex<BTreeMap<&'static str, u64>>,
    objects_written: Mutex<BTreeMap<&'static str, u64>>,
    leader: AtomicBool,
    replication_runs: Mutex<BTreeMap<&'static str, u64>>,
    replication_tags: Mutex<BTreeMap<&'static str, u64>>,
    replication_bytes: AtomicU64,
    push_events: Mutex<BTreeMap<&'static str, u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    pub fn reconciled(
        &self,
        controller: &'static str,
        took: Duration,
        error: Option<&'static str>,
    ) {
        let result = if error.is_some() { "error" } else { "success" };
        *lock(&self.reconciles)
            .entry((controller, result))
            .or_default() += 1;
        if let Some(category) = error {
            *lock(&self.errors)
                .entry((controller, category))
                .or_default() += 1;
        }
        lock(&self.durations)
            .entry(controller)
            .or_default()
            .observe(took.as_secs_f64());
    }

    /// Runs one reconcile and records how long it took and how it ended.
    pub async fn timed<T, E>(
        &self,
        controller: &'static str,
        category: fn(&E) -> &'static str,
        work: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = std::time::Instant::now();
        let result = work.await;
        self.reconciled(
            controller,
            started.elapsed(),
            result.as_ref().err().map(category),
        );
        result
    }

    /// `verb` is the HTTP method, or `WATCH` for a GET with `watch=true`.
    pub fn api_request(&self, verb: &'static str) {
        *lock(&self.api_requests).entry(verb).or_default() += 1;
    }

    pub fn objects_written(&self, controller: &'static str, n: usize) {
        *lock(&self.objects_written).entry(controller).or_default() += n as u64;
    }

    /// A finished replication run, counted once when its result reaches status.
    pub fn replication_run(&self, run: &crate::crd::replication_policy::ReplicationRun) {
        let outcome = if run.succeeded { "succeeded" } else { "failed" };
        *lock(&self.replication_runs).entry(outcome).or_default() += 1;
        let mut tags = lock(&self.replication_tags);
        for (outcome, n) in [
            ("copied", run.copied),
            ("skipped", run.skipped),
            ("conflict", run.conflicts),
            ("deleted", run.deleted),
            ("failed", run.failed),
        ] {
            *tags.entry(outcome).or_default() += n.max(0) as u64;
        }
        if !run.dry_run {
            self.replication_bytes
                .fetch_add(run.bytes_transferred.max(0) as u64, Ordering::Relaxed);
        }
    }

    /// A push event from a Registry: `started` a run, `ignored` (no policy wants it),
    /// `rejected` (bad token or body) or `failed` (the Job could not be created).
    pub fn push_event(&self, result: &'static str) {
        *lock(&self.push_events).entry(result).or_default() += 1;
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        header(
            &mut out,
            "wharf_operator_reconciles_total",
            "counter",
            "Reconciles by controller and result.",
        );
        for ((controller, result), n) in lock(&self.reconciles).iter() {
            let _ = writeln!(
                out,
                "wharf_operator_reconciles_total{{controller=\"{controller}\",result=\"{result}\"}} {n}"
            );
        }
        header(
            &mut out,
            "wharf_operator_reconcile_errors_total",
            "counter",
            "Failed reconciles by controller and error category.",
        );
        for ((controller, category), n) in lock(&self.errors).iter() {
            let _ = writeln!(
                out,
                "wharf_operator_reconcile_errors_total{{controller=\"{controller}\",category=\"{category}\"}} {n}"
            );
        }
        header(
            &mut out,
            "wharf_operator_reconcile_duration_seconds",
            "histogram",
            "Reconcile duration by controller.",
        );
        for (controller, h) in lock(&self.durations).iter() {
            h.render(
                "wharf_operator_reconcile_duration_seconds",
                &format!("controller=\"{controller}\""),
                &mut out,
            );
        }
        header(
            &mut out,
            "wharf_operator_api_requests_total",
            "counter",
            "Requests to the Kubernetes API by verb.",
        );
        for (verb, n) in lock(&self.api_requests).iter() {
            let _ = writeln!(
                out,
                "wharf_operator_api_requests_total{{verb=\"{verb}\"}} {n}"
            );
        }
        header(
            &mut out,
            "wharf_operator_objects_written_total",
            "counter",
            "Objects created, updated or deleted, by controller.",
        );
        for (controller, n) in lock(&self.objects_written).iter() {
            let _ = writeln!(
                out,
                "wharf_operator_objects_written_total{{controller=\"{controller}\"}} {n}"
            );
        }
        header(
            &mut out,
            "wharf_operator_leader",
            "gauge",
            "1 while this replica holds the leader lease.",
        );
        let _ = writeln!(out, "wharf_operator_leader {}", u8::from(self.is_leader()));
        header(
            &mut out,
            "wharf_operator_replication_runs_total",
            "counter",
            "Finished replication runs by outcome.",
        );
        for (outcome, n) in lock(&self.replication_runs).iter() {
            let _ = writeln!(
                out,
                "wharf_operator_replication_runs_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        header(
            &mut out,
            "wharf_operator_replication_tags_total",
            "counter",
            "Tags of finished replication runs by outcome.",
        );
        for (outcome, n) in lock(&self.replication_tags).iter() {
            let _ = writeln!(
                out,
                "wharf_operator_replication_tags_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        header(
            &mut out,
            "wharf_operator_replication_bytes_total",
            "counter",
            "Blob bytes finished replication runs sent.",
        );
        let _ = writeln!(
            out,
            "wharf_operator_replication_bytes_total {}",
            self.replication_bytes.load(Ordering::Relaxed)
        );
        header(
            &mut out,
            "wharf_operator_push_events_total",
            "counter",
            "Push events from Registries by result.",
        );
        for (result, n) in lock(&self.push_events).iter() {
            let _ = writeln!(
                out,
                "wharf_operator_push_events_total{{result=\"{result}\"}} {n}"
            );
        }
        let (resident, peak) = memory();
        header(
            &mut out,
            "wharf_operator_resident_memory_bytes",
            "gauge",
            "Resident set size.",
        );
        let _ = writeln!(out, "wharf_operator_resident_memory_bytes {resident}");
        header(
            &mut out,
            "wharf_operator_peak_resident_memory_bytes",
            "gauge",
            "Peak resident set size.",
        );
        let _ = writeln!(out, "wharf_operator_peak_resident_memory_bytes {peak}");
        out
    }
}

/// (VmRSS, VmHWM) in bytes from /proc/self/status; zeros where that file does not exist.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_bounded_labels() {
        let m = Metrics::default();
        m.reconciled("registry", Duration::from_millis(4), None);
        m.reconciled("registry", Duration::from_millis(4), Some("apply"));
        m.api_request("PATCH");
        m.api_request("PATCH");
        m.set_leader(true);
        let text = m.render();
        assert!(text.contains(
            "wharf_operator_reconciles_total{controller=\"registry\",result=\"success\"} 1"
        ));
        assert!(text.contains(
            "wharf_operator_reconcile_errors_total{controller=\"registry\",category=\"apply\"} 1"
        ));
        assert!(text.contains(
            "wharf_operator_reconcile_duration_seconds_count{controller=\"registry\"} 2"
        ));
        assert!(text.contains("wharf_operator_api_requests_total{verb=\"PATCH\"} 2"));
        assert!(text.contains("wharf_operator_leader 1"));
        let (resident, peak) = memory();
        assert!(resident > 0 && peak >= resident);
    }
}
