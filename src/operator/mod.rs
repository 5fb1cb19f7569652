//! `wharf operator`: the controllers, behind leader election, with `/metrics` and `/healthz`.
//!
//! - `registry/`: the Registry controller
//! - `pullcredential/`: the ImagePullCredential controller and its Pod webhook
//! - `retention/`: the RetentionPolicy controller
//! - `replication/`: the ReplicationPolicy controller and the push events endpoint
//! - `robots.rs`: robot accounts minted on wharf Registries for Jobs; `finalizers.rs`
//! - `apply.rs`: server-side apply that writes only on a difference
//! - `conditions.rs`: kstatus conditions; `events.rs`: Kubernetes Events
//! - `leader.rs`: Lease-based leader election
//! - `job_results.rs`: what wharf's Jobs reported in their termination message
//! - `metrics.rs`, `http.rs`: observability endpoints

pub mod apply;
pub mod conditions;
pub mod events;
pub mod finalizers;
pub mod http;
pub mod job_results;
pub mod leader;
pub mod metrics;
pub mod ownership;
pub mod policy_runs;
pub mod pullcredential;
pub mod registry;
pub mod replication;
pub mod retention;
pub mod robots;

use crate::crd::image_pull_credential::ImagePullCredential;
use crate::crd::registry::Registry;
use kube::api::ListParams;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Api, Client};
use leader::{LeaderElector, LeaseConfig};
use metrics::Metrics;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What a controller's stream yields after reconcile and error_policy have handled a pass: only
/// the runtime's own events (an object gone before its turn, a watch restarting) reach here.
async fn log_controller_event<T, E: std::fmt::Display>(result: Result<T, E>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "controller event");
    }
}

#[derive(Debug, Default, clap::Args)]
pub struct OperatorArgs {
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, env = "WHARF_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,
    /// Image the registry pods run unless a Registry overrides it: normally the operator's own.
    #[arg(long, env = "WHARF_REGISTRY_IMAGE")]
    pub registry_image: String,
    /// Namespace of the leader Lease (the operator's own namespace).
    #[arg(long, env = "WHARF_NAMESPACE", default_value = "wharf-system")]
    pub namespace: String,
    /// This replica's name in the Lease (the pod name); a random suffix makes it unique per process.
    #[arg(long, env = "WHARF_POD_NAME")]
    pub identity: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, default_value = "wharf-operator")]
    pub lease_name: String,
    /// How long a lease lasts without renewal before a standby takes over.
    #[arg(long, env = "WHARF_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// Run without leader election (a single replica, or development).
    #[arg(long, env = "WHARF_NO_LEADER_ELECTION")]
    pub no_leader_election: bool,
    /// Do not serve the Pod webhook on :8443 (ImagePullCredentials in PodWebhook mode then
    /// inject nothing through this replica).
    #[arg(long, env = "WHARF_NO_WEBHOOK")]
    pub no_webhook: bool,
    /// `json` (default) or `text`.
    #[arg(long, env = "WHARF_LOG_FORMAT", default_value = "json")]
    pub log_format: String,
    /// Address of the push events endpoint Registries report to (every replica serves it).
    #[arg(long, env = "WHARF_EVENTS_LISTEN", default_value = "0.0.0.0:8081")]
    pub events_listen: String,
    /// The URL registry pods reach that endpoint at [default:
    /// http://wharf-events.<namespace>.svc:8081]; `none` turns push events off.
    #[arg(long, env = "WHARF_EVENTS_URL")]
    pub events_url: Option<String>,
}

