//! Structured logs via `tracing`: JSON lines by default (what log pipelines ingest), plain text
//! for people at a terminal. The level comes from `WHARF_LOG` (an EnvFilter directive).

use tracing_subscriber::EnvFilter;

pub fn init(json: bool) {
    let filter = EnvFilter::try_from_env("WHARF_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests, subcommands sharing a process) is harmless: the first one stays.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        builder.try_init()
    };
}
