//! Pod addresses from the node's podCIDR, kept on disk so that a restarted
//! agent never hands out an address twice.
//!
//! One file per allocated address, `<dir>/<ip>`, holding the owner (the pod's
//! UID). A file is created complete or not at all: written under a temporary
//! name and hard-linked into place, and the link fails when the address is
//! taken. Allocation goes round the range from the last address handed out
//! (`<dir>/last-reserved`), so a released address is not reused at once
//! (conntrack and neighbour entries of the old pod have time to expire).
//!
//! One [`Ipam`] serves one range of either family: a dual-stack node keeps
//! two, one per podCIDR. IPv6 ranges are too large to list, so candidates
//! are walked as offsets from the range's start, skipping the ones taken;
//! and only the first [`V6_POOL`] addresses after the gateway are handed
//! out (round and round), far more than a node runs pods, and few enough for
//! the service proxy to list them for hairpin masquerade.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How many addresses of an IPv6 podCIDR pods get: offsets 2 to 4097 from
/// its start (1 is the gateway).
pub const V6_POOL: u128 = 4096;

use ipnet::{IpNet, Ipv4Net};

use crate::{Error, Result};

const LAST: &str = "last-reserved";

/// The addresses of one podCIDR. The first host address is the gateway and
/// is never handed out, nor are the network address (IPv6's subnet-router
/// anycast) and IPv4's broadcast address.
#[derive(Debug)]
pub struct Ipam {
    dir: PathBuf,
    range: IpNet,
    /// Serialises allocations within this process.
    lock: Mutex<()>,
}

impl Ipam {
    /// The IPAM of `range`, persisted under `dir` (created if missing).
    pub fn open(dir: impl Into<PathBuf>, range: impl Into<IpNet>) -> Result<Ipam> {
        let (dir, range) = (dir.into(), range.into());
        if range.prefix_len() + 2 > range.max_prefix_len() {
            let least = range.max_prefix_len() - 2;
            return Err(Error::Ipam {
                dir: dir.display().to_string(),
                message: format!("pod CIDR {range} is too small: it needs at least a /{least}"),
            });
        }
        if range.prefix_len() < 8 {
            return Err(Error::Ipam {
                dir: dir.display().to_string(),
                message: format!("pod CIDR {range} is too large for one node"),
            });
        }
        fs::create_dir_all(&dir).map_err(|e| ipam_err(&dir, format!("creating the directory: {e}")))?;
        Ok(Ipam { dir, range: range.trunc(), lock: Mutex::new(()) })
    }

    /// The gateway (the bridge's address): the range's first host address.
    pub fn gateway(&self) -> IpAddr {
        self.at(1)
    }

    pub fn range(&self) -> IpNet {
        self.range
    }

