//! Kubernetes Events about the kinds the operator reconciles. Publishing is best effort: an
//! event that cannot be written is logged and never fails a reconcile.

use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};

pub async fn publish<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    object: &K,
    type_: EventType,
    action: &str,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &object.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "cannot publish an event");
    }
}
