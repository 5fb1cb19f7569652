//! One pass over a ReplicationPolicy: check the policy → its Registries, Secrets and robot
//! credentials → the ConfigMap runs mount and the CronJob → an on-demand run when asked →
//! the newest finished run's summary → status.

use super::Context;
use super::build::{self, BuildError, RunKind, Target};
use super::credentials;
use super::names::{FINALIZER, PolicyNames, Side};
use super::runs::{self, Jobs};
use super::status::{Observed, compute, describe};
use crate::crd::registry::Registry;
use crate::crd::replication_policy::{RegistrySide, ReplicationEndpoint, ReplicationPolicy};
use crate::crd::retention_policy::REQUESTED_AT_ANNOTATION;
use crate::operator::apply::apply;
use crate::operator::finalizers;
pub use crate::operator::policy_runs::ReconcileError;
use crate::operator::policy_runs::{self, api_error};
use crate::operator::retention::status::Blocker;
use crate::operator::robots::{self, RobotError};
use crate::replication::select::Rules;
use crate::replication::throttle::parse_rate;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// How soon to look again while waiting for a Registry to mint a robot.
const WAIT_RETRY: Duration = Duration::from_secs(15);
/// How soon to look again while a run is going on (its Job's change triggers a pass anyway).
const RUNNING_RETRY: Duration = Duration::from_secs(30);
/// A deleted policy whose Registry cannot be reached gives up revoking its robots after this.
const REVOKE_PATIENCE: Duration = Duration::from_secs(300);

/// Whether the spec can be run at all: rules that compile and options that parse (what CEL
/// cannot check). Pure.
pub fn check(policy: &ReplicationPolicy) -> Result<(), String> {
    Rules::compile(&policy.spec.rules).map_err(|e| e.to_string())?;
    if let Some(limit) = policy
        .spec
        .options
        .as_ref()
        .and_then(|o| o.bandwidth_limit.as_deref())
        && parse_rate(limit).is_none()
    {
        return Err(format!(
            "options.bandwidthLimit {limit:?} is not bytes per second such as 50Mi"
        ));
    }
    Ok(())
}

/// Both ends of a policy as found in the cluster.
pub struct Ends {
    pub source: Option<Registry>,
    pub destination: Option<Registry>,
}

impl Ends {
    pub async fn fetch(
        policy: &ReplicationPolicy,
        registries: &Api<Registry>,
    ) -> Result<Ends, ReconcileError> {
        let get = |side: &Option<crate::crd::common::LocalObjectReference>| {
            let name = side.as_ref().map(|r| r.name.clone());
            async move {
                match name {
                    Some(name) => registries
                        .get_opt(&name)
                        .await
                        .map_err(api_error(format!("read Registry {name}"))),
                    None => Ok(None),
                }
            }
        };
        Ok(Ends {
            source: get(&policy.spec.source.registry_ref).await?,
            destination: get(&policy.spec.destination.registry_ref).await?,
        })
    }

    fn registry(&self, side: Side) -> Option<&Registry> {
        match side {
            Side::Source => self.source.as_ref(),
            Side::Destination => self.destination.as_ref(),
        }
    }

    /// The targets a run is built from; `None` while a named Registry is missing.
    pub fn targets<'a>(
        &'a self,
        policy: &'a ReplicationPolicy,
    ) -> Option<(Target<'a>, Target<'a>)> {
        let target = |side: Side, spec_side: Option<&'a ReplicationEndpoint>| match (
            self.registry(side),
            spec_side,
        ) {
            (Some(registry), _) => Some(Target::Wharf(registry)),
            (None, Some(endpoint)) => Some(Target::Endpoint(endpoint)),
            (None, None) => None,
        };
        Some((
            target(Side::Source, policy.spec.source.endpoint.as_ref())?,
            target(Side::Destination, policy.spec.destination.endpoint.as_ref())?,
        ))
    }
}

fn endpoint_secrets(policy: &ReplicationPolicy) -> Vec<(Side, &'static str, String)> {
    let mut out = Vec::new();
    let sides: [(Side, Option<&ReplicationEndpoint>); 2] = [
        (Side::Source, policy.spec.source.endpoint.as_ref()),
        (Side::Destination, policy.spec.destination.endpoint.as_ref()),
    ];
    for (side, endpoint) in sides {
        if let Some(endpoint) = endpoint {
            if let Some(s) = &endpoint.credentials_secret_ref {
                out.push((side, "credentialsSecretRef", s.name.clone()));
            }
            if let Some(s) = &endpoint.ca_secret_ref {
                out.push((side, "caSecretRef", s.name.clone()));
            }
        }
    }
    out
}

