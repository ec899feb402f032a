//! The clock, and Kubernetes' time types.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Now, on the wall clock.
pub fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

/// Now as a `metav1.Time` (Kubernetes writes whole seconds).
pub fn now_time() -> Time {
    let t = now();
    Time(jiff::Timestamp::from_second(t.as_second()).unwrap_or(t))
}

/// How long ago `t` was (zero if it is in the future).
pub fn since(t: &jiff::Timestamp) -> Duration {
    let d = now().duration_since(*t);
    if d.is_negative() {
        Duration::ZERO
    } else {
        d.unsigned_abs()
    }
}

/// `t + d`.
pub fn add(t: &jiff::Timestamp, d: Duration) -> jiff::Timestamp {
    jiff::SignedDuration::try_from(d).ok().and_then(|sd| t.checked_add(sd).ok()).unwrap_or(*t)
}

/// How long until `t` (zero if it has passed).
pub fn until(t: &jiff::Timestamp) -> Duration {
    let d = t.duration_since(now());
    if d.is_negative() {
        Duration::ZERO
    } else {
        d.unsigned_abs()
    }
}
