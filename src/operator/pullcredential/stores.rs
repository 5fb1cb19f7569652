//! Caches the ImagePullCredential controller reads instead of the API server, so a pass with
//! nothing to do makes no API calls. Each watch also triggers reconciles (see `mod.rs`).

use super::names::{PULL_CREDENTIAL_LABEL, WEBHOOK_CONFIGURATION};
use crate::crd::registry::Registry;
use crate::operator::registry::names::MANAGED_BY_SELECTOR;
use futures_util::{Stream, StreamExt};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServiceAccount};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::pin::Pin;

pub type Trigger<K> = Pin<Box<dyn Stream<Item = Result<K, watcher::Error>> + Send>>;

/// Label on the webhook's CA and serving Secrets in the operator's namespace.
pub const WEBHOOK_TLS_LABEL: &str = "wharf.dev/webhook-tls";

#[derive(Clone)]
pub struct Stores {
    pub namespaces: Store<Namespace>,
    /// Copies and robot state Secrets (labelled with their credential).
    pub secrets: Store<Secret>,
    pub service_accounts: Store<ServiceAccount>,
    pub registries: Store<Registry>,
    pub services: Store<Service>,
    pub webhook_secrets: Store<Secret>,
    pub webhook_configurations: Store<MutatingWebhookConfiguration>,
}

pub struct Triggers {
    pub namespaces: Trigger<Namespace>,
    pub secrets: Trigger<Secret>,
    pub service_accounts: Trigger<ServiceAccount>,
    pub registries: Trigger<Registry>,
    pub services: Trigger<Service>,
    pub webhook_secrets: Trigger<Secret>,
    pub webhook_configurations: Trigger<MutatingWebhookConfiguration>,
    /// Metadata of every dockerconfigjson Secret: a `secretRef` source changed.
    pub source_secrets: Trigger<kube::core::PartialObjectMeta<Secret>>,
}

fn watch<K>(api: Api<K>, config: watcher::Config) -> (Store<K>, Trigger<K>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config.any_semantic())
        .default_backoff()
        .reflect(writer)
        .touched_objects()
        .boxed();
    (reader, stream)
}

pub fn watch_all(client: &Client, operator_namespace: &str) -> (Stores, Triggers) {
    let all = watcher::Config::default();
    let (namespaces, namespaces_t) = watch(Api::all(client.clone()), all.clone());
    let (secrets, secrets_t) = watch(
        Api::all(client.clone()),
        all.clone().labels(PULL_CREDENTIAL_LABEL),
    );
    let (service_accounts, service_accounts_t) = watch(Api::all(client.clone()), all.clone());
    let (registries, registries_t) = watch(Api::all(client.clone()), all.clone());
    let (services, services_t) = watch(
        Api::all(client.clone()),
        all.clone().labels(MANAGED_BY_SELECTOR),
    );
    let (webhook_secrets, webhook_secrets_t) = watch(
        Api::namespaced(client.clone(), operator_namespace),
        all.clone().labels(WEBHOOK_TLS_LABEL),
    );
    let (webhook_configurations, webhook_configurations_t) = watch(
        Api::all(client.clone()),
        all.clone()
            .fields(&format!("metadata.name={WEBHOOK_CONFIGURATION}")),
    );
    let source_secrets = watcher(
        Api::<kube::core::PartialObjectMeta<Secret>>::all(client.clone()),
        all.fields("type=kubernetes.io/dockerconfigjson")
            .any_semantic(),
    )
    .default_backoff()
    .touched_objects()
    .boxed();
    (
        Stores {
            namespaces,
            secrets,
            service_accounts,
            registries,
            services,
            webhook_secrets,
            webhook_configurations,
        },
        Triggers {
            namespaces: namespaces_t,
            secrets: secrets_t,
            service_accounts: service_accounts_t,
            registries: registries_t,
            services: services_t,
            webhook_secrets: webhook_secrets_t,
            webhook_configurations: webhook_configurations_t,
            source_secrets,
        },
    )
}

impl Stores {
    pub async fn ready(&self) -> bool {
        self.namespaces.wait_until_ready().await.is_ok()
            && self.secrets.wait_until_ready().await.is_ok()
            && self.service_accounts.wait_until_ready().await.is_ok()
            && self.registries.wait_until_ready().await.is_ok()
            && self.services.wait_until_ready().await.is_ok()
            && self.webhook_secrets.wait_until_ready().await.is_ok()
            && self.webhook_configurations.wait_until_ready().await.is_ok()
    }
}
