//! Caches of everything Registries own, filled by label-filtered watches that also trigger the
//! controller. Reconciles read live children from here instead of the API server, so a pass with
//! nothing to do makes no API calls at all.

use super::names::{ChildNames, MANAGED_BY_SELECTOR};
use futures_util::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::pin::Pin;
use std::sync::Arc;

pub type ChildStream<K> = Pin<Box<dyn Stream<Item = Result<K, watcher::Error>> + Send>>;

#[derive(Clone)]
pub struct ChildStores {
    pub deployments: Store<Deployment>,
    pub daemon_sets: Store<DaemonSet>,
    pub stateful_sets: Store<StatefulSet>,
    pub services: Store<Service>,
    pub service_accounts: Store<ServiceAccount>,
    pub config_maps: Store<ConfigMap>,
    pub secrets: Store<Secret>,
    pub ingresses: Store<Ingress>,
    pub pod_disruption_budgets: Store<PodDisruptionBudget>,
    pub cron_jobs: Store<CronJob>,
    /// The garbage collection runs (labelled through the CronJob's job template).
    pub jobs: Store<Job>,
    /// Registry pods and their claims: not children, but what explains a stuck rollout.
    pub pods: Store<Pod>,
    pub claims: Store<PersistentVolumeClaim>,
}

/// The watch streams that feed the stores; the controller polls them as triggers.
pub struct ChildStreams {
    pub deployments: ChildStream<Deployment>,
    pub daemon_sets: ChildStream<DaemonSet>,
    pub stateful_sets: ChildStream<StatefulSet>,
    pub services: ChildStream<Service>,
    pub service_accounts: ChildStream<ServiceAccount>,
    pub config_maps: ChildStream<ConfigMap>,
    pub secrets: ChildStream<Secret>,
    pub ingresses: ChildStream<Ingress>,
    pub pod_disruption_budgets: ChildStream<PodDisruptionBudget>,
    pub cron_jobs: ChildStream<CronJob>,
    pub jobs: ChildStream<Job>,
    pub pods: ChildStream<Pod>,
    pub claims: ChildStream<PersistentVolumeClaim>,
}

fn watch<K>(client: &Client) -> (Store<K>, ChildStream<K>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    watch_with(client, |_| {})
}

/// For objects the operator only reads (pods, claims): their `managedFields`, often the larger
/// part of a pod, are dropped before caching. Children keep theirs: apply reads them.
fn watch_read_only<K>(client: &Client) -> (Store<K>, ChildStream<K>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    watch_with(client, |o: &mut K| o.meta_mut().managed_fields = None)
}

fn watch_with<K>(
    client: &Client,
    trim: impl FnMut(&mut K) + Send + 'static,
) -> (Store<K>, ChildStream<K>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let config = watcher::Config::default()
        .labels(MANAGED_BY_SELECTOR)
        .any_semantic();
    let stream = watcher(Api::<K>::all(client.clone()), config)
        .default_backoff()
        .modify(trim)
        .reflect(writer)
        .touched_objects()
        .boxed();
    (reader, stream)
}

pub fn watch_children(client: &Client) -> (ChildStores, ChildStreams) {
    let (deployments, deployments_stream) = watch(client);
    let (daemon_sets, daemon_sets_stream) = watch(client);
    let (stateful_sets, stateful_sets_stream) = watch(client);
    let (services, services_stream) = watch(client);
    let (service_accounts, service_accounts_stream) = watch(client);
    let (config_maps, config_maps_stream) = watch(client);
    let (secrets, secrets_stream) = watch(client);
    let (ingresses, ingresses_stream) = watch(client);
    let (pod_disruption_budgets, pdb_stream) = watch(client);
    let (cron_jobs, cron_jobs_stream) = watch(client);
    let (jobs, jobs_stream) = watch(client);
    let (pods, pods_stream) = watch_read_only(client);
    let (claims, claims_stream) = watch_read_only(client);
    (
        ChildStores {
            deployments,
            daemon_sets,
            stateful_sets,
            services,
            service_accounts,
            config_maps,
            secrets,
            ingresses,
            pod_disruption_budgets,
            cron_jobs,
            jobs,
            pods,
            claims,
        },
        ChildStreams {
            deployments: deployments_stream,
            daemon_sets: daemon_sets_stream,
            stateful_sets: stateful_sets_stream,
            services: services_stream,
            service_accounts: service_accounts_stream,
            config_maps: config_maps_stream,
            secrets: secrets_stream,
            ingresses: ingresses_stream,
            pod_disruption_budgets: pdb_stream,
            cron_jobs: cron_jobs_stream,
            jobs: jobs_stream,
            pods: pods_stream,
            claims: claims_stream,
        },
    )
}

/// The objects of `store` that carry the registry's selector labels, by name.
fn of_registry<K>(store: &Store<K>, namespace: &str, registry: &str) -> Vec<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    selected(store, namespace, &super::names::selector_labels(registry))
}

/// The objects of `store` in `namespace` that carry every label of `selector`, by name.
fn selected<K>(
    store: &Store<K>,
    namespace: &str,
    selector: &std::collections::BTreeMap<String, String>,
) -> Vec<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    let mut found: Vec<Arc<K>> = store
        .state()
        .into_iter()
        .filter(|o| {
            o.meta().namespace.as_deref() == Some(namespace)
                && selector
                    .iter()
                    .all(|(k, v)| o.meta().labels.as_ref().and_then(|l| l.get(k)) == Some(v))
        })
        .collect();
    found.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
    found
}

