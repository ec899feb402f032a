//! The VXLAN backend, for nodes that do not share a layer-2 segment: one
//! VXLAN device per node (`skiff.vxlan`, VNI 1, UDP 8472 as flannel uses)
//! whose address is its podCIDR's network address (the node's VTEP), and for
//! every other node
//! - a route to its podCIDR via its VTEP address, on the device, `onlink`;
//! - a permanent neighbour entry: its VTEP address → its VTEP MAC;
//! - a forwarding entry: its VTEP MAC → its node address (the outer destination).
//!
//! No multicast and no learning: everything comes from the Node objects,
//! where each agent publishes its VTEP MAC. Pods get the uplink MTU minus the
//! 50 bytes of VXLAN over IPv4.
//!
//! Dual-stack: the same device (IPv4 underlay) carries the pods' IPv6 too.
//! A peer's IPv6 podCIDR is routed via the link-local address its VTEP MAC
//! gives (EUI-64, the address the kernel gives its VXLAN device), with a
//! permanent neighbour entry for it, so no IPv6 address is configured.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, LinkVxlan};

use crate::{Error, Result};

/// The VXLAN device's name.
pub const DEVICE: &str = "skiff.vxlan";
/// Bytes VXLAN over IPv4 adds to every packet (outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14).
pub const OVERHEAD: u32 = 50;

/// How this node's VTEP is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanConfig {
    pub vni: u32,
    pub port: u16,
    /// This node's address: the outer source of its packets.
    pub local: Ipv4Addr,
}

impl VxlanConfig {
    pub fn new(local: Ipv4Addr) -> VxlanConfig {
        VxlanConfig { vni: 1, port: 8472, local }
    }
}

/// Another node as the VXLAN backend needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VxlanPeer {
    pub pod_cidr: Ipv4Net,
    pub node_ip: Ipv4Addr,
    pub mac: [u8; 6],
    /// The peer's IPv6 podCIDR (dual-stack clusters).
    pub pod_cidr_v6: Option<Ipv6Net>,
}

/// The IPv6 next hop of a peer's IPv6 podCIDR: the link-local address of
/// its VTEP MAC (modified EUI-64, `fe80::` + MAC with the U/L bit flipped
/// and `ff:fe` in the middle).
pub fn vtep_address_v6(mac: &[u8; 6]) -> Ipv6Addr {
    let m = mac;
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([m[0] ^ 0x02, m[1]]),
        u16::from_be_bytes([m[2], 0xff]),
        u16::from_be_bytes([0xfe, m[3]]),
        u16::from_be_bytes([m[4], m[5]]),
    )
}

/// A node's VTEP address: its podCIDR's network address.
pub fn vtep_address(pod_cidr: Ipv4Net) -> Ipv4Addr {
    pod_cidr.trunc().network()
}

/// `aa:bb:cc:dd:ee:ff` ⇄ bytes.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<u8> = s.split(':').map(|p| u8::from_str_radix(p, 16).ok()).collect::<Option<Vec<_>>>()?;
    parts.try_into().ok()
}

fn nl(message: String) -> Error {
    Error::Node { message: format!("vxlan: {message}") }
}

/// Make the device if missing, give it the VTEP address, set it up; returns its index and MAC.
pub async fn ensure_device(h: &Handle, cfg: &VxlanConfig, pod_cidr: Ipv4Net, mtu: u32) -> Result<(u32, [u8; 6])> {
    if crate::bridge::link_with_mac(h, DEVICE).await?.is_none() {
        tracing::debug!(device = DEVICE, vni = cfg.vni, "netlink: add vxlan");
        h.link()
            .add(LinkVxlan::new(DEVICE, cfg.vni).local(cfg.local).port(cfg.port).learning(false).mtu(mtu).build())
            .execute()
            .await
            .map_err(|e| nl(format!("adding {DEVICE}: {e}")))?;
    }
    let (idx, mac) = crate::bridge::link_with_mac(h, DEVICE).await?.ok_or_else(|| nl(format!("{DEVICE} vanished")))?;
    let vtep = vtep_address(pod_cidr);
    crate::bridge::ensure_address(h, idx, DEVICE, IpAddr::V4(vtep), 32).await?;
    h.link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .map_err(|e| nl(format!("setting {DEVICE} up: {e}")))?;
    Ok((idx, mac))
}

/// Neighbour and forwarding entries for each peer (replaced, so a peer whose
/// MAC or address changed is corrected), then the route to its podCIDR.
pub async fn program_peer(h: &Handle, idx: u32, peer: &VxlanPeer, protocol: u8) -> Result<()> {
    let vtep = IpAddr::V4(vtep_address(peer.pod_cidr));
    add_neighbour(h, idx, vtep, &peer.mac).await?;
    h.neighbours()
        .add_bridge(idx, &peer.mac)
        .flags(NeighbourFlags::Own)
        .destination(IpAddr::V4(peer.node_ip))
        .replace()
        .execute()
        .await
        .map_err(|e| nl(format!("forwarding entry {} → {}: {e}", format_mac(&peer.mac), peer.node_ip)))?;
    add_onlink_route(h, idx, IpNet::V4(peer.pod_cidr), vtep, protocol).await?;
    if let Some(cidr6) = peer.pod_cidr_v6 {
        let vtep6 = IpAddr::V6(vtep_address_v6(&peer.mac));
        add_neighbour(h, idx, vtep6, &peer.mac).await?;
        add_onlink_route(h, idx, IpNet::V6(cidr6), vtep6, protocol).await?;
    }
    Ok(())
}

