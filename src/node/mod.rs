//! `wharf node-config`: the node agent a Registry's `nodeAccess` runs as a DaemonSet. It writes
//! containerd's `certs.d/<host>/hosts.toml` (and CAs) for the Registry's names, so the node's
//! containerd, which cannot resolve `*.svc` names and does not trust the Registry's CA, pulls
//! from it through its cluster IP; it keeps them in place and removes them when it is stopped
//! (the Registry, or its `nodeAccess`, went). It only touches directories marked as its own.
//!
//! The configuration comes from a ConfigMap the operator builds (`hosts.rs`'s [`NodeHosts`]) and
//! never changes under a running agent: a change rolls the DaemonSet.

pub mod hosts;

use clap::Args;
use hosts::{HostNamespace, NodeHosts, OWNER_FILE, render, valid_namespace_name};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Args)]
pub struct NodeConfigArgs {
    /// The wanted configuration (JSON).
    #[arg(long, default_value = "/etc/wharf/node/hosts.json")]
    pub config: PathBuf,
    /// containerd's `certs.d`, as mounted in this container.
    #[arg(long, default_value = "/host/certs.d")]
    pub certs_dir: PathBuf,
    /// The same directory as containerd sees it on the node (CA paths in hosts.toml).
    #[arg(long, default_value = "/etc/containerd/certs.d")]
    pub host_certs_dir: String,
    /// How often to check that the files are still as written.
    #[arg(long, default_value_t = 30)]
    pub interval_seconds: u64,
    /// Write once and exit, without removing anything (for a manual run).
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid node configuration: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{0:?} is not a host name containerd's certs.d can hold")]
    Name(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
}

pub async fn run(args: NodeConfigArgs) -> Result<(), NodeError> {
    crate::logging::init(true);
    let text = std::fs::read_to_string(&args.config).map_err(|source| NodeError::Read {
        path: args.config.clone(),
        source,
    })?;
    let wanted: NodeHosts = serde_json::from_str(&text).map_err(|source| NodeError::Parse {
        path: args.config.clone(),
        source,
    })?;
    if let Some(bad) = wanted
        .namespaces
        .iter()
        .find(|n| !valid_namespace_name(&n.name))
    {
        return Err(NodeError::Name(bad.name.clone()));
    }
    sync(&wanted, &args.certs_dir, &args.host_certs_dir)?;
    tracing::info!(owner = %wanted.owner, hosts = ?wanted.namespaces.iter().map(|n| &n.name).collect::<Vec<_>>(),
        certs_dir = %args.host_certs_dir, "containerd host configuration written");
    if args.once {
        return Ok(());
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(NodeError::Signals)?;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(args.interval_seconds.max(1))) => {
                if let Err(e) = sync(&wanted, &args.certs_dir, &args.host_certs_dir) {
                    tracing::warn!(error = %e, "cannot restore the containerd host configuration");
                }
            }
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let removed = remove_owned(&wanted.owner, &args.certs_dir, &[]);
    tracing::info!(owner = %wanted.owner, removed = ?removed, "stopping: containerd host configuration removed");
    Ok(())
}

/// Writes every wanted directory (a file only when its content differs, each through a
/// rename, so containerd never reads half a file), then removes this owner's directories that
/// are no longer wanted. A directory someone else wrote is left alone.
pub fn sync(wanted: &NodeHosts, certs_dir: &Path, host_dir: &str) -> Result<(), NodeError> {
    let write_error = |path: &Path| {
        let path = path.to_owned();
        move |source| NodeError::Write { path, source }
    };
    std::fs::create_dir_all(certs_dir).map_err(write_error(certs_dir))?;
    for namespace in &wanted.namespaces {
        let dir = certs_dir.join(&namespace.name);
        if let Some(other) = owner_of(&dir)
            && other != wanted.owner
        {
            tracing::warn!(host = %namespace.name, owner = %other, "left alone: written for another owner");
            continue;
        }
        if dir.exists() && owner_of(&dir).is_none() {
            tracing::warn!(host = %namespace.name, "left alone: a configuration wharf did not write");
            continue;
        }
        write_namespace(&wanted.owner, namespace, &dir, host_dir)?;
    }
    let keep: Vec<&str> = wanted.namespaces.iter().map(|n| n.name.as_str()).collect();
    remove_owned(&wanted.owner, certs_dir, &keep);
    Ok(())
}

fn write_namespace(
    owner: &str,
    namespace: &HostNamespace,
    dir: &Path,
    host_dir: &str,
) -> Result<(), NodeError> {
    let error = |path: PathBuf| move |source| NodeError::Write { path, source };
    std::fs::create_dir_all(dir).map_err(error(dir.to_owned()))?;
    let files = render(owner, namespace, host_dir);
    // The owner mark goes first, so a crash mid-way leaves a directory this agent recognises.
    for file in files.iter().rev() {
        let path = dir.join(&file.name);
        if std::fs::read_to_string(&path).is_ok_and(|c| c == file.content) {
            continue;
        }
        let tmp = dir.join(format!(".{}.tmp", file.name));
        std::fs::write(&tmp, &file.content).map_err(error(tmp.clone()))?;
        std::fs::rename(&tmp, &path).map_err(error(path.clone()))?;
    }
    Ok(())
}

fn owner_of(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join(OWNER_FILE))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Removes the directories marked for `owner` except `keep`; returns their names.
pub fn remove_owned(owner: &str, certs_dir: &Path, keep: &[&str]) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(certs_dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if keep.contains(&name.as_str()) || owner_of(&entry.path()).as_deref() != Some(owner) {
            continue;
        }
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => removed.push(name),
            Err(e) => tracing::warn!(host = %name, error = %e, "cannot remove"),
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::hosts::{Capability, Host};
    use super::*;

    fn wanted(owner: &str, names: &[&str]) -> NodeHosts {
        NodeHosts {
            owner: owner.into(),
            namespaces: names
                .iter()
                .map(|n| HostNamespace {
                    name: (*n).into(),
                    server: "http://10.96.0.10:5000".into(),
                    hosts: vec![Host {
                        url: "http://10.96.0.10:5000".into(),
                        capabilities: vec![Capability::Pull, Capability::Resolve],
                        ca_pem: None,
                    }],
                })
                .collect(),
        }
    }

    #[test]
    fn writes_repairs_replaces_and_removes_only_its_own_directories() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path();
        // Someone's own configuration, and another Registry's.
        std::fs::create_dir_all(certs.join("docker.io")).unwrap();
        std::fs::write(certs.join("docker.io/hosts.toml"), "mine").unwrap();
        sync(
            &wanted("other/reg", &["other.svc:5000"]),
            certs,
            "/etc/containerd/certs.d",
        )
        .unwrap();

        let ours = wanted(
            "registry/main",
            &["main.registry.svc:5000", "10.96.0.10:5000", "docker.io"],
        );
        sync(&ours, certs, "/etc/containerd/certs.d").unwrap();
        let toml =
            std::fs::read_to_string(certs.join("main.registry.svc:5000/hosts.toml")).unwrap();
        assert!(toml.contains("[host.\"http://10.96.0.10:5000\"]"));
        assert!(certs.join("10.96.0.10:5000/hosts.toml").exists());
        assert_eq!(
            std::fs::read_to_string(certs.join("docker.io/hosts.toml")).unwrap(),
            "mine",
            "a configuration wharf did not write is never replaced"
        );

        // A deleted or edited file comes back.
        std::fs::remove_file(certs.join("10.96.0.10:5000/hosts.toml")).unwrap();
        std::fs::write(certs.join("main.registry.svc:5000/hosts.toml"), "edited").unwrap();
        sync(&ours, certs, "/etc/containerd/certs.d").unwrap();
        assert!(certs.join("10.96.0.10:5000/hosts.toml").exists());
        assert_eq!(
            std::fs::read_to_string(certs.join("main.registry.svc:5000/hosts.toml")).unwrap(),
            toml
        );

        // A name no longer wanted goes; on stop, everything of ours goes and nothing else.
        sync(
            &wanted("registry/main", &["main.registry.svc:5000"]),
            certs,
            "/x",
        )
        .unwrap();
        assert!(!certs.join("10.96.0.10:5000").exists());
        let mut removed = remove_owned("registry/main", certs, &[]);
        removed.sort();
        assert_eq!(removed, ["main.registry.svc:5000"]);
        assert!(certs.join("docker.io/hosts.toml").exists());
        assert!(certs.join("other.svc:5000/hosts.toml").exists());
        let leftovers: Vec<_> = std::fs::read_dir(certs)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 2, "{leftovers:?}");
    }
}
