//! One pass over a RetentionPolicy: check the policy → its Registry and robot credential →
//! the ConfigMap runs mount and the CronJob → an on-demand run when asked → the newest run's
//! results (report ConfigMap, garbage collection after it) → status.

use super::Context;
use super::build::{self, BuildError};
use super::credential::{self, CredentialError};
use super::names::{FINALIZER, PolicyNames};
use super::runs::{self, Jobs};
use super::status::{Blocker, Observed, compute};
use crate::crd::registry::Registry;
use crate::crd::retention_policy::{REQUESTED_AT_ANNOTATION, RetentionPolicy};
use crate::jobs::retention::{Api as RegistryApi, parse_policy};
use crate::operator::apply::apply;
pub use crate::operator::policy_runs::ReconcileError;
use crate::operator::policy_runs::{self, api_error};
use crate::operator::{finalizers, job_results};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// How soon to look again while waiting for a Registry or the cluster listing.
const WAIT_RETRY: Duration = Duration::from_secs(15);
/// How soon to look again while a run is going on (its Job's change triggers a pass anyway).
const RUNNING_RETRY: Duration = Duration::from_secs(30);
/// A deleted policy whose Registry cannot be reached gives up revoking its robot after this.
const REVOKE_PATIENCE: Duration = Duration::from_secs(300);

