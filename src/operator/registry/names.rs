//! Names and labels of everything a Registry owns, in one place so builders, status and tests
//! agree on them.

use std::collections::BTreeMap;

pub const MANAGED_BY: &str = "wharf-operator";
pub const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=wharf-operator";
/// Pod-template annotation carrying a hash of mounted configuration, so changes roll the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "wharf.dev/config-hash";
/// Container port name the Service, probes and Ingress refer to.
pub const PORT_NAME: &str = "registry";
pub const CONTAINER_PORT: i32 = 5000;
pub const DEFAULT_SERVICE_PORT: i32 = 5000;
/// The non-root user of wharf's image.
pub const RUN_AS: i64 = 65532;
pub const ADMIN_USER: &str = "wharf-admin";

pub struct ChildNames {
    pub registry: String,
}

impl ChildNames {
    pub fn new(registry: &str) -> ChildNames {
        ChildNames {
            registry: registry.to_owned(),
        }
    }
    /// Workload, Service, ServiceAccount, PDB and Ingress share the Registry's name.
    pub fn workload(&self) -> String {
        self.registry.clone()
    }
    pub fn config(&self) -> String {
        format!("{}-config", self.registry)
    }
    pub fn admin_secret(&self) -> String {
        format!("{}-admin", self.registry)
    }
    pub fn htpasswd_secret(&self) -> String {
        format!("{}-htpasswd", self.registry)
    }
    pub fn tls_secret(&self) -> String {
        format!("{}-tls", self.registry)
    }
    /// The operator's CA for a self-signed Registry: key in a Secret, certificate in a ConfigMap.
    pub fn ca(&self) -> String {
        format!("{}-ca", self.registry)
    }
}

/// Labels that select the registry pods; they never change, since a selector is immutable.
pub fn selector_labels(registry: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "wharf".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), registry.to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            "registry".to_owned(),
        ),
    ])
}

/// Labels on every child: the selector labels plus `managed-by`, which the operator's watches
/// filter on.
pub fn labels(registry: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(registry);
    labels.insert(
        "app.kubernetes.io/managed-by".to_owned(),
        MANAGED_BY.to_owned(),
    );
    labels
}
