//! Figures for `make bench`: how long the proxy takes to program a large
//! table in full, and to apply a one-endpoint change. Needs root: it works in
//! a network namespace of its own, removed afterwards.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{Endpoint, Protocol, Proxy, ProxyState, Service, ServicePort, SyncKind};
use crate::{netns, Error, Result};

/// What [`measure`] found.
#[derive(Debug, Clone)]
pub struct ProxyFigures {
    pub services: usize,
    pub endpoints_per_service: usize,
    /// (chains, rules, map and set elements) of the table
    pub table_size: (usize, usize, usize),
    /// First full sync into an empty namespace, end to end.
    pub full_sync: Duration,
    /// Of which rendering and building the transaction.
    pub full_render: Duration,
    pub full_bytes: usize,
    /// A full resync over the existing table (the periodic one, or an agent restart).
    pub resync: Duration,
    /// One endpoint of one Service replaced, end to end (render, diff, nft).
    pub incremental_p50: Duration,
    pub incremental_p99: Duration,
    pub incremental_samples: usize,
    /// Of which the kernel's side (p50): nft for new chains, if any, and the
    /// element batch; the rest is comparing the state and rendering.
    pub incremental_apply_p50: Duration,
    /// Of the full sync: nft (chains and rules) and the element batch.
    pub full_apply: Duration,
    /// A sync with nothing changed (comparing the state with the last one).
    pub unchanged: Duration,
    /// The baseline, in the same run: the same table, elements included, as
    /// one `nft -f` of nft's own syntax into an empty namespace (how the
    /// proxy loaded it before the elements went over netlink).
    pub nft_alone: Duration,
}

impl std::fmt::Display for ProxyFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        writeln!(
            f,
            "proxy: {} services x {} endpoints ({} chains, {} rules, {} elements)",
            self.services, self.endpoints_per_service, self.table_size.0, self.table_size.1, self.table_size.2
        )?;
        writeln!(
            f,
            "  full sync          {:>9.1} ms (render {:.1} ms, nft + element batch {:.1} ms, {} KiB for nft -f)",
            ms(self.full_sync),
            ms(self.full_render),
            ms(self.full_apply),
            self.full_bytes / 1024
        )?;
        writeln!(f, "  full resync        {:>9.1} ms", ms(self.resync))?;
        writeln!(f, "  unchanged          {:>9.1} ms (comparing the state with the last one)", ms(self.unchanged))?;
        writeln!(
            f,
            "  incremental (1 ep) {:>9.1} ms p50, {:.1} ms p99 over {} (element batch p50 {:.1} ms)",
            ms(self.incremental_p50),
            ms(self.incremental_p99),
            self.incremental_samples,
            ms(self.incremental_apply_p50)
        )?;
        write!(
            f,
            "  baseline: the same table as one nft -f {:>9.1} ms; full sync / baseline {:.2}",
            ms(self.nft_alone),
            self.full_sync.as_secs_f64() / self.nft_alone.as_secs_f64().max(1e-9)
        )
    }
}

/// A state of `services` ClusterIP Services (every tenth also a NodePort)
/// with `endpoints` ready endpoints each, all TCP 80 → 8080.
pub fn synthetic_state(services: usize, endpoints: usize) -> ProxyState {
    let services = (0..services)
        .map(|i| {
            let vip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + 1 + i as u32);
            let eps = (0..endpoints)
                .map(|j| Endpoint {
                    ip: Ipv4Addr::from(
                        u32::from(Ipv4Addr::new(10, 244, 0, 0)) + 2 + ((i * endpoints + j) % 65000) as u32,
                    )
                    .into(),
                    port: 8080,
                    local: j % 3 == 0,
                })
                .collect();
            Service {
                namespace: format!("ns{}", i % 50),
                name: format!("svc{i}"),
                cluster_ip: Some(vip.into()),
                ports: vec![ServicePort {
                    name: "http".into(),
                    protocol: Protocol::Tcp,
                    port: 80,
                    node_port: (i % 10 == 0 && i / 10 < 2767).then(|| 30000 + (i / 10) as u16),
                    endpoints: eps,
                }],
                ..Default::default()
            }
        })
        .collect();
    ProxyState {
        family: super::Family::V4,
        cluster_cidr: Some("10.244.0.0/16".parse().expect("a valid CIDR")),
        pod_cidr: Some("10.244.0.0/24".parse().expect("a valid CIDR")),
        services,
        host_ports: Vec::new(),
    }
}

/// Removes the bench's namespace however the bench ends.
struct NsGuard(PathBuf);

impl Drop for NsGuard {
    fn drop(&mut self) {
        let _ = netns::remove(&self.0.join("ns"));
        let _ = netns::remove(&self.0.join("baseline"));
        // netns::create may have made the directory a shared mount
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Program `services` × `endpoints` into a fresh namespace, then replace one
/// endpoint `samples` times. Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN).
pub fn measure(services: usize, endpoints: usize, samples: usize) -> Result<ProxyFigures> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("skiff-bench-proxy-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::Node { message: format!("{}: {e}", dir.display()) })?;
    let guard = NsGuard(dir);
    let ns = guard.0.join("ns");
    netns::create(&ns)?;

    let mut state = synthetic_state(services, endpoints);
    let table_size = super::render(&state).counts();
    let mut proxy = Proxy::in_netns(&ns);
    let t = Instant::now();
    let first = proxy.sync(&state)?;
    let full_sync = t.elapsed();
    proxy.invalidate();
    let t = Instant::now();
    // what an agent restart does: a full resync over a table that is there
    proxy.sync(&state)?;
    let resync = t.elapsed();

    let t = Instant::now();
    proxy.sync(&state)?;
    let unchanged = t.elapsed();
    let mut times = Vec::with_capacity(samples);
    let mut applies = Vec::with_capacity(samples);
    for k in 0..samples {
        let svc = &mut state.services[(k * 7919) % services.max(1)];
        if let Some(ep) = svc.ports[0].endpoints.first_mut() {
            ep.ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 245, 0, 0)) + k as u32).into();
        }
        let t = Instant::now();
        let stats = proxy.sync(&state)?;
        times.push(t.elapsed());
        applies.push(stats.apply);
        debug_assert_eq!(stats.kind, SyncKind::Incremental);
    }
    times.sort();
    applies.sort();

    // the baseline: everything through nft, in a namespace of its own
    let baseline_ns = guard.0.join("baseline");
    netns::create(&baseline_ns)?;
    let text = super::render(&state).to_text();
    let t = Instant::now();
    super::nft::apply(Some(&baseline_ns), &text)?;
    let nft_alone = t.elapsed();
    netns::remove(&baseline_ns)?;

    let pct = |p: f64| times.get(((times.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or_default();
    Ok(ProxyFigures {
        services,
        endpoints_per_service: endpoints,
        table_size,
        full_sync,
        full_render: first.render,
        full_bytes: first.bytes,
        resync,
        incremental_p50: pct(0.5),
        incremental_p99: pct(0.99),
        incremental_samples: times.len(),
        incremental_apply_p50: applies.get(applies.len() / 2).copied().unwrap_or_default(),
        full_apply: first.apply,
        unchanged,
        nft_alone,
    })
}
