//! Names, labels and annotations of what ImagePullCredentials write.

use crate::crd::image_pull_credential::ImagePullCredential;
use kube::ResourceExt;

/// On every copy and state Secret: which credential it belongs to. Watches select on it.
pub const PULL_CREDENTIAL_LABEL: &str = "wharf.dev/pull-credential";
/// On every copy: the hash of the credential it holds.
pub const SOURCE_HASH_ANNOTATION: &str = "wharf.dev/source-hash";
/// On ServiceAccounts: the imagePullSecrets entries wharf added (comma-separated), so that
/// only those are ever removed.
pub const INJECTED_ANNOTATION: &str = "wharf.dev/injected-pull-secrets";
/// Holds copies and ServiceAccount entries until they are cleaned up.
pub const FINALIZER: &str = "wharf.dev/pull-credential-cleanup";
pub const WEBHOOK_CONFIGURATION: &str = "wharf-pull-credentials";
/// The Service in front of the operator pods' webhook port (config/manager/webhook-service.yaml).
pub const WEBHOOK_SERVICE: &str = "wharf-webhook";
pub const WEBHOOK_PORT: u16 = 8443;
pub const WEBHOOK_CA_SECRET: &str = "wharf-webhook-ca";
pub const WEBHOOK_TLS_SECRET: &str = "wharf-webhook-tls";

/// The Secret's name in each target namespace.
pub fn secret_name(ipc: &ImagePullCredential) -> String {
    ipc.spec
        .secret_name
        .clone()
        .unwrap_or_else(|| ipc.name_any())
}

/// The robot account minted for a registry source (the kind's name rule keeps it under 63).
pub fn robot_name(ipc: &ImagePullCredential) -> String {
    format!("ipc-{}", ipc.name_any())
}

/// The Secret in the operator's namespace that remembers the minted robot's secret.
pub fn robot_state_secret(ipc: &ImagePullCredential) -> String {
    format!("wharf-ipc-{}", ipc.name_any())
}
