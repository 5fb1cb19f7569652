//! Adding and removing the operator's finalizer on an object the user owns: JSON patches
//! guarded by a `test`, so a concurrent edit of the finalizers is never overwritten and the
//! spec is never touched.

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

fn patch(operations: serde_json::Value) -> json_patch::Patch {
    serde_json::from_value(operations).expect("a well-formed JSON patch")
}

/// Adds `finalizer` unless the object has it.
pub async fn ensure<K>(api: &Api<K>, object: &K, finalizer: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    if object.finalizers().iter().any(|f| f == finalizer) {
        return Ok(());
    }
    let add = match object.meta().finalizers {
        Some(_) => {
            serde_json::json!({"op": "add", "path": "/metadata/finalizers/-", "value": finalizer})
        }
        None => {
            serde_json::json!({"op": "add", "path": "/metadata/finalizers", "value": [finalizer]})
        }
    };
    let operations = serde_json::json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": object.resource_version()},
        add,
    ]);
    api.patch(
        &object.name_any(),
        &PatchParams::default(),
        &Patch::<()>::Json(patch(operations)),
    )
    .await?;
    Ok(())
}

/// Removes `finalizer`; an object already gone is fine.
pub async fn remove<K>(api: &Api<K>, object: &K, finalizer: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let Some(index) = object.finalizers().iter().position(|f| f == finalizer) else {
        return Ok(());
    };
    let operations = serde_json::json!([
        {"op": "test", "path": format!("/metadata/finalizers/{index}"), "value": finalizer},
        {"op": "remove", "path": format!("/metadata/finalizers/{index}")},
    ]);
    match api
        .patch(
            &object.name_any(),
            &PatchParams::default(),
            &Patch::<()>::Json(patch(operations)),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
