//! `wharf replicate`: one run of a replication policy from a source registry to a destination
//! registry (src/replication/). The policy file is the ReplicationPolicy's spec as JSON (the
//! operator writes it; by hand, `kubectl get replicationpolicy NAME -o json | jq .spec` will
//! do). Credentials come from mounted Secret directories or the environment, never from
//! arguments. The summary goes to stdout and the termination message; with `--report`, every
//! tag's outcome goes to that file.

use super::{JobError, report};
use crate::crd::replication_policy::{OptionsSpec, ReplicationRule};
use crate::oci_client::{Client, Credentials, Endpoint, RetryPolicy};
use crate::replication::names::Naming;
use crate::replication::select::Rules;
use crate::replication::throttle::parse_rate;
use crate::replication::{Options, Replicator, Scope};
use clap::Args;
use serde::Deserialize;
use std::path::PathBuf;

/// The termination message holds 4096 bytes; the summary is cut to fit.
const TERMINATION_LIMIT: usize = 4000;

#[derive(Debug, Args)]
pub struct ReplicateArgs {
    /// The registry to read, e.g. https://registry.example.org.
    #[arg(long, env = "WHARF_SOURCE_URL")]
    pub source: String,
    /// A mounted Secret: `.dockerconfigjson`, or `username` and `password` (otherwise
    /// WHARF_SOURCE_USERNAME / WHARF_SOURCE_PASSWORD, or anonymous).
    #[arg(long, env = "WHARF_SOURCE_CREDENTIALS")]
    pub source_credentials: Option<PathBuf>,
    #[arg(long, env = "WHARF_SOURCE_CA_FILE")]
    pub source_ca_file: Option<PathBuf>,
    #[arg(long)]
    pub source_insecure: bool,
    /// The registry to write.
    #[arg(long, env = "WHARF_DESTINATION_URL")]
    pub destination: String,
    #[arg(long, env = "WHARF_DESTINATION_CREDENTIALS")]
    pub destination_credentials: Option<PathBuf>,
    #[arg(long, env = "WHARF_DESTINATION_CA_FILE")]
    pub destination_ca_file: Option<PathBuf>,
    #[arg(long)]
    pub destination_insecure: bool,
    /// The policy: the ReplicationPolicy spec as JSON.
    #[arg(long, env = "WHARF_POLICY_FILE")]
    pub policy: PathBuf,
    /// Only this source repository (a push-triggered run).
    #[arg(long)]
    pub repository: Option<String>,
    /// Only this tag of `--repository`.
    #[arg(long, requires = "repository")]
    pub tag: Option<String>,
    /// Overrides the policy's `options.dryRun`.
    #[arg(long)]
    pub dry_run: Option<bool>,
    /// Where to write every tag's outcome (JSON).
    #[arg(long)]
    pub report: Option<PathBuf>,
    #[arg(long, default_value = "/dev/termination-log")]
    pub termination_log: PathBuf,
}

/// The spec's fields a run uses; `source`, `trigger` and `history` are the operator's.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    source: Option<serde_json::Value>,
    #[serde(default)]
    destination: Option<DestinationNames>,
    rules: Vec<ReplicationRule>,
    #[serde(default)]
    trigger: Option<serde_json::Value>,
    #[serde(default)]
    options: Option<OptionsSpec>,
    #[serde(default)]
    history: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DestinationNames {
    #[serde(default)]
    registry_ref: Option<serde_json::Value>,
    #[serde(default)]
    endpoint: Option<serde_json::Value>,
    #[serde(default)]
    strip_prefix: Option<String>,
    #[serde(default)]
    repository_prefix: Option<String>,
}