    /// The address `offset` places after the range's network address.
    fn at(&self, offset: u128) -> IpAddr {
        match self.range.network() {
            IpAddr::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n).wrapping_add(offset as u32))),
            IpAddr::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n).wrapping_add(offset))),
        }
    }

    /// `ip`'s offset from the range's network address, if it is in the range.
    fn offset(&self, ip: IpAddr) -> Option<u128> {
        if !self.range.contains(&ip) {
            return None;
        }
        Some(match (ip, self.range.network()) {
            (IpAddr::V4(a), IpAddr::V4(n)) => u128::from(u32::from(a) - u32::from(n)),
            (IpAddr::V6(a), IpAddr::V6(n)) => u128::from(a) - u128::from(n),
            _ => return None,
        })
    }

    /// How many addresses can be handed out: offsets `2..2 + count`.
    fn host_count(&self) -> u128 {
        let all = self.range_host_count();
        match self.range {
            IpNet::V4(_) => all,
            IpNet::V6(_) => all.min(V6_POOL),
        }
    }

    fn range_host_count(&self) -> u128 {
        let bits = u32::from(self.range.max_prefix_len() - self.range.prefix_len());
        let size_minus_one = if bits >= 128 { u128::MAX } else { (1u128 << bits) - 1 };
        match self.range {
            // not the network, the gateway nor the broadcast address
            IpNet::V4(_) => size_minus_one - 2,
            // not the subnet-router anycast address nor the gateway
            IpNet::V6(_) => size_minus_one - 1,
        }
    }

    /// The address of `owner`, allocating one if it has none (so calling it
    /// again for the same owner returns the same address).
    pub fn allocate(&self, owner: &str) -> Result<IpAddr> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let taken = self.allocations_locked()?;
        if let Some((ip, _)) = taken.iter().find(|(_, o)| o == owner) {
            return Ok(*ip);
        }
        let taken: HashSet<IpAddr> = taken.into_iter().map(|(ip, _)| ip).collect();
        let count = self.host_count();
        // go round from the one after the last handed out; an IPv6 range never wraps in practice
        let start = self.last_reserved().and_then(|last| self.offset(last)).filter(|o| *o >= 2).map_or(0, |o| o - 1);
        let mut i: u128 = 0;
        while i < count {
            let ip = self.at(2 + (start % count + i) % count);
            i += 1;
            if taken.contains(&ip) {
                continue;
            }
            if self.try_claim(ip, owner)? {
                self.set_last_reserved(ip);
                tracing::debug!(%ip, owner, "ipam: allocated");
                return Ok(ip);
            }
        }
        Err(ipam_err(&self.dir, format!("no free address left in {} for {owner}", self.range)))
    }

    /// The address `owner` holds, if any.
    pub fn lookup(&self, owner: &str) -> Result<Option<IpAddr>> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.lookup_locked(owner)
    }

    /// Give back `owner`'s address; nothing happens when it holds none.
    pub fn release(&self, owner: &str) -> Result<Option<IpAddr>> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let Some(ip) = self.lookup_locked(owner)? else { return Ok(None) };
        self.remove(ip)?;
        tracing::debug!(%ip, owner, "ipam: released");
        Ok(Some(ip))
    }

    /// Every allocated address with its owner.
    pub fn allocations(&self) -> Result<Vec<(IpAddr, String)>> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.allocations_locked()
    }

    /// Release the addresses whose owners are not in `live` (pods that went
    /// away while the agent was not looking); returns what was released.
    pub fn gc(&self, live: &HashSet<String>) -> Result<Vec<IpAddr>> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut released = Vec::new();
        for (ip, owner) in self.allocations_locked()? {
            if !live.contains(&owner) {
                self.remove(ip)?;
                tracing::info!(%ip, owner, "ipam: collected a leaked address");
                released.push(ip);
            }
        }
        Ok(released)
    }

    fn allocations_locked(&self) -> Result<Vec<(IpAddr, String)>> {
        let entries = fs::read_dir(&self.dir).map_err(|e| ipam_err(&self.dir, format!("reading: {e}")))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| ipam_err(&self.dir, format!("reading: {e}")))?;
            let Some(ip) = entry.file_name().to_str().and_then(|n| n.parse::<IpAddr>().ok()) else { continue };
            match fs::read_to_string(entry.path()) {
                Ok(owner) => out.push((ip, owner.trim().to_string())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ipam_err(&entry.path(), format!("reading: {e}"))),
            }
        }
        out.sort();
        Ok(out)
    }

    fn lookup_locked(&self, owner: &str) -> Result<Option<IpAddr>> {
        Ok(self.allocations_locked()?.into_iter().find(|(_, o)| o == owner).map(|(ip, _)| ip))
    }

    /// Create `<dir>/<ip>` holding `owner` unless it exists: false when taken.
    fn try_claim(&self, ip: IpAddr, owner: &str) -> Result<bool> {
        let path = self.dir.join(ip.to_string());
        let tmp = self.dir.join(format!(".{ip}.{}.tmp", std::process::id()));
        write_synced(&tmp, owner.as_bytes()).map_err(|e| ipam_err(&tmp, format!("writing: {e}")))?;
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                sync_dir(&self.dir);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(ipam_err(&path, format!("claiming: {e}"))),
        }
    }

    fn remove(&self, ip: IpAddr) -> Result<()> {
        let path = self.dir.join(ip.to_string());
        match fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(&self.dir);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ipam_err(&path, format!("removing: {e}"))),
        }
    }

    fn last_reserved(&self) -> Option<IpAddr> {
        fs::read_to_string(self.dir.join(LAST)).ok()?.trim().parse().ok()
    }

    fn set_last_reserved(&self, ip: IpAddr) {
        // only a hint for where to start next time: a failure costs nothing
        let tmp = self.dir.join(format!(".{LAST}.tmp"));
        if write_synced(&tmp, ip.to_string().as_bytes()).is_ok() {
            let _ = fs::rename(&tmp, self.dir.join(LAST));
        }
    }
}

/// The first host address of `net` (the gateway of a podCIDR).
pub fn first_host(net: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()).saturating_add(1))
}