impl OperatorArgs {
    /// Where Registries send push events, unless they are off.
    pub fn events_url(&self) -> Option<String> {
        match self.events_url.as_deref() {
            Some("none") => None,
            Some(url) => Some(url.trim_end_matches('/').to_owned()),
            None => Some(format!("http://wharf-events.{}.svc:8081", self.namespace)),
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::duration::parse(s).map_err(|e| e.to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("cannot find a Kubernetes cluster (in-cluster config or KUBECONFIG): {0}")]
    Config(#[from] kube::config::InferConfigError),
    #[error("cannot create the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    #[error(
        "the {0} CRD ({1}) is not installed: run `kubectl apply -f crds/` or `kubectl apply -k config/crd`"
    )]
    CrdMissing(&'static str, &'static str),
    #[error("cannot reach the Kubernetes API: {0}")]
    Api(kube::Error),
    #[error("invalid listen address {0:?}")]
    Listen(String),
    #[error("cannot serve on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("lost the leader lease")]
    LeadershipLost,
}

/// A Kubernetes client whose every request is counted in `metrics` by verb. Leader election
/// gets a client of its own, outside the count, so the count says what reconciling costs.
async fn make_client(metrics: Option<Arc<Metrics>>) -> Result<Client, OperatorError> {
    let config = kube::Config::infer().await?;
    let Some(metrics) = metrics else {
        return Ok(Client::try_from(config)?);
    };
    let count = tower::util::MapRequestLayer::new(
        move |request: axum::http::Request<kube::client::Body>| {
            let watch = request
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
            let verb = match *request.method() {
                axum::http::Method::GET if watch => "WATCH",
                axum::http::Method::GET => "GET",
                axum::http::Method::POST => "POST",
                axum::http::Method::PUT => "PUT",
                axum::http::Method::PATCH => "PATCH",
                axum::http::Method::DELETE => "DELETE",
                _ => "OTHER",
            };
            metrics.api_request(verb);
            request
        },
    );
    let builder = kube::client::ClientBuilder::try_from(config)?;
    Ok(builder.with_layer(&count).build())
}

async fn check_crds(client: &Client) -> Result<(), OperatorError> {
    let probe = ListParams::default().limit(1);
    let missing = |kind, crd| {
        move |e: kube::Error| match e {
            kube::Error::Api(s) if s.code == 404 => OperatorError::CrdMissing(kind, crd),
            e => OperatorError::Api(e),
        }
    };
    Api::<Registry>::all(client.clone())
        .list_metadata(&probe)
        .await
        .map_err(missing("Registry", "registries.wharf.dev"))?;
    Api::<ImagePullCredential>::all(client.clone())
        .list_metadata(&probe)
        .await
        .map_err(missing(
            "ImagePullCredential",
            "imagepullcredentials.wharf.dev",
        ))?;
    Api::<crate::crd::retention_policy::RetentionPolicy>::all(client.clone())
        .list_metadata(&probe)
        .await
        .map_err(missing("RetentionPolicy", "retentionpolicies.wharf.dev"))?;
    Api::<crate::crd::replication_policy::ReplicationPolicy>::all(client.clone())
        .list_metadata(&probe)
        .await
        .map_err(missing(
            "ReplicationPolicy",
            "replicationpolicies.wharf.dev",
        ))?;
    Ok(())
}

async fn terminate_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

pub async fn run(args: OperatorArgs) -> Result<(), OperatorError> {
    crate::logging::init(args.log_format != "text");
    let listen: SocketAddr = crate::registry::config::parse_listen(&args.listen)
        .map_err(|_| OperatorError::Listen(args.listen.clone()))?;
    let metrics = Arc::new(Metrics::default());
    let client = make_client(Some(metrics.clone())).await?;
    check_crds(&client).await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| OperatorError::Bind {
            addr: listen,
            source,
        })?;
    let server = tokio::spawn(http::serve(listener, metrics.clone(), stop_rx.clone()));
    // Every replica serves the webhook, leader or not.
    let webhook = (!args.no_webhook).then(|| {
        let mut stop = stop_rx.clone();
        tokio::spawn(pullcredential::webhook::serve(
            client.clone(),
            args.namespace.clone(),
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        ))
    });