pub async fn reconcile(
    policy: Arc<RetentionPolicy>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let namespace = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let names = PolicyNames {
        policy: &name,
        namespace: &namespace,
    };
    let registries: Api<Registry> = Api::namespaced(ctx.client.clone(), &namespace);
    let registry = match &policy.spec.registry_ref {
        Some(r) => registries
            .get_opt(&r.name)
            .await
            .map_err(api_error(format!("read Registry {namespace}/{}", r.name)))?,
        None => None,
    };
    if policy.meta().deletion_timestamp.is_some() {
        return cleanup(&policy, registry.as_ref(), &ctx).await;
    }
    let api = match policy.spec.registry_ref {
        Some(_) => RegistryApi::Wharf,
        None => RegistryApi::Oci,
    };
    let mut observed = Observed {
        blocker: None,
        active_run: None,
        last_run: None,
        last_garbage_collection: None,
        last_requested_at: None,
    };
    if let Err(e) = parse_policy(&build::policy_json(&policy), api) {
        observed.blocker = Some(Blocker::Invalid(e.to_string()));
        write_status(&policy, observed, &ctx).await?;
        return Ok(Action::await_change());
    }
    if policy.spec.registry_ref.is_some() {
        ensure_finalizer(&policy, &ctx).await?;
    }
    let owner = policy
        .controller_owner_ref(&())
        .expect("a stored RetentionPolicy has a name and uid");

    if let (Some(r), None) = (&policy.spec.registry_ref, &registry) {
        observed.blocker = Some(Blocker::Missing {
            reason: "RegistryNotFound",
            message: format!("Registry {namespace}/{} does not exist", r.name),
        });
    }
    let in_use = match (policy.spec.in_use_protection(), ctx.in_use.snapshot()) {
        (false, _) => String::new(),
        (true, Some(list)) => list,
        (true, None) => {
            observed.blocker.get_or_insert(Blocker::Waiting {
                reason: "ListingCluster",
                message: "listing the images Pods and workloads use, which runs protect".into(),
            });
            String::new()
        }
    };
    if observed.blocker.is_some() {
        write_status(&policy, observed, &ctx).await?;
        return Ok(Action::requeue(WAIT_RETRY));
    }

    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    if let Some(registry) = &registry {
        let live = secrets
            .get_opt(&names.credential())
            .await
            .map_err(api_error("read the run credential"))?;
        let grant = credential::grant(&policy, &owner);
        let plan = credential::plan(live.as_ref(), &grant, registry);
        match credential::carry_out(plan, &ctx.client, &grant, registry, live.as_ref()).await {
            Ok(Some(secret)) => {
                apply(&secrets, &secret, None).await?;
            }
            Ok(None) => {}
            Err(CredentialError::Api(e)) => {
                return Err(ReconcileError::Api {
                    what: e.what,
                    source: e.source,
                });
            }
            Err(e) => {
                observed.blocker = Some(Blocker::Waiting {
                    reason: "RegistryUnreachable",
                    message: format!("cannot mint the run credential: {e}"),
                });
                write_status(&policy, observed, &ctx).await?;
                return Ok(Action::requeue(WAIT_RETRY));
            }
        }
    }

    let pod = match build::run_pod(&policy, registry.as_ref(), &ctx.default_image, None) {
        Ok(pod) => pod,
        Err(e @ (BuildError::NoCa | BuildError::NoRegistry)) => {
            observed.blocker = Some(Blocker::Invalid(e.to_string()));
            write_status(&policy, observed, &ctx).await?;
            return Ok(Action::await_change());
        }
    };
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    let desired = build::config_map(&policy, &owner, &in_use);
    let live = config_maps
        .get_opt(&names.config())
        .await
        .map_err(api_error("read the policy ConfigMap"))?;
    apply(&config_maps, &desired, live.as_ref()).await?;
    let cron_jobs: Api<CronJob> = Api::namespaced(ctx.client.clone(), &namespace);
    policy_runs::keep_schedule(
        &cron_jobs,
        &names.cron_job(),
        build::cron_job(&policy, &owner, pod.clone()),
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
    observed.active_run = jobs.active_run.clone();
    let previous = policy.status.clone().unwrap_or_default();
    let mut requeue = None;

    // An on-demand run, once per `requested-at` value, never beside another run.
    if let Some(requested) = policy.annotations().get(REQUESTED_AT_ANNOTATION)
        && previous.last_requested_at.as_ref() != Some(requested)
    {
        if observed.active_run.is_some() {
            requeue = Some(RUNNING_RETRY);
        } else {
            let dry_run = policy_runs::requested_dry_run(policy.annotations());
            let pod = build::run_pod(&policy, registry.as_ref(), &ctx.default_image, dry_run)
                .expect("built above with the same inputs");
            let job = build::requested_job(&policy, &owner, pod, requested);
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
                    "started Job {job_name} ({})",
                    match dry_run.unwrap_or(policy.spec.dry_run()) {
                        true => "dry run",
                        false => "deleting",
                    }
                ),
            )
            .await;
            observed.active_run = Some(job_name);
            observed.last_requested_at = Some(requested.clone());
        }
    }

    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let shown = previous.last_run.as_ref().map(|r| r.job_name.as_str());
    if let Some(job) = &jobs.newest_run
        && shown != Some(job.name_any().as_str())
    {
        let (run, candidates) = runs::observe_run(&pods, job, &names.report())
            .await
            .map_err(api_error(format!(
                "read the results of Job {}",
                job.name_any()
            )))?;
        if let Some(candidates) = candidates {
            let desired = build::report_config_map(&policy, &owner, &run, &candidates);
            let live = config_maps
                .get_opt(&names.report())
                .await
                .map_err(api_error("read the report ConfigMap"))?;
            apply(&config_maps, &desired, live.as_ref()).await?;
        }
        publish(
            &ctx,
            &policy,
            if run.succeeded == Some(true) {
                EventType::Normal
            } else {
                EventType::Warning
            },
            "RunFinished",
            format!(
                "Job {}: {} tags evaluated, {} to delete, {} deleted{}",
                run.job_name,
                run.tags_evaluated.unwrap_or(0),
                run.tags_to_delete.unwrap_or(0),
                run.tags_deleted.unwrap_or(0),
                run.message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
        )
        .await;
        observed.last_run = Some(run);
    }

    // Garbage collection after a run that deleted something, once per run.
    let newest = observed.last_run.clone().or(previous.last_run.clone());
    if policy.spec.garbage_collection()
        && let (Some(run), Some(registry)) = (&newest, &registry)
        && runs::deleted_something(run)
    {
        let gc_name = names.gc_job(&run.job_name);
        let shown_gc = previous
            .last_garbage_collection
            .as_ref()
            .map(|g| g.job_name.as_str());
        if shown_gc != Some(gc_name.as_str()) {
            match jobs.named(&gc_name) {
                Some(job) if job_results::finished(job) => {
                    observed.last_garbage_collection = Some(
                        job_results::observe_gc(&pods, job)
                            .await
                            .map_err(api_error(format!("read the results of Job {gc_name}")))?,
                    );
                }
                Some(_) => requeue = Some(RUNNING_RETRY),
                None if observed.active_run.is_none() => {
                    match build::gc_job(
                        &policy,
                        &owner,
                        registry,
                        &ctx.default_image,
                        &run.job_name,
                    ) {
                        Ok(job) => match jobs_api.create(&PostParams::default(), &job).await {
                            Ok(_) => {}
                            Err(kube::Error::Api(s)) if s.code == 409 => {}
                            Err(e) => return Err(api_error("start garbage collection")(e)),
                        },
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot build the garbage collection Job")
                        }
                    }
                    requeue = Some(RUNNING_RETRY);
                }
                None => requeue = Some(RUNNING_RETRY),
            }
        }
    }

    if observed.active_run.is_some() {
        requeue = Some(RUNNING_RETRY);
    }
    write_status(&policy, observed, &ctx).await?;
    Ok(match requeue {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

async fn write_status(
    policy: &RetentionPolicy,
    observed: Observed,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    let status = compute(policy, observed, &Time(Timestamp::now()));
    policy_runs::write_status(
        &ctx.client,
        policy,
        "RetentionPolicy",
        policy.status.as_ref(),
        &status,
    )
    .await
}

async fn ensure_finalizer(policy: &RetentionPolicy, ctx: &Context) -> Result<(), ReconcileError> {
    let api: Api<RetentionPolicy> =
        Api::namespaced(ctx.client.clone(), &policy.namespace().unwrap_or_default());
    finalizers::ensure(&api, policy, FINALIZER)
        .await
        .map_err(api_error("add the cleanup finalizer"))
}

/// Revokes the robot (what the Secret owned by the policy cannot take with it), then lets the
/// policy go. A Registry that stays unreachable is given up on after a while.
async fn cleanup(
    policy: &RetentionPolicy,
    registry: Option<&Registry>,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    if !policy.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let (name, namespace) = (policy.name_any(), policy.namespace().unwrap_or_default());
    let robot = PolicyNames {
        policy: &name,
        namespace: &namespace,
    }
    .robot();
    if let Some(registry) = registry
        && let Err(e) = credential::revoke(&ctx.client, &robot, registry).await
    {
        let waited = policy
            .meta()
            .deletion_timestamp
            .as_ref()
            .map(|t| Timestamp::now().duration_since(t.0).as_secs())
            .unwrap_or(0);
        if waited < REVOKE_PATIENCE.as_secs() as i64 {
            tracing::info!(policy = %policy.name_any(), error = %e, "cannot revoke the run credential yet; retrying");
            return Ok(Action::requeue(WAIT_RETRY));
        }
        publish(
            ctx,
            policy,
            EventType::Warning,
            "RevokeFailed",
            format!("gave up revoking the robot account after {waited}s: {e}"),
        )
        .await;
    }
    let api: Api<RetentionPolicy> =
        Api::namespaced(ctx.client.clone(), &policy.namespace().unwrap_or_default());
    finalizers::remove(&api, policy, FINALIZER)
        .await
        .map_err(api_error("remove the cleanup finalizer"))?;
    Ok(Action::await_change())
}

async fn publish(
    ctx: &Context,
    policy: &RetentionPolicy,
    type_: EventType,
    reason: &str,
    note: String,
) {
    crate::operator::events::publish(&ctx.recorder, policy, type_, "Reconcile", reason, note).await;
}