fn side_spec(policy: &ReplicationPolicy, side: Side) -> RegistrySide {
    match side {
        Side::Source => policy.spec.source.clone(),
        Side::Destination => RegistrySide {
            registry_ref: policy.spec.destination.registry_ref.clone(),
            endpoint: policy.spec.destination.endpoint.clone(),
        },
    }
}

pub async fn reconcile(
    policy: Arc<ReplicationPolicy>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let namespace = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let names = PolicyNames {
        policy: &name,
        namespace: &namespace,
    };
    let registries: Api<Registry> = Api::namespaced(ctx.client.clone(), &namespace);
    let ends = Ends::fetch(&policy, &registries).await?;
    if policy.meta().deletion_timestamp.is_some() {
        return cleanup(&policy, &ends, &ctx).await;
    }
    let mut observed = Observed {
        blocker: None,
        active_runs: Vec::new(),
        last_run: None,
        last_requested_at: None,
    };
    if let Err(e) = check(&policy) {
        observed.blocker = Some(Blocker::Invalid(e));
        write_status(&policy, observed, &ctx).await?;
        return Ok(Action::await_change());
    }
    let uses_registries =
        policy.spec.source.registry_ref.is_some() || policy.spec.destination.registry_ref.is_some();
    if uses_registries {
        let api: Api<ReplicationPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
        finalizers::ensure(&api, policy.as_ref(), FINALIZER)
            .await
            .map_err(api_error("add the cleanup finalizer"))?;
    }
    let owner = policy
        .controller_owner_ref(&())
        .expect("a stored ReplicationPolicy has a name and uid");

    for side in [Side::Source, Side::Destination] {
        if let (Some(r), None) = (side_spec(&policy, side).registry_ref, ends.registry(side)) {
            observed.blocker.get_or_insert(Blocker::Missing {
                reason: "RegistryNotFound",
                message: format!(
                    "the {} Registry {namespace}/{} does not exist",
                    side.word(),
                    r.name
                ),
            });
        }
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    for (side, field, secret) in endpoint_secrets(&policy) {
        if observed.blocker.is_some() {
            break;
        }
        let found = secrets
            .get_metadata_opt(&secret)
            .await
            .map_err(api_error(format!("read Secret {secret}")))?;
        if found.is_none() {
            observed.blocker = Some(Blocker::Missing {
                reason: "SecretNotFound",
                message: format!(
                    "{}.endpoint.{field} names Secret {namespace}/{secret}, which does not exist",
                    side.word()
                ),
            });
        }
    }
    if observed.blocker.is_some() {
        write_status(&policy, observed, &ctx).await?;
        return Ok(Action::requeue(WAIT_RETRY));
    }

    for side in [Side::Source, Side::Destination] {
        let Some(registry) = ends.registry(side) else {
            continue;
        };
        let grant = credentials::grant(&policy, &owner, side);
        let live = secrets
            .get_opt(&grant.secret_name())
            .await
            .map_err(api_error(format!("read the {} credential", side.word())))?;
        let plan = robots::plan(live.as_ref(), &grant, registry);
        match robots::carry_out(plan, &ctx.client, &grant, registry, live.as_ref()).await {
            Ok(Some(secret)) => {
                apply(&secrets, &secret, None).await?;
            }
            Ok(None) => {}
            Err(RobotError::Api(e)) => {
                return Err(ReconcileError::Api {
                    what: e.what,
                    source: e.source,
                });
            }
            Err(e) => {
                observed.blocker = Some(Blocker::Waiting {
                    reason: "RegistryUnreachable",
                    message: format!("cannot mint the {} credential: {e}", side.word()),
                });
                write_status(&policy, observed, &ctx).await?;
                return Ok(Action::requeue(WAIT_RETRY));
            }
        }
    }

    let (source, destination) = ends.targets(&policy).expect("both ends were found above");
    let pod = match build::run_pod(
        &policy,
        source,
        destination,
        &ctx.default_image,
        &RunKind::Scheduled,
    ) {
        Ok(pod) => pod,
        Err(e @ BuildError::NoCa(_)) => {
            observed.blocker = Some(Blocker::Invalid(e.to_string()));
            write_status(&policy, observed, &ctx).await?;
            return Ok(Action::await_change());
        }
    };
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    let desired = build::config_map(&policy, &owner);
    let live = config_maps
        .get_opt(&names.config())
        .await
        .map_err(api_error("read the policy ConfigMap"))?;
    apply(&config_maps, &desired, live.as_ref()).await?;
    let cron_jobs: Api<CronJob> = Api::namespaced(ctx.client.clone(), &namespace);
    policy_runs::keep_schedule(
        &cron_jobs,
        &names.cron_job(),
        build::cron_job(&policy, &owner, pod),
        owner.uid.as_str(),
    )
    .await?;

    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let jobs = Jobs::sort(
        jobs_api
            .list(&ListParams::default().labels(&build::jobs_selector(&name)))
            .await
            .map_err(api_error("list the policy's Jobs"))?
            .items,
    );
    observed.active_runs = jobs.active.clone();
    let previous = policy.status.clone().unwrap_or_default();

    // An on-demand run, once per `requested-at` value, never beside another full run.
    if let Some(requested) = policy.annotations().get(REQUESTED_AT_ANNOTATION)
        && previous.last_requested_at.as_ref() != Some(requested)
        && observed.active_runs.is_empty()
    {
        let dry_run = policy_runs::requested_dry_run(policy.annotations());
        let kind = RunKind::Requested {
            requested_at: requested.clone(),
            dry_run,
        };
        let pod = build::run_pod(&policy, source, destination, &ctx.default_image, &kind)
            .expect("built above with the same inputs");
        let job = build::job(&policy, &owner, pod, &kind);
        policy_runs::start_job(&jobs_api, &job)
            .await
            .map_err(api_error("start the requested run"))?;
        let job_name = job.name_any();
        publish(
            &ctx,
            &policy,
            EventType::Normal,
            "RunRequested",
            format!(
                "started Job {job_name}{}",
                match dry_run.unwrap_or(policy.spec.dry_run()) {
                    true => " (dry run)",
                    false => "",
                }
            ),
        )
        .await;
        observed.active_runs.push(job_name);
        observed.last_requested_at = Some(requested.clone());
    }

    let shown = previous.last_run.as_ref().map(|r| r.job_name.as_str());
    if let Some(job) = &jobs.newest_finished
        && shown != Some(job.name_any().as_str())
    {
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
        let run = runs::observe(&pods, job).await.map_err(api_error(format!(
            "read the results of Job {}",
            job.name_any()
        )))?;
        ctx.metrics.replication_run(&run);
        publish(
            &ctx,
            &policy,
            if run.succeeded {
                EventType::Normal
            } else {
                EventType::Warning
            },
            "RunFinished",
            describe(&run),
        )
        .await;
        observed.last_run = Some(run);
    }

    let running = !observed.active_runs.is_empty();
    write_status(&policy, observed, &ctx).await?;
    Ok(if running {
        Action::requeue(RUNNING_RETRY)
    } else {
        Action::await_change()
    })
}

async fn write_status(
    policy: &ReplicationPolicy,
    observed: Observed,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    let status = compute(policy, observed, &Time(Timestamp::now()));
    policy_runs::write_status(
        &ctx.client,
        policy,
        "ReplicationPolicy",
        policy.status.as_ref(),
        &status,
    )
    .await
}

/// Revokes the robots (what the Secrets owned by the policy cannot take with them), then lets
/// the policy go. A Registry that stays unreachable is given up on after a while.
async fn cleanup(
    policy: &ReplicationPolicy,
    ends: &Ends,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    if !policy.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let (name, namespace) = (policy.name_any(), policy.namespace().unwrap_or_default());
    let names = PolicyNames {
        policy: &name,
        namespace: &namespace,
    };
    for side in [Side::Source, Side::Destination] {
        let Some(registry) = ends.registry(side) else {
            continue;
        };
        if let Err(e) = robots::revoke(&ctx.client, &names.robot(side), registry).await {
            let waited = policy
                .meta()
                .deletion_timestamp
                .as_ref()
                .map(|t| Timestamp::now().duration_since(t.0).as_secs())
                .unwrap_or(0);
            if waited < REVOKE_PATIENCE.as_secs() as i64 {
                tracing::info!(policy = %name, side = side.word(), error = %e, "cannot revoke a run credential yet; retrying");
                return Ok(Action::requeue(WAIT_RETRY));
            }
            publish(
                ctx,
                policy,
                EventType::Warning,
                "RevokeFailed",
                format!(
                    "gave up revoking the {} robot account after {waited}s: {e}",
                    side.word()
                ),
            )
            .await;
        }
    }
    let api: Api<ReplicationPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizers::remove(&api, policy, FINALIZER)
        .await
        .map_err(api_error("remove the cleanup finalizer"))?;
    Ok(Action::await_change())
}

pub async fn publish(
    ctx: &Context,
    policy: &ReplicationPolicy,
    type_: EventType,
    reason: &str,
    note: String,
) {
    crate::operator::events::publish(&ctx.recorder, policy, type_, "Reconcile", reason, note).await;
}
