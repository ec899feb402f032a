//! Leader election on a coordination.k8s.io/v1 Lease, the way client-go's
//! leaderelection does it: the holder renews `renewTime` every retry period;
//! a candidate takes the lease over once it has seen the same record for
//! longer than `leaseDurationSeconds` (measured on its own clock, so clock
//! skew between servers does not matter); a holder that cannot renew within
//! the renew deadline steps down; a holder that stops cleanly releases it.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio_util::sync::CancellationToken;

use crate::time::now;

#[derive(Debug, Clone)]
pub struct LeaderConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// What we last saw of the lease, and when we first saw it like that.
struct Observed {
    holder: Option<String>,
    renew: Option<MicroTime>,
    at: Instant,
}

pub struct Elector {
    api: Api<Lease>,
    cfg: LeaderConfig,
    observed: Option<Observed>,
}

impl Elector {
    pub fn new(client: kube::Client, cfg: LeaderConfig) -> Self {
        Elector { api: Api::namespaced(client, &cfg.namespace), cfg, observed: None }
    }

    /// Wait until this process holds the lease (or `stop` fires: false).
    pub async fn acquire(&mut self, stop: &CancellationToken) -> bool {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = %format!("{}/{}", self.cfg.namespace, self.cfg.name), identity = %self.cfg.identity, "became leader");
                    return true;
                }
                Ok(false) => {}
                Err(e) => tracing::debug!(error = %e, "leader election: cannot read or write the lease"),
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(self.cfg.retry_period) => {}
            }
        }
    }

    /// Renew until renewing fails for longer than the renew deadline
    /// (returns: leadership lost) or `stop` fires.
    pub async fn hold(&mut self, stop: &CancellationToken) -> HoldEnd {
        let mut last_renew = Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return HoldEnd::Stopped,
                _ = tokio::time::sleep(self.cfg.retry_period) => {}
            }
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renew = Instant::now(),
                Ok(false) => {
                    tracing::warn!("leader election: another process holds the lease now; stepping down");
                    return HoldEnd::Lost;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "leader election: renewing failed");
                }
            }
            if last_renew.elapsed() > self.cfg.renew_deadline {
                tracing::warn!("leader election: could not renew within the deadline; stepping down");
                return HoldEnd::Lost;
            }
        }
    }

    /// Give the lease up so that another process takes over at once.
    pub async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.cfg.name).await else { return };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(&self.cfg.identity) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(now()));
        match self.api.replace(&self.cfg.name, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!("leader election: released the lease"),
            Err(e) => tracing::debug!(error = %e, "leader election: releasing failed"),
        }
    }

    fn desired_spec(&self, old: Option<&LeaseSpec>) -> LeaseSpec {
        let t = MicroTime(now());
        let ours = old.is_some_and(|s| s.holder_identity.as_deref() == Some(&self.cfg.identity));
        let transitions = old.and_then(|s| s.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            lease_duration_seconds: Some(self.cfg.lease_duration.as_secs().max(1) as i32),
            acquire_time: if ours { old.and_then(|s| s.acquire_time.clone()) } else { Some(t.clone()) },
            renew_time: Some(t),
            lease_transitions: Some(if ours || old.is_none() { transitions } else { transitions + 1 }),
            ..Default::default()
        }
    }

    /// One step of client-go's tryAcquireOrRenew: Ok(true) when we hold it.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(self.desired_spec(None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    self.observed = None;
                    Ok(true)
                }
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(&self.cfg.identity);
        if !ours {
            let changed = self.observed.as_ref().is_none_or(|o| o.holder != holder || o.renew != spec.renew_time);
            if changed {
                self.observed =
                    Some(Observed { holder: holder.clone(), renew: spec.renew_time.clone(), at: Instant::now() });
            }
            let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(15).max(1) as u64);
            let expired = holder.is_none() || self.observed.as_ref().is_some_and(|o| o.at.elapsed() > duration);
            if !expired {
                return Ok(false);
            }
        }
        lease.spec = Some(self.desired_spec(Some(&spec)));
        match self.api.replace(&self.cfg.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldEnd {
    Lost,
    Stopped,
}