pub async fn run(args: ReplicateArgs) -> Result<(), JobError> {
    // Per-tag lines on stderr (JSON unless a person runs it at a terminal); stdout is the summary.
    crate::logging::init(!std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let text = std::fs::read_to_string(&args.policy)
        .map_err(|e| JobError::Invalid(format!("cannot read {}: {e}", args.policy.display())))?;
    let policy: PolicyFile = serde_json::from_str(&text).map_err(|e| {
        JobError::Invalid(format!(
            "{} is not a ReplicationPolicy spec: {e}",
            args.policy.display()
        ))
    })?;
    let _ = (&policy.source, &policy.trigger, &policy.history);
    let rules = Rules::compile(&policy.rules).map_err(|e| JobError::Invalid(e.to_string()))?;
    let names = policy.destination.unwrap_or_default();
    let _ = (&names.registry_ref, &names.endpoint);
    let naming = Naming {
        strip_prefix: names.strip_prefix.unwrap_or_default(),
        repository_prefix: names.repository_prefix.unwrap_or_default(),
    };
    let options = options(policy.options.unwrap_or_default(), args.dry_run)?;
    let source = client(
        &args.source,
        args.source_credentials.as_ref(),
        "WHARF_SOURCE",
        args.source_ca_file.clone(),
        args.source_insecure,
    )?;
    let destination = client(
        &args.destination,
        args.destination_credentials.as_ref(),
        "WHARF_DESTINATION",
        args.destination_ca_file.clone(),
        args.destination_insecure,
    )?;
    tracing::info!(source = %args.source, destination = %args.destination, dry_run = options.dry_run, "replication run starts");
    let replicator = Replicator::new(source, destination, rules, naming, options);
    let scope = Scope {
        repository: args.repository.clone(),
        tag: args.tag.clone(),
    };
    let (run, tags) = replicator.run(&scope).await;
    if let Some(path) = &args.report {
        let text = serde_json::to_string_pretty(&tags).unwrap_or_default();
        std::fs::write(path, text)
            .map_err(|e| JobError::Invalid(format!("cannot write {}: {e}", path.display())))?;
    }
    report(&fitted(&run), &args.termination_log);
    if run.succeeded {
        Ok(())
    } else {
        Err(JobError::Invalid(format!(
            "{} of {} tags failed{}",
            run.failed,
            run.tags_selected,
            run.message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        )))
    }
}

fn options(spec: OptionsSpec, dry_run: Option<bool>) -> Result<Options, JobError> {
    let bandwidth_limit = spec
        .bandwidth_limit
        .as_deref()
        .map(|text| {
            parse_rate(text).ok_or_else(|| {
                JobError::Invalid(format!(
                    "options.bandwidthLimit {text:?} is not bytes per second such as 50Mi"
                ))
            })
        })
        .transpose()?;
    Ok(Options {
        overwrite: spec.overwrite.unwrap_or(false),
        replicate_deletion: spec.replicate_deletion.unwrap_or(false),
        concurrency: spec.concurrency.unwrap_or(4).clamp(1, 64) as usize,
        dry_run: dry_run.or(spec.dry_run).unwrap_or(false),
        bandwidth_limit,
    })
}

fn client(
    url: &str,
    secret_dir: Option<&PathBuf>,
    env_prefix: &str,
    ca_file: Option<PathBuf>,
    insecure: bool,
) -> Result<Client, JobError> {
    let host = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| {
            Some(match u.port() {
                Some(p) => format!("{}:{p}", u.host_str()?),
                None => u.host_str()?.to_owned(),
            })
        })
        .ok_or_else(|| JobError::Url(url.to_owned()))?;
    let credentials = match secret_dir {
        Some(dir) => Some(
            Credentials::from_secret_dir(dir, &host)
                .map_err(|e| JobError::Invalid(e.to_string()))?,
        ),
        None => match (
            std::env::var(format!("{env_prefix}_USERNAME")),
            std::env::var(format!("{env_prefix}_PASSWORD")),
        ) {
            (Ok(username), Ok(password)) if !username.is_empty() => {
                Some(Credentials { username, password })
            }
            _ => None,
        },
    };
    let endpoint = Endpoint {
        url: url.to_owned(),
        credentials,
        ca_file,
        insecure,
    };
    Client::new(&endpoint, RetryPolicy::default()).map_err(|e| JobError::Invalid(e.to_string()))
}

/// The summary as JSON within the termination message's size, dropping quoted failures from
/// the end (their count stays).
fn fitted(run: &crate::crd::replication_policy::ReplicationRun) -> serde_json::Value {
    let mut run = run.clone();
    for failure in &mut run.failures {
        if failure.reason.len() > 300 {
            let mut end = 300;
            while !failure.reason.is_char_boundary(end) {
                end -= 1;
            }
            failure.reason.truncate(end);
            failure.reason.push('…');
        }
    }
    loop {
        let value = serde_json::to_value(&run).unwrap_or_default();
        if value.to_string().len() <= TERMINATION_LIMIT || run.failures.is_empty() {
            return value;
        }
        run.failures.pop();
    }
}
