//! `wharf gc`: one garbage collection of a wharf registry, through its admin API. The Registry
//! controller runs it on `spec.garbageCollection.schedule`; its summary becomes
//! `status.lastGarbageCollection`.

use super::{JobError, client, report};
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct GcArgs {
    /// The registry, e.g. https://main.registry.svc:5000.
    #[arg(long, env = "WHARF_REGISTRY_URL")]
    pub registry: String,
    /// CA certificate (PEM) to trust for an https:// registry.
    #[arg(long, env = "WHARF_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Report what would be deleted without deleting.
    #[arg(long)]
    pub dry_run: bool,
    /// Unreferenced blobs younger than this are kept.
    #[arg(long, default_value = "1h")]
    pub grace_period: String,
    /// Also delete untagged manifests older than --untagged-grace-period.
    #[arg(long)]
    pub delete_untagged: bool,
    #[arg(long, default_value = "24h")]
    pub untagged_grace_period: String,
    /// Where Kubernetes reads the container's termination message.
    #[arg(long, default_value = "/dev/termination-log")]
    pub termination_log: PathBuf,
}

pub async fn run(args: GcArgs) -> Result<(), JobError> {
    for (flag, value) in [
        ("--grace-period", &args.grace_period),
        ("--untagged-grace-period", &args.untagged_grace_period),
    ] {
        crate::duration::parse(value).map_err(|e| JobError::Invalid(format!("{flag}: {e}")))?;
    }
    let admin = client(&args.registry, args.ca_file.as_deref())?;
    let mut request = serde_json::json!({"dryRun": args.dry_run, "gracePeriod": args.grace_period});
    if args.delete_untagged {
        request["deleteUntagged"] = true.into();
        request["untaggedGracePeriod"] = args.untagged_grace_period.clone().into();
    }
    let result = admin.collect_garbage(request).await?;
    let summary = serde_json::json!({
        "dryRun": result["dryRun"],
        "blobsDeleted": result["blobsDeleted"],
        "bytesFreed": result["bytesFreed"],
        "manifestsDeleted": result["manifestsDeleted"],
        "durationMs": result["durationMs"],
    });
    report(&summary, &args.termination_log);
    Ok(())
}
