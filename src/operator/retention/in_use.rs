//! What the cluster runs: every image reference in Pods (including the digests the kubelet
//! resolved, `imageID`) and in the pod templates of Deployments, ReplicaSets (old ones too, so
//! a rollback still pulls), StatefulSets, DaemonSets, Jobs and CronJobs, in any namespace.
//!
//! Watches keep only the references, not the objects, so memory is a few strings per workload.
//! Each change of the set bumps a version the controller listens to, so every policy's in-use
//! list is rewritten within seconds, and a run's pod reads it fresh when it starts.

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodTemplateSpec};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// (kind, namespace, name).
type Key = (&'static str, String, String);

#[derive(Default)]
struct State {
    refs_of: HashMap<Key, Vec<String>>,
    /// How many objects use each reference; the set is the keys.
    counts: HashMap<String, usize>,
    /// Objects seen during a kind's (re)list, replacing that kind's entries when it completes.
    relisting: HashMap<&'static str, HashMap<Key, Vec<String>>>,
    listed: HashSet<&'static str>,
}

impl State {
    /// Replaces one object's references; true when the set of references changed.
    fn set(&mut self, key: Key, refs: Vec<String>) -> bool {
        let old = self.refs_of.remove(&key).unwrap_or_default();
        let mut changed = false;
        for r in &refs {
            let count = self.counts.entry(r.clone()).or_insert(0);
            changed |= *count == 0;
            *count += 1;
        }
        for r in old {
            changed |= self.release(&r);
        }
        if !refs.is_empty() {
            self.refs_of.insert(key, refs);
        }
        changed
    }

    fn release(&mut self, r: &str) -> bool {
        match self.counts.get_mut(r) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => {
                self.counts.remove(r);
                true
            }
            None => false,
        }
    }

    fn relisted(&mut self, kind: &'static str) -> bool {
        let fresh = self.relisting.remove(kind).unwrap_or_default();
        let stale: Vec<Key> = self
            .refs_of
            .keys()
            .filter(|k| k.0 == kind && !fresh.contains_key(*k))
            .cloned()
            .collect();
        let mut changed = false;
        for key in stale {
            changed |= self.set(key, Vec::new());
        }
        for (key, refs) in fresh {
            changed |= self.set(key, refs);
        }
        self.listed.insert(kind);
        changed
    }
}

pub struct InUse {
    state: Mutex<State>,
    version: watch::Sender<u64>,
    kinds: usize,
}

impl InUse {
    fn new(kinds: usize) -> InUse {
        InUse {
            state: Mutex::new(State::default()),
            version: watch::channel(0).0,
            kinds,
        }
    }

    /// Every reference, one per line, sorted; `None` until every kind has been listed once.
    pub fn snapshot(&self) -> Option<String> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.listed.len() < self.kinds {
            return None;
        }
        let sorted: BTreeSet<&String> = state.counts.keys().collect();
        Some(sorted.into_iter().fold(String::new(), |mut out, r| {
            out.push_str(r);
            out.push('\n');
            out
        }))
    }

    /// Bumps whenever the set changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn handle<K: Resource + ResourceExt>(
        &self,
        kind: &'static str,
        event: watcher::Event<K>,
        extract: fn(&K) -> Vec<String>,
    ) {
        let key = |o: &K| (kind, o.namespace().unwrap_or_default(), o.name_any());
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let changed = match event {
            watcher::Event::Apply(o) => state.set(key(&o), extract(&o)),
            watcher::Event::Delete(o) => state.set(key(&o), Vec::new()),
            watcher::Event::Init => {
                state.relisting.insert(kind, HashMap::new());
                false
            }
            watcher::Event::InitApply(o) => {
                let refs = extract(&o);
                state
                    .relisting
                    .entry(kind)
                    .or_default()
                    .insert(key(&o), refs);
                false
            }
            watcher::Event::InitDone => state.relisted(kind),
        };
        drop(state);
        if changed {
            self.version.send_modify(|v| *v += 1);
        }
    }
}

fn pod_spec_images(spec: &PodSpec) -> impl Iterator<Item = String> + '_ {
    let containers = spec.containers.iter().filter_map(|c| c.image.clone());
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .filter_map(|c| c.image.clone());
    let ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .filter_map(|c| c.image.clone());
    containers.chain(init).chain(ephemeral)
}

fn template_images(template: Option<&PodTemplateSpec>) -> Vec<String> {
    template
        .and_then(|t| t.spec.as_ref())
        .map(|s| pod_spec_images(s).collect())
        .unwrap_or_default()
}