/// The permanent neighbour entry `ip` → `mac` on the device (replaced).
async fn add_neighbour(h: &Handle, idx: u32, ip: IpAddr, mac: &[u8; 6]) -> Result<()> {
    h.neighbours()
        .add(idx, ip)
        .link_layer_address(mac)
        .replace()
        .execute()
        .await
        .map_err(|e| nl(format!("neighbour {ip} → {}: {e}", format_mac(mac))))
}

/// The route to a peer's podCIDR `dest` via its VTEP address, `onlink` on the device (replaced).
async fn add_onlink_route(h: &Handle, idx: u32, dest: IpNet, via: IpAddr, protocol: u8) -> Result<()> {
    h.route()
        .add(crate::bridge::route_via(dest, via, protocol, Some(idx))?)
        .replace()
        .execute()
        .await
        .map_err(|e| nl(format!("route to {dest} via {via}: {e}")))
}

/// Delete the device's neighbour and forwarding entries that no peer in
/// `want` accounts for: those of nodes that left, and a peer's old ones
/// after its MAC address or node address changed. Only permanent entries
/// are Skiff's; the kernel's own (multicast) are left alone.
pub async fn prune_peers(h: &Handle, idx: u32, want: &[VxlanPeer]) -> Result<()> {
    let mut neighbours: HashSet<(IpAddr, [u8; 6])> = HashSet::new();
    let mut forwarding: HashSet<([u8; 6], IpAddr)> = HashSet::new();
    for p in want {
        neighbours.insert((IpAddr::V4(vtep_address(p.pod_cidr)), p.mac));
        if p.pod_cidr_v6.is_some() {
            neighbours.insert((IpAddr::V6(vtep_address_v6(&p.mac)), p.mac));
        }
        forwarding.insert((p.mac, IpAddr::V4(p.node_ip)));
    }
    // an unspecified family dumps the IPv4 and IPv6 neighbours; the bridge family the forwarding entries
    let mut entries: Vec<NeighbourMessage> =
        h.neighbours().get().execute().try_collect().await.map_err(|e| nl(format!("listing neighbours: {e}")))?;
    let fdb = h.neighbours().get().set_address_family(AddressFamily::Bridge).execute();
    entries.extend(fdb.try_collect::<Vec<_>>().await.map_err(|e| nl(format!("listing forwarding entries: {e}")))?);
    for entry in entries {
        if entry.header.ifindex != idx || entry.header.state != NeighbourState::Permanent {
            continue;
        }
        let mut destination = None;
        let mut mac = None;
        for a in &entry.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => destination = Some(IpAddr::V4(*ip)),
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => destination = Some(IpAddr::V6(*ip)),
                // a forwarding entry's outer destination comes undecoded (its family is the bridge's)
                NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                    destination = <[u8; 4]>::try_from(b.as_slice())
                        .map(IpAddr::from)
                        .or_else(|_| <[u8; 16]>::try_from(b.as_slice()).map(IpAddr::from))
                        .ok()
                }
                NeighbourAttribute::LinkLayerAddress(m) => mac = <[u8; 6]>::try_from(m.as_slice()).ok(),
                _ => {}
            }
        }
        let (Some(destination), Some(mac)) = (destination, mac) else { continue };
        let (stale, what) = match entry.header.family {
            AddressFamily::Bridge => (
                !forwarding.contains(&(mac, destination)),
                format!("forwarding entry {} → {destination}", format_mac(&mac)),
            ),
            AddressFamily::Inet | AddressFamily::Inet6 => {
                (!neighbours.contains(&(destination, mac)), format!("neighbour {destination} → {}", format_mac(&mac)))
            }
            _ => continue,
        };
        if stale {
            tracing::debug!(device = DEVICE, "netlink: delete {what}");
            h.neighbours().del(entry).execute().await.map_err(|e| nl(format!("deleting {what}: {e}")))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_round_trip_and_vteps_are_network_addresses() {
        let mac = [0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f];
        assert_eq!(format_mac(&mac), "0a:1b:2c:3d:4e:5f");
        assert_eq!(parse_mac("0a:1b:2c:3d:4e:5f"), Some(mac));
        assert_eq!(parse_mac("0a:1b"), None);
        assert_eq!(vtep_address("10.244.3.0/24".parse().unwrap()), Ipv4Addr::new(10, 244, 3, 0));
        // as `ip -6 addr` shows the device's own link-local address
        assert_eq!(vtep_address_v6(&mac), "fe80::81b:2cff:fe3d:4e5f".parse::<Ipv6Addr>().unwrap());
    }
}
