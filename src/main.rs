use clap::{Parser, Subcommand};
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wharf: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Registry(args) => wharf::registry::server::run(args)
                .await
                .map_err(|e| e.to_string()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("wharf: {message}");
            ExitCode::FAILURE
        }
    }
}