/// The Registry (name, namespace) a registry or node access pod, or a claim, belongs to, from
/// its labels.
pub fn registry_of<K: Resource>(object: &K) -> Option<(String, String)> {
    let labels = object.meta().labels.as_ref()?;
    let component = labels
        .get("app.kubernetes.io/component")
        .map(String::as_str);
    if component != Some("registry") && component != Some(super::build::NODE_ACCESS_COMPONENT) {
        return None;
    }
    let registry = labels.get("app.kubernetes.io/instance")?.clone();
    Some((registry, object.meta().namespace.clone()?))
}

fn get<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    store.get(&ObjectRef::new(name).within(namespace))
}

/// The live children of one Registry, as the caches hold them.
#[derive(Default)]
pub struct LiveChildren {
    pub deployment: Option<Arc<Deployment>>,
    pub stateful_set: Option<Arc<StatefulSet>>,
    pub service: Option<Arc<Service>>,
    pub service_account: Option<Arc<ServiceAccount>>,
    pub config: Option<Arc<ConfigMap>>,
    pub admin_secret: Option<Arc<Secret>>,
    pub htpasswd_secret: Option<Arc<Secret>>,
    pub ca_secret: Option<Arc<Secret>>,
    pub ca_config_map: Option<Arc<ConfigMap>>,
    pub tls_secret: Option<Arc<Secret>>,
    pub ingress: Option<Arc<Ingress>>,
    pub pod_disruption_budget: Option<Arc<PodDisruptionBudget>>,
    pub gc_cron_job: Option<Arc<CronJob>>,
    pub node_access_config: Option<Arc<ConfigMap>>,
    pub node_access_daemon_set: Option<Arc<DaemonSet>>,
    /// Finished garbage collection Jobs of this Registry, newest last.
    pub gc_jobs: Vec<Arc<Job>>,
    /// The registry's pods and volume claims, and the node access agent's pods.
    pub pods: Vec<Arc<Pod>>,
    pub node_access_pods: Vec<Arc<Pod>>,
    pub claims: Vec<Arc<PersistentVolumeClaim>>,
}

impl ChildStores {
    /// Resolves once every cache holds its first full list, so that an empty cache right after
    /// start-up is never mistaken for missing children.
    pub async fn ready(&self) -> bool {
        self.deployments.wait_until_ready().await.is_ok()
            && self.daemon_sets.wait_until_ready().await.is_ok()
            && self.stateful_sets.wait_until_ready().await.is_ok()
            && self.services.wait_until_ready().await.is_ok()
            && self.service_accounts.wait_until_ready().await.is_ok()
            && self.config_maps.wait_until_ready().await.is_ok()
            && self.secrets.wait_until_ready().await.is_ok()
            && self.ingresses.wait_until_ready().await.is_ok()
            && self.pod_disruption_budgets.wait_until_ready().await.is_ok()
            && self.cron_jobs.wait_until_ready().await.is_ok()
            && self.jobs.wait_until_ready().await.is_ok()
            && self.pods.wait_until_ready().await.is_ok()
            && self.claims.wait_until_ready().await.is_ok()
    }

    pub fn live(&self, namespace: &str, names: &ChildNames) -> LiveChildren {
        let workload = names.workload();
        LiveChildren {
            pods: of_registry(&self.pods, namespace, &names.registry),
            node_access_pods: selected(
                &self.pods,
                namespace,
                &super::build::node_access_selector(&names.registry),
            ),
            claims: of_registry(&self.claims, namespace, &names.registry),
            deployment: get(&self.deployments, namespace, &workload),
            stateful_set: get(&self.stateful_sets, namespace, &workload),
            service: get(&self.services, namespace, &workload),
            service_account: get(&self.service_accounts, namespace, &workload),
            config: get(&self.config_maps, namespace, &names.config()),
            admin_secret: get(&self.secrets, namespace, &names.admin_secret()),
            htpasswd_secret: get(&self.secrets, namespace, &names.htpasswd_secret()),
            ca_secret: get(&self.secrets, namespace, &names.ca()),
            ca_config_map: get(&self.config_maps, namespace, &names.ca()),
            tls_secret: get(&self.secrets, namespace, &names.tls_secret()),
            ingress: get(&self.ingresses, namespace, &workload),
            pod_disruption_budget: get(&self.pod_disruption_budgets, namespace, &workload),
            node_access_config: get(
                &self.config_maps,
                namespace,
                &super::build::node_access_name(&names.registry),
            ),
            node_access_daemon_set: get(
                &self.daemon_sets,
                namespace,
                &super::build::node_access_name(&names.registry),
            ),
            gc_cron_job: get(
                &self.cron_jobs,
                namespace,
                &super::build::cron_job_name(&names.registry),
            ),
            gc_jobs: {
                let cron = super::build::cron_job_name(&names.registry);
                let mut jobs: Vec<Arc<Job>> = self
                    .jobs
                    .state()
                    .into_iter()
                    .filter(|j| {
                        j.metadata.namespace.as_deref() == Some(namespace)
                            && j.metadata
                                .owner_references
                                .iter()
                                .flatten()
                                .any(|o| o.kind == "CronJob" && o.name == cron)
                            && j.status
                                .as_ref()
                                .and_then(|s| {
                                    s.completion_time.as_ref().or(s
                                        .conditions
                                        .as_ref()
                                        .and_then(|c| {
                                            c.iter()
                                                .find(|c| c.type_ == "Failed" && c.status == "True")
                                        })
                                        .and_then(|c| c.last_transition_time.as_ref()))
                                })
                                .is_some()
                    })
                    .collect();
                jobs.sort_by_key(|j| j.metadata.creation_timestamp.clone().map(|t| t.0));
                jobs
            },
        }
    }
}
