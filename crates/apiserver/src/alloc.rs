//! ClusterIP and NodePort allocation. Every allocation is a key in the
//! store, created with create-if-absent, so two writers (or two servers on
//! one etcd) can never hand out the same value; it is released when the
//! Service lets go of it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::Bytes;
use ipnet::IpNet;
use rand::Rng;
use skiff_api::families::{DualCidr, IpFamily};
use skiff_store::{DynStore, StoreError};

const IP_PREFIX: &str = "/registry/allocations/clusterips/";
const PORT_PREFIX: &str = "/registry/allocations/nodeports/";

#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    #[error("provided IP is already allocated")]
    IpTaken,
    #[error("the provided IP ({ip}) is not in the valid range. The range of valid IPs is {range}")]
    IpOutOfRange { ip: String, range: String },
    #[error("range is full")]
    IpsExhausted,
    #[error("{0} is not configured on this cluster")]
    FamilyNotConfigured(IpFamily),
    #[error("provided port is already allocated")]
    PortTaken,
    #[error("provided port is not in the valid range. The range of valid ports is {0}")]
    PortOutOfRange(String),
    #[error("range is full")]
    PortsExhausted,
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// The ranges Services draw from: one service CIDR per configured family
/// (the primary first) and the NodePort range.
#[derive(Debug, Clone)]
pub struct Ranges {
    pub service_cidr: DualCidr,
    pub node_ports: (u16, u16),
}

impl Ranges {
    /// The first usable address of the primary range: the `kubernetes`
    /// Service's ClusterIP.
    pub fn kubernetes_ip(&self) -> IpAddr {
        nth(self.service_cidr.primary, 1)
    }

    pub fn node_port_range(&self) -> String {
        format!("{}-{}", self.node_ports.0, self.node_ports.1)
    }
}

/// How many addresses of `net` are handed out: all but the network address,
/// and for IPv4 the broadcast address (capped for very large IPv6 ranges).
fn size(net: IpNet) -> u128 {
    let bits = u32::from(net.max_prefix_len() - net.prefix_len()).min(64);
    let total = 1u128 << bits;
    match net {
        IpNet::V4(_) => total.saturating_sub(2),
        IpNet::V6(_) => total.saturating_sub(1),
    }
}

fn nth(net: IpNet, n: u128) -> IpAddr {
    match net {
        IpNet::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4.network()).wrapping_add(n as u32))),
        IpNet::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6.network()).wrapping_add(n))),
    }
}

/// Whether `ip` may be handed out from `net`.
fn usable(net: IpNet, ip: IpAddr) -> bool {
    if !net.contains(&ip) || ip == net.network() {
        return false;
    }
    match net {
        IpNet::V4(_) => ip != net.broadcast(),
        IpNet::V6(_) => true,
    }
}

pub struct Allocator {
    store: DynStore,
    pub ranges: Ranges,
}

impl Allocator {
    pub fn new(store: DynStore, ranges: Ranges) -> Self {
        Allocator { store, ranges }
    }

    /// Reserve `ip` for `owner` (a Service's store key) from the range of its
    /// family. Reserving an address the owner already holds succeeds.
    pub async fn reserve_ip(&self, ip: &str, owner: &str) -> Result<(), AllocError> {
        let parsed: IpAddr = ip.parse().map_err(|_| AllocError::IpOutOfRange {
            ip: ip.into(),
            range: self.ranges.service_cidr.primary.to_string(),
        })?;
        let Some(range) = self.ranges.service_cidr.get(IpFamily::of(parsed)) else {
            return Err(AllocError::FamilyNotConfigured(IpFamily::of(parsed)));
        };
        if !usable(range, parsed) {
            return Err(AllocError::IpOutOfRange { ip: ip.into(), range: range.to_string() });
        }
        // the canonical form, so that two spellings of one IPv6 address are one key
        self.claim(&format!("{IP_PREFIX}{parsed}"), owner).await.map_err(|e| match e {
            AllocError::PortTaken => AllocError::IpTaken,
            e => e,
        })
    }

