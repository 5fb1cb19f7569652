//! wharf: a Kubernetes operator for container registries, and the OCI registry it runs.
//!
//! - `registry/`: the OCI Distribution server (`wharf registry`)
//! - `operator/`: the controllers (`wharf operator`), one directory per kind
//! - `jobs/`: the one-shot jobs the operator schedules (`wharf gc`), over `admin_client.rs`
//! - `retention/`: which tags and manifests a retention policy deletes (pure)
//! - `crd/`: the `wharf.dev` custom resource types (`wharf crdgen` writes `crds/` from them)
//! - `duration.rs`, `logging.rs`, `prometheus.rs`: small pieces shared by every subcommand
#![forbid(unsafe_code)]

pub mod admin_client;
pub mod crd;
pub mod duration;
pub mod jobs;
pub mod logging;
pub mod node;
pub mod oci_client;
pub mod operator;
pub mod prometheus;
pub mod registry;
pub mod replication;
pub mod retention;
