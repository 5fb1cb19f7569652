//! kstatus conditions shared by every kind: `Ready` always, `Reconciling` while work is pending,
//! `Stalled` when only a spec change can help. A condition keeps its `lastTransitionTime` unless
//! its status flips, so an unchanged status compares equal and is not written again.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// A condition for `generation`, carrying over the transition time from `previous` when the
/// status did not change.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_owned();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// One condition's verdict: status, reason, message.
pub type Verdict<'a> = (bool, &'a str, String);

/// `Ready`, `Reconciling` and `Stalled`, in that order.
pub fn kstatus(
    previous: &[Condition],
    ready: Verdict<'_>,
    reconciling: Verdict<'_>,
    stalled: Verdict<'_>,
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    [
        (READY, ready),
        (RECONCILING, reconciling),
        (STALLED, stalled),
    ]
    .into_iter()
    .map(|(type_, (status, reason, message))| {
        condition(previous, type_, status, reason, message, generation, now)
    })
    .collect()
}

pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let t0 = Time(Timestamp::from_second(1_000).unwrap());
        let t1 = Time(Timestamp::from_second(2_000).unwrap());
        let first = condition(&[], READY, false, "Progressing", "", Some(1), &t0);
        let same = condition(
            std::slice::from_ref(&first),
            READY,
            false,
            "Progressing",
            "1 of 2",
            Some(2),
            &t1,
        );
        assert_eq!(same.last_transition_time, t0);
        let flipped = condition(&[same], READY, true, "Available", "", Some(2), &t1);
        assert_eq!(flipped.last_transition_time, t1);
        assert!(is_true(&[flipped], READY));
    }
}