fn write_synced(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

fn ipam_err(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Ipam { dir: path.display().to_string(), message: message.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_skips_the_anycast_and_gateway_addresses_and_survives_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path(), cidr("fd00:10:244:1::/64")).unwrap();
        assert_eq!(ipam.gateway(), ip("fd00:10:244:1::1"));
        let a = ipam.allocate("a").unwrap();
        assert_eq!(a, ip("fd00:10:244:1::2"));
        assert_eq!(ipam.allocate("a").unwrap(), a);
        let b = ipam.allocate("b").unwrap();
        assert_eq!(b, ip("fd00:10:244:1::3"));
        ipam.release("a").unwrap();
        drop(ipam);
        let again = Ipam::open(dir.path(), cidr("fd00:10:244:1::/64")).unwrap();
        assert_eq!(again.lookup("b").unwrap(), Some(b));
        // a released address is not handed out at once, and nothing is handed out twice
        let c = again.allocate("c").unwrap();
        assert_eq!(c, ip("fd00:10:244:1::4"));
        assert_eq!(again.gc(&["c".to_string()].into()).unwrap(), vec![b]);
        assert_eq!(again.allocations().unwrap(), vec![(c, "c".to_string())]);
    }

    #[test]
    fn ipv6_runs_out_of_a_tiny_range() {
        let dir = tempfile::tempdir().unwrap();
        // a /126 has 4 addresses: anycast, gateway, and two for pods
        let ipam = Ipam::open(dir.path(), cidr("fd00::/126")).unwrap();
        assert_eq!(ipam.allocate("a").unwrap(), ip("fd00::2"));
        assert_eq!(ipam.allocate("b").unwrap(), ip("fd00::3"));
        let e = ipam.allocate("c").unwrap_err().to_string();
        assert!(e.contains("no free address left in fd00::/126 for c"), "{e}");
        assert!(Ipam::open(dir.path(), cidr("fd00::/127")).unwrap_err().to_string().contains("at least a /126"));
    }

    #[test]
    fn allocates_skipping_the_gateway_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path(), cidr("10.244.1.0/24")).unwrap();
        assert_eq!(ipam.gateway(), "10.244.1.1".parse::<IpAddr>().unwrap());
        let a = ipam.allocate("pod-a").unwrap();
        assert_eq!(a, "10.244.1.2".parse::<IpAddr>().unwrap());
        assert_eq!(ipam.allocate("pod-a").unwrap(), a);
        let b = ipam.allocate("pod-b").unwrap();
        assert_ne!(a, b);
        assert_eq!(ipam.lookup("pod-b").unwrap(), Some(b));
    }

    #[test]
    fn never_hands_out_an_address_twice_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let first = Ipam::open(dir.path(), cidr("10.244.1.0/29")).unwrap();
        let a = first.allocate("a").unwrap();
        let b = first.allocate("b").unwrap();
        drop(first);
        // a "restarted agent"
        let second = Ipam::open(dir.path(), cidr("10.244.1.0/29")).unwrap();
        assert_eq!(second.lookup("a").unwrap(), Some(a));
        let c = second.allocate("c").unwrap();
        assert!(c != a && c != b, "{c} reused");
        // releasing b does not make the next pod get b straight away
        second.release("b").unwrap();
        let d = second.allocate("d").unwrap();
        assert_ne!(d, b);
    }

    #[test]
    fn runs_out_with_a_clear_error_and_release_frees() {
        let dir = tempfile::tempdir().unwrap();
        // a /29 has 6 hosts, one of them the gateway
        let ipam = Ipam::open(dir.path(), cidr("10.0.0.0/29")).unwrap();
        for i in 0..5 {
            ipam.allocate(&format!("p{i}")).unwrap();
        }
        let e = ipam.allocate("p5").unwrap_err().to_string();
        assert!(e.contains("no free address left in 10.0.0.0/29 for p5"), "{e}");
        assert_eq!(ipam.release("p2").unwrap(), Some("10.0.0.4".parse().unwrap()));
        assert_eq!(ipam.allocate("p5").unwrap(), "10.0.0.4".parse::<IpAddr>().unwrap());
        assert_eq!(ipam.release("nobody").unwrap(), None);
    }

    #[test]
    fn gc_collects_addresses_of_pods_that_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path(), cidr("10.244.0.0/24")).unwrap();
        let keep = ipam.allocate("keep").unwrap();
        let gone = ipam.allocate("gone").unwrap();
        let live: HashSet<String> = ["keep".to_string()].into();
        assert_eq!(ipam.gc(&live).unwrap(), vec![gone]);
        assert_eq!(ipam.allocations().unwrap(), vec![(keep, "keep".to_string())]);
    }

    #[test]
    fn concurrent_allocations_get_distinct_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = std::sync::Arc::new(Ipam::open(dir.path(), cidr("10.244.0.0/24")).unwrap());
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let ipam = ipam.clone();
                std::thread::spawn(move || {
                    (0..10).map(|j| ipam.allocate(&format!("{i}-{j}")).unwrap()).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<IpAddr> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        all.sort();
        let n = all.len();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
