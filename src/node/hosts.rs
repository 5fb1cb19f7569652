//! containerd's registry host configuration (`certs.d/<host>/hosts.toml`), written for a node.
//! Pure: the wanted configuration in, the files out. The operator builds a [`NodeHosts`] for
//! each Registry that asks for node access (and, later, for each upstream it mirrors); the node
//! agent writes what [`render`] makes of it.
//!
//! The format is containerd's `hosts.toml` (`config_path` registry configuration): `server` is
//! the namespace's default upstream, each `[host."<url>"]` is tried first, in order, for the
//! capabilities it lists, with its own CA.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// What one owner (a Registry) wants on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeHosts {
    /// Who wrote the files (`<namespace>/<name>` of the Registry): the agent only ever changes or
    /// removes directories it marked with this.
    pub owner: String,
    pub namespaces: Vec<HostNamespace>,
}

/// One registry host name as images name it (`main.registry.svc:5000`, `docker.io`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostNamespace {
    /// The directory name under `certs.d`: the host and port exactly as image references
    /// carry them.
    pub name: String,
    /// The default upstream, used after every `hosts` entry failed.
    pub server: String,
    pub hosts: Vec<Host>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Host {
    /// `http://10.96.0.10:5000`, `https://...`
    pub url: String,
    pub capabilities: Vec<Capability>,
    /// A CA (PEM) to trust for this host, written beside hosts.toml.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    Pull,
    Resolve,
    Push,
}

/// The name of the file that marks a directory as written by wharf, and for whom.
pub const OWNER_FILE: &str = ".wharf-owner";

/// One file to write in a namespace's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub name: String,
    pub content: String,
}

/// The files of one namespace directory. `host_dir` is where the directory is as containerd
/// sees it on the node (the `ca` paths in hosts.toml are absolute paths on the host).
pub fn render(owner: &str, namespace: &HostNamespace, host_dir: &str) -> Vec<File> {
    let mut toml = format!(
        "# Written by wharf for Registry {owner}; removed when the Registry or its nodeAccess goes.\nserver = {}\n",
        quote(&namespace.server)
    );
    let mut files = Vec::new();
    for (i, host) in namespace.hosts.iter().enumerate() {
        let caps: Vec<String> = host
            .capabilities
            .iter()
            .map(|c| {
                quote(match c {
                    Capability::Pull => "pull",
                    Capability::Resolve => "resolve",
                    Capability::Push => "push",
                })
            })
            .collect();
        let _ = write!(
            toml,
            "\n[host.{}]\n  capabilities = [{}]\n",
            quote(&host.url),
            caps.join(", ")
        );
        if let Some(pem) = &host.ca_pem {
            let name = format!("ca-{i}.crt");
            let _ = writeln!(
                toml,
                "  ca = {}",
                quote(&format!(
                    "{}/{}/{name}",
                    host_dir.trim_end_matches('/'),
                    namespace.name
                ))
            );
            files.push(File {
                name,
                content: pem.clone(),
            });
        }
    }
    files.push(File {
        name: "hosts.toml".into(),
        content: toml,
    });
    files.push(File {
        name: OWNER_FILE.into(),
        content: format!("{owner}\n"),
    });
    files
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A directory name a namespace may have: a host with an optional port, nothing that could
/// climb out of `certs.d`.
pub fn valid_namespace_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_' | '[' | ']'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespace(ca: Option<&str>) -> HostNamespace {
        let scheme = if ca.is_some() { "https" } else { "http" };
        HostNamespace {
            name: "main.registry.svc:5000".into(),
            server: format!("{scheme}://10.96.0.10:5000"),
            hosts: vec![Host {
                url: format!("{scheme}://10.96.0.10:5000"),
                capabilities: vec![Capability::Pull, Capability::Resolve],
                ca_pem: ca.map(Into::into),
            }],
        }
    }

    #[test]
    fn plain_http_points_the_service_name_at_its_cluster_ip() {
        let files = render("registry/main", &namespace(None), "/etc/containerd/certs.d");
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["hosts.toml", OWNER_FILE]);
        assert_eq!(
            files[0].content,
            "# Written by wharf for Registry registry/main; removed when the Registry or its nodeAccess goes.\n\
             server = \"http://10.96.0.10:5000\"\n\n\
             [host.\"http://10.96.0.10:5000\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        );
        assert_eq!(files[1].content, "registry/main\n");
    }

    #[test]
    fn tls_hosts_get_their_ca_beside_hosts_toml_by_its_node_path() {
        let files = render(
            "registry/main",
            &namespace(Some("PEM")),
            "/etc/containerd/certs.d/",
        );
        assert_eq!(files[0].name, "ca-0.crt");
        assert_eq!(files[0].content, "PEM");
        assert!(
            files[1]
                .content
                .contains("  ca = \"/etc/containerd/certs.d/main.registry.svc:5000/ca-0.crt\"\n")
        );
    }

    #[test]
    fn strings_are_quoted_and_names_cannot_escape_the_directory() {
        assert_eq!(quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000A\"");
        for ok in [
            "main.registry.svc:5000",
            "10.96.0.10:5000",
            "docker.io",
            "[fd00::1]:5000",
        ] {
            assert!(valid_namespace_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "../etc", "a/b", "a b"] {
            assert!(!valid_namespace_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_configuration_round_trips_as_json() {
        let hosts = NodeHosts {
            owner: "registry/main".into(),
            namespaces: vec![namespace(Some("PEM"))],
        };
        let text = serde_json::to_string(&hosts).unwrap();
        assert!(
            text.contains("\"caPem\":\"PEM\"")
                && text.contains("\"capabilities\":[\"pull\",\"resolve\"]")
        );
        assert_eq!(serde_json::from_str::<NodeHosts>(&text).unwrap(), hosts);
    }
}
