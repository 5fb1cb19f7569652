use clap::{Parser, Subcommand};
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

/// wharf: container registries on Kubernetes, and the OCI registry server they run.
#[derive(Parser)]
#[command(name = "wharf", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the OCI registry server (Distribution Spec v1.1, Docker Registry API v2).
    Registry(wharf::registry::config::RegistryArgs),
    /// Run the controllers for the wharf.dev kinds.
    Operator(wharf::operator::OperatorArgs),
    /// Run one garbage collection of a wharf registry through its admin API (a Job's command).
    Gc(wharf::jobs::gc::GcArgs),
    /// Run a retention policy once against a wharf registry (a Job's command).
    Retention(wharf::jobs::retention::RetentionArgs),
    /// Copy the images a replication policy selects from one registry to another, digest for
    /// digest (a Job's command, also run by hand).
    Replicate(wharf::jobs::replicate::ReplicateArgs),
    /// Keep containerd's registry host configuration on this node (a Registry's nodeAccess
    /// DaemonSet).
    NodeConfig(wharf::node::NodeConfigArgs),
    /// Write the CustomResourceDefinitions generated from the Rust types.
    Crdgen {
        /// Directory to write one YAML file per kind into; without it, print them all.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // One TLS implementation for every client in the process (the S3 client's reqwest, kube):
    // ring, which the server side uses too.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match Cli::parse().command {
        Command::Registry(args) => run_async(wharf::registry::server::run(args)),
        Command::Operator(args) => run_async(wharf::operator::run(args)),
        Command::Gc(args) => run_async(wharf::jobs::gc::run(args)),
        Command::Retention(args) => run_async(wharf::jobs::retention::run(args)),
        Command::Replicate(args) => run_async(wharf::jobs::replicate::run(args)),
        Command::NodeConfig(args) => run_async(wharf::node::run(args)),
        Command::Crdgen { out } => crdgen(out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("wharf: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run_async<E: std::fmt::Display>(
    task: impl Future<Output = Result<(), E>>,
) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(task).map_err(|e| e.to_string())
}

fn crdgen(out: Option<PathBuf>) -> Result<(), String> {
    for (file, crd) in wharf::crd::all() {
        let yaml =
            wharf::crd::to_yaml(&crd).map_err(|e| format!("cannot serialize {file}: {e}"))?;
        match &out {
            Some(dir) => {
                let path = dir.join(file);
                std::fs::write(&path, yaml)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
            None => print!("---\n{yaml}"),
        }
    }
    Ok(())
}
