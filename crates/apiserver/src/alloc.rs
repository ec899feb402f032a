//! ClusterIP and NodePort allocation. Every allocation is a key in the
//! store, created with create-if-absent, so two writers (or two servers on
//! one etcd) can never hand out the same value; it is released when the
//! Service lets go of it.

use std::net::{IpAddr, Ipv4Addr};

use bytes::Bytes;
use ipnet::Ipv4Net;
use rand::Rng;
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
    #[error("provided port is already allocated")]
    PortTaken,
    #[error("provided port is not in the valid range. The range of valid ports is {0}")]
    PortOutOfRange(String),
    #[error("range is full")]
    PortsExhausted,
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// The ranges Services draw from.
#[derive(Debug, Clone)]
pub struct Ranges {
    pub service_cidr: Ipv4Net,
    pub node_ports: (u16, u16),
}

impl Ranges {
    /// The first usable address: the `kubernetes` Service's ClusterIP.
    pub fn kubernetes_ip(&self) -> Ipv4Addr {
        nth(self.service_cidr, 1)
    }

    fn size(&self) -> u32 {
        // network and broadcast addresses are never handed out
        (1u32 << (32 - self.service_cidr.prefix_len())).saturating_sub(2)
    }

    pub fn node_port_range(&self) -> String {
        format!("{}-{}", self.node_ports.0, self.node_ports.1)
    }
}

fn nth(net: Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()).wrapping_add(n))
}

pub struct Allocator {
    store: DynStore,
    pub ranges: Ranges,
}

impl Allocator {
    pub fn new(store: DynStore, ranges: Ranges) -> Self {
        Allocator { store, ranges }
    }

    /// Reserve `ip` for `owner` (a Service's store key). Reserving an address
    /// the owner already holds succeeds.
    pub async fn reserve_ip(&self, ip: &str, owner: &str) -> Result<(), AllocError> {
        let parsed: IpAddr = ip
            .parse()
            .map_err(|_| AllocError::IpOutOfRange { ip: ip.into(), range: self.ranges.service_cidr.to_string() })?;
        let in_range = match parsed {
            IpAddr::V4(v4) => {
                self.ranges.service_cidr.contains(&v4)
                    && v4 != self.ranges.service_cidr.network()
                    && v4 != self.ranges.service_cidr.broadcast()
            }
            IpAddr::V6(_) => false,
        };
        if !in_range {
            return Err(AllocError::IpOutOfRange { ip: ip.into(), range: self.ranges.service_cidr.to_string() });
        }
        self.claim(&format!("{IP_PREFIX}{ip}"), owner).await.map_err(|e| match e {
            AllocError::PortTaken => AllocError::IpTaken,
            e => e,
        })
    }

    /// Pick a free address at random, preferring the upper band of the range
    /// as Kubernetes does, so the lower band stays free for static choices.
    pub async fn allocate_ip(&self, owner: &str) -> Result<String, AllocError> {
        let size = self.ranges.size();
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
            let ip = nth(self.ranges.service_cidr, n).to_string();
            match self.reserve_ip(&ip, owner).await {
                Ok(()) => return Ok(ip),
                Err(AllocError::IpTaken) => tries += 1,
                Err(e) => return Err(e),
            }
        }
        // the random probes kept colliding: scan for a free one
        for n in (1..=size).rev() {
            let ip = nth(self.ranges.service_cidr, n).to_string();
            match self.reserve_ip(&ip, owner).await {
                Ok(()) => return Ok(ip),
                Err(AllocError::IpTaken) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(AllocError::IpsExhausted)
    }

    pub async fn release_ip(&self, ip: &str, owner: &str) -> Result<(), StoreError> {
        self.release(&format!("{IP_PREFIX}{ip}"), owner).await
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
