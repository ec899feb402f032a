//! Kubernetes' restart and image-pull back-off (client-go's
//! `flowcontrol.Backoff`): 10 s doubling to 5 min per key, forgotten once
//! nothing happened for twice the maximum (so a container that ran for ten
//! minutes starts again at 10 s).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

pub const INITIAL: Duration = Duration::from_secs(10);
pub const MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy)]
struct Entry {
    backoff: Duration,
    last_update: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    entries: HashMap<String, Entry>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(INITIAL, MAX)
    }
}

fn since(later: DateTime<Utc>, earlier: DateTime<Utc>) -> Duration {
    (later - earlier).to_std().unwrap_or(Duration::ZERO)
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max, entries: HashMap::new() }
    }

    fn expired(&self, at: DateTime<Utc>, last_update: DateTime<Utc>) -> bool {
        since(at, last_update) > self.max * 2
    }

    /// The current back-off for `key` (zero when there is none).
    pub fn get(&self, key: &str) -> Duration {
        self.entries.get(key).map(|e| e.backoff).unwrap_or(Duration::ZERO)
    }

    /// Whether `now` is still within the back-off that started at `event`
    /// (a container's finishedAt): the kubelet's `IsInBackOffSince`.
    pub fn in_backoff_since(&self, key: &str, event: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        match self.entries.get(key) {
            None => false,
            Some(e) if self.expired(now, e.last_update) => false,
            Some(e) => since(now, event) < e.backoff,
        }
    }

    /// Whether `now` is within the back-off since the last `next` (image
    /// pulls: `IsInBackOffSinceUpdate`).
    pub fn in_backoff_since_update(&self, key: &str, now: DateTime<Utc>) -> bool {
        match self.entries.get(key) {
            None => false,
            Some(e) if self.expired(now, e.last_update) => false,
            Some(e) => since(now, e.last_update) < e.backoff,
        }
    }

    /// How long from `now` until the back-off since `event` ends.
    pub fn remaining_since(&self, key: &str, event: DateTime<Utc>, now: DateTime<Utc>) -> Option<Duration> {
        let e = self.entries.get(key)?;
        let waited = since(now, event);
        (waited < e.backoff).then(|| e.backoff - waited)
    }

    /// Record an event (a restart, a failed pull) at `at`: the first, or the
    /// first after a long quiet time, starts at the initial back-off; each
    /// next one doubles it up to the maximum.
    pub fn next(&mut self, key: &str, at: DateTime<Utc>) {
        let backoff = match self.entries.get(key) {
            Some(e) if !self.expired(at, e.last_update) => (e.backoff * 2).min(self.max),
            _ => self.initial,
        };
        self.entries.insert(key.to_string(), Entry { backoff, last_update: at });
    }

    pub fn reset(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

/// `10s`, `2m40s`, `5m0s` as Go prints a duration of whole seconds.
pub fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{}h{}m{}s", s / 3600, (s % 3600) / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn first_crash_restarts_at_once_then_doubles_to_five_minutes() {
        let mut b = Backoff::default();
        // first exit: not in back-off, restart now
        assert!(!b.in_backoff_since("c", t(0), t(0)));
        b.next("c", t(0));
        assert_eq!(b.get("c"), Duration::from_secs(10));
        // second exit at 1s: wait 10 s from that exit
        assert!(b.in_backoff_since("c", t(1), t(5)));
        assert_eq!(b.remaining_since("c", t(1), t(5)), Some(Duration::from_secs(6)));
        assert!(!b.in_backoff_since("c", t(1), t(11)));
        b.next("c", t(1));
        assert_eq!(b.get("c"), Duration::from_secs(20));
        let mut at = 1;
        for want in [40, 80, 160, 300, 300] {
            at += 1;
            b.next("c", t(at));
            assert_eq!(b.get("c"), Duration::from_secs(want));
        }
    }

    #[test]
    fn ten_quiet_minutes_reset_the_backoff() {
        let mut b = Backoff::default();
        b.next("c", t(0));
        b.next("c", t(1));
        assert_eq!(b.get("c"), Duration::from_secs(20));
        // ran for more than 2 × 5 min: the next exit is not in back-off ...
        assert!(!b.in_backoff_since("c", t(700), t(700)));
        // ... and the back-off starts again at 10 s
        b.next("c", t(700));
        assert_eq!(b.get("c"), Duration::from_secs(10));
    }

    #[test]
    fn pull_backoff_counts_from_the_last_failure() {
        let mut b = Backoff::default();
        assert!(!b.in_backoff_since_update("img", t(0)));
        b.next("img", t(0));
        assert!(b.in_backoff_since_update("img", t(9)));
        assert!(!b.in_backoff_since_update("img", t(10)));
    }

    #[test]
    fn durations_print_as_go_does() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_secs(160)), "2m40s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
    }
}