pub fn pod_images(pod: &Pod) -> Vec<String> {
    let mut refs: Vec<String> = pod
        .spec
        .as_ref()
        .map(|s| pod_spec_images(s).collect())
        .unwrap_or_default();
    if let Some(status) = &pod.status {
        let statuses = status
            .container_statuses
            .iter()
            .flatten()
            .chain(status.init_container_statuses.iter().flatten())
            .chain(status.ephemeral_container_statuses.iter().flatten());
        for s in statuses {
            refs.push(s.image.clone());
            if !s.image_id.is_empty() {
                refs.push(s.image_id.clone());
            }
        }
    }
    refs.retain(|r| !r.is_empty());
    refs.sort();
    refs.dedup();
    refs
}

fn spawn_watch<K>(
    client: &Client,
    tracker: &Arc<InUse>,
    kind: &'static str,
    extract: fn(&K) -> Vec<String>,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let api = Api::<K>::all(client.clone());
    let tracker = tracker.clone();
    tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(api, watcher::Config::default().any_semantic()));
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => tracker.handle(kind, event, extract),
                Err(e) => {
                    tracing::warn!(kind, error = %e, "watching what the cluster runs failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                }
            }
        }
    });
}

/// Starts the watches; the tracker is complete once `snapshot` returns `Some`.
pub fn track(client: &Client) -> Arc<InUse> {
    let tracker = Arc::new(InUse::new(7));
    spawn_watch::<Pod>(client, &tracker, "Pod", pod_images);
    spawn_watch::<Deployment>(client, &tracker, "Deployment", |d| {
        template_images(d.spec.as_ref().map(|s| &s.template))
    });
    spawn_watch::<ReplicaSet>(client, &tracker, "ReplicaSet", |r| {
        template_images(r.spec.as_ref().and_then(|s| s.template.as_ref()))
    });
    spawn_watch::<StatefulSet>(client, &tracker, "StatefulSet", |s| {
        template_images(s.spec.as_ref().map(|s| &s.template))
    });
    spawn_watch::<DaemonSet>(client, &tracker, "DaemonSet", |d| {
        template_images(d.spec.as_ref().map(|s| &s.template))
    });
    spawn_watch::<Job>(client, &tracker, "Job", |j| {
        template_images(j.spec.as_ref().map(|s| &s.template))
    });
    spawn_watch::<CronJob>(client, &tracker, "CronJob", |c| {
        template_images(
            c.spec
                .as_ref()
                .and_then(|s| s.job_template.spec.as_ref())
                .map(|s| &s.template),
        )
    });
    tracker
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Key {
        ("Pod", "ns".into(), name.into())
    }

    #[test]
    fn the_set_changes_only_when_a_reference_appears_or_disappears() {
        let mut state = State::default();
        assert!(state.set(key("a"), vec!["r/app:1".into()]));
        assert!(
            !state.set(key("b"), vec!["r/app:1".into()]),
            "a second user"
        );
        assert!(!state.set(key("a"), Vec::new()), "b still uses it");
        assert!(state.set(key("b"), Vec::new()), "nobody uses it any more");
        assert!(state.counts.is_empty() && state.refs_of.is_empty());
    }

    #[test]
    fn a_relist_forgets_objects_deleted_while_the_watch_was_down() {
        let tracker = InUse::new(1);
        let pod = |name: &str, image: &str| {
            serde_json::from_value::<Pod>(serde_json::json!({
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"containers": [{"name": "c", "image": image}]},
            }))
            .unwrap()
        };
        assert_eq!(tracker.snapshot(), None, "not listed yet");
        tracker.handle("Pod", watcher::Event::Init, pod_images);
        tracker.handle(
            "Pod",
            watcher::Event::InitApply(pod("a", "r/a:1")),
            pod_images,
        );
        tracker.handle(
            "Pod",
            watcher::Event::InitApply(pod("b", "r/b:1")),
            pod_images,
        );
        tracker.handle("Pod", watcher::Event::InitDone, pod_images);
        assert_eq!(tracker.snapshot().unwrap(), "r/a:1\nr/b:1\n");
        let before = *tracker.changes().borrow();
        tracker.handle("Pod", watcher::Event::Init, pod_images);
        tracker.handle(
            "Pod",
            watcher::Event::InitApply(pod("b", "r/b:1")),
            pod_images,
        );
        tracker.handle("Pod", watcher::Event::InitDone, pod_images);
        assert_eq!(tracker.snapshot().unwrap(), "r/b:1\n");
        assert!(*tracker.changes().borrow() > before);
    }

    #[test]
    fn pods_contribute_the_digests_the_kubelet_resolved() {
        let d = format!("sha256:{}", "c".repeat(64));
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "reg:5000/app:v1"}],
                     "initContainers": [{"name": "i", "image": "reg:5000/init:v1"}]},
            "status": {"containerStatuses": [{"name": "c", "image": "reg:5000/app:v1",
                "imageID": format!("reg:5000/app@{d}"), "ready": true, "restartCount": 0}]},
        }))
        .unwrap();
        assert_eq!(
            pod_images(&pod),
            [
                "reg:5000/app:v1".to_owned(),
                format!("reg:5000/app@{d}"),
                "reg:5000/init:v1".into()
            ]
        );
    }
}
