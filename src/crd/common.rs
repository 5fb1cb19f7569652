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

/// A list of strings with bounds: the API server prices CEL rules by the largest input the
/// schema allows, so every list a rule walks needs `maxItems` and `maxLength`.
pub fn bounded_strings(max_items: u32, max_length: u32) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": max_items,
        "items": {"type": "string", "maxLength": max_length},
    })
}

/// Offline CEL checks for the kinds' table tests: an object in, the API server's verdict out.
#[cfg(test)]
pub mod cel_table {
    use kube::CustomResourceExt;
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    pub fn verdict<K: CustomResourceExt + Serialize + DeserializeOwned>(
        object: serde_json::Value,
    ) -> Result<(), String> {
        let typed: K =
            serde_json::from_value(object).map_err(|e| format!("does not deserialize: {e}"))?;
        kube::core::cel::validate_cel(&typed).map_err(|e| e.to_string())
    }

    /// Each case: what it is, the input, and `None` to accept or a part of the expected message.
    pub fn assert_cases<I>(
        cases: Vec<(&str, I, Option<&str>)>,
        check: impl Fn(I) -> Result<(), String>,
    ) {
        for (what, input, want) in cases {
            let got = check(input);
            match (want, &got) {
                (None, Ok(())) => {}
                (Some(msg), Err(e)) if e.contains(msg) => {}
                _ => panic!("{what}: expected {want:?}, got {got:?}"),
            }
        }
    }
}