    // Every replica takes push events too: the Job a push starts is named after the push, so
    // whichever replica hears of it first starts it, once.
    let events_listen: SocketAddr = crate::registry::config::parse_listen(&args.events_listen)
        .map_err(|_| OperatorError::Listen(args.events_listen.clone()))?;
    let events_listener = tokio::net::TcpListener::bind(events_listen)
        .await
        .map_err(|source| OperatorError::Bind {
            addr: events_listen,
            source,
        })?;
    let events = {
        let mut stop = stop_rx.clone();
        tokio::spawn(replication::push_events::serve(
            events_listener,
            Arc::new(replication::push_events::Receiver {
                client: client.clone(),
                metrics: metrics.clone(),
                default_image: args.registry_image.clone(),
            }),
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        ))
    };

    // Unique per process, not per pod: a container the kubelet restarts in the same pod must
    // not inherit the lease its killed predecessor held (it would skip the wait and split-brain
    // with nobody, but it would also hide that the previous leader died). `<pod>_<random>`.
    let random = uuid::Uuid::new_v4().simple().to_string();
    let identity = format!(
        "{}_{}",
        args.identity.as_deref().unwrap_or("wharf-operator"),
        &random[..8]
    );
    tracing::info!(identity = %identity, listen = %listen, image = %args.registry_image, "operator starting");

    let lease_client = make_client(None).await?;
    let mut elector = (!args.no_leader_election).then(|| {
        LeaderElector::new(
            lease_client.clone(),
            LeaseConfig {
                namespace: args.namespace.clone(),
                name: args.lease_name.clone(),
                identity: identity.clone(),
                lease_duration: args.lease_duration,
                renew_deadline: args.lease_duration * 2 / 3,
                retry: (args.lease_duration / 7).max(Duration::from_millis(500)),
            },
        )
    });

    let terminate = terminate_signal();
    tokio::pin!(terminate);
    if let Some(elector) = elector.as_mut() {
        tracing::info!(lease = %args.lease_name, "waiting for the leader lease");
        tokio::select! {
            _ = elector.acquire() => {}
            _ = &mut terminate => {
                let _ = stop_tx.send(true);
                let _ = server.await;
                return Ok(());
            }
        }
        tracing::info!("leading");
    }
    metrics.set_leader(true);

    let reporter = Reporter {
        controller: "wharf-operator".into(),
        instance: Some(identity.clone()),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let registries = tokio::spawn(registry::run(
        client.clone(),
        recorder.clone(),
        metrics.clone(),
        args.registry_image.clone(),
        args.events_url(),
        stopped(shutdown_rx.clone()),
    ));
    let credentials = tokio::spawn(pullcredential::run(
        client.clone(),
        recorder.clone(),
        metrics.clone(),
        args.namespace.clone(),
        stopped(shutdown_rx.clone()),
    ));
    let retention = tokio::spawn(retention::run(
        client.clone(),
        recorder.clone(),
        metrics.clone(),
        args.registry_image.clone(),
        stopped(shutdown_rx.clone()),
    ));
    let replication = tokio::spawn(replication::run(
        client.clone(),
        recorder,
        metrics.clone(),
        args.registry_image.clone(),
        stopped(shutdown_rx),
    ));

    let lost = async {
        match elector.as_mut() {
            Some(e) => e.hold().await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        _ = lost => Err(OperatorError::LeadershipLost),
        _ = &mut terminate => Ok(()),
    };
    // Stop reconciling first, then hand the lease over, so two leaders never overlap.
    let _ = shutdown_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        let _ = registries.await;
        let _ = credentials.await;
        let _ = retention.await;
        let _ = replication.await;
    })
    .await;
    metrics.set_leader(false);
    if outcome.is_ok()
        && let Some(elector) = elector.as_mut()
    {
        elector.release().await;
    }
    let _ = stop_tx.send(true);
    let _ = server.await;
    if let Some(webhook) = webhook {
        let _ = tokio::time::timeout(Duration::from_secs(5), webhook).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), events).await;
    tracing::info!("operator stopped");
    outcome
}
