//! Types every kind shares.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// A reference to an object in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct LocalObjectReference {
    /// Name of the object.
    #[x_kube(validation = Rule::new("self.size() > 0 && self.size() <= 253").message("a name has 1 to 253 characters"))]
    pub name: String,
}