    /// Pick a free address of `family` at random, preferring the upper band
    /// of the range as Kubernetes does, so the lower band stays free for
    /// static choices.
    pub async fn allocate_ip(&self, family: IpFamily, owner: &str) -> Result<String, AllocError> {
        let Some(range) = self.ranges.service_cidr.get(family) else {
            return Err(AllocError::FamilyNotConfigured(family));
        };
        let size = size(range);
        if size == 0 {
            return Err(AllocError::IpsExhausted);
        }
        let static_band = (size / 16).clamp(16.min(size), 256).min(size);
        let mut tries = 0u32;
        while tries < 64 {
            let n = {
                let mut rng = rand::rng();
                if static_band < size {
                    rng.random_range(static_band + 1..=size)
                } else {
                    rng.random_range(1..=size)
                }
            };
            let ip = nth(range, n).to_string();
            match self.reserve_ip(&ip, owner).await {
                Ok(()) => return Ok(ip),
                Err(AllocError::IpTaken) => tries += 1,
                Err(e) => return Err(e),
            }
        }
        // the random probes kept colliding: scan for a free one (bounded:
        // a huge IPv6 range is never full in practice)
        for n in (1..=size).rev().take(1 << 20) {
            let ip = nth(range, n).to_string();
            match self.reserve_ip(&ip, owner).await {
                Ok(()) => return Ok(ip),
                Err(AllocError::IpTaken) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(AllocError::IpsExhausted)
    }

    pub async fn release_ip(&self, ip: &str, owner: &str) -> Result<(), StoreError> {
        let key = match ip.parse::<IpAddr>() {
            Ok(parsed) => format!("{IP_PREFIX}{parsed}"),
            Err(_) => format!("{IP_PREFIX}{ip}"),
        };
        self.release(&key, owner).await
    }

    pub async fn reserve_port(&self, port: i64, owner: &str) -> Result<(), AllocError> {
        let (lo, hi) = self.ranges.node_ports;
        if port < i64::from(lo) || port > i64::from(hi) {
            return Err(AllocError::PortOutOfRange(self.ranges.node_port_range()));
        }
        self.claim(&format!("{PORT_PREFIX}{port}"), owner).await
    }

    pub async fn allocate_port(&self, owner: &str) -> Result<i64, AllocError> {
        let (lo, hi) = self.ranges.node_ports;
        for _ in 0..64 {
            let p = i64::from(rand::rng().random_range(lo..=hi));
            match self.reserve_port(p, owner).await {
                Ok(()) => return Ok(p),
                Err(AllocError::PortTaken) => continue,
                Err(e) => return Err(e),
            }
        }
        for p in lo..=hi {
            match self.reserve_port(i64::from(p), owner).await {
                Ok(()) => return Ok(i64::from(p)),
                Err(AllocError::PortTaken) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(AllocError::PortsExhausted)
    }

    pub async fn release_port(&self, port: i64, owner: &str) -> Result<(), StoreError> {
        self.release(&format!("{PORT_PREFIX}{port}"), owner).await
    }

    async fn claim(&self, key: &str, owner: &str) -> Result<(), AllocError> {
        match self.store.create(key, Bytes::from(owner.to_string())).await {
            Ok(_) => Ok(()),
            Err(StoreError::AlreadyExists(_)) => match self.store.get(key).await? {
                Some(kv) if kv.value == owner.as_bytes() => Ok(()),
                _ => Err(AllocError::PortTaken),
            },
            Err(e) => Err(e.into()),
        }
    }

    async fn release(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        match self.store.get(key).await? {
            Some(kv) if kv.value == owner.as_bytes() => match self.store.delete(key, Some(kv.mod_revision)).await {
                Ok(_) | Err(StoreError::NotFound(_)) | Err(StoreError::Conflict { .. }) => Ok(()),
                Err(e) => Err(e),
            },
            _ => Ok(()),
        }
    }
}
