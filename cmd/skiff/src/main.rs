//! The `skiff` binary: flags, tracing, and wiring the components together.
//! No domain logic lives here.

use std::fs;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use skiff_api::families::DualCidr;

mod config_file;
mod datastore;

#[derive(Parser, Debug)]
#[command(name = "skiff", version, about = "A single-binary orchestrator that speaks the Kubernetes API")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a server: API server, store, control loops, and a node agent with the pod network, DNS and ingress
    Server(Box<ServerArgs>),
    /// Print the admin kubeconfig of the server whose data dir is given
    Kubeconfig(KubeconfigArgs),
    /// Run a node agent that joins a server and runs the pods bound to this node
    Agent(Box<AgentArgs>),
    /// Import image archives (OCI layout or docker-archive tarballs) for air-gapped nodes, or list images
    #[command(subcommand)]
    Image(ImageCommand),
    /// (internal) containerd's shim runs this to write a container's output as CRI log lines
    #[command(hide = true)]
    Logger {
        /// The log file to append to
        path: PathBuf,
    },
}

#[derive(Parser, Debug, Clone)]
struct AgentArgs {
    /// The server to join, e.g. https://10.0.0.1:6443; several, comma-separated, to fail over between
    #[arg(long, env = "SKIFF_URL")]
    server: String,
    /// The join token (in `<data-dir>/token` on the server)
    #[arg(long, env = "SKIFF_TOKEN")]
    token: String,
    /// This node's name (default: the hostname)
    #[arg(long)]
    node_name: Option<String>,
    /// This node's address (default: the address that reaches the server); IPv4,IPv6 for a dual-stack node
    /// (default IPv6 address with a dual --cluster-cidr: the first global one beside the IPv4 address)
    #[arg(long, value_parser = parse_node_ip)]
    node_ip: Option<NodeIps>,
    /// Folder for the agent's state (pods, logs, network namespaces under <data-dir>/agent)
    #[arg(long, default_value = "/var/lib/skiff", env = "SKIFF_DATA_DIR")]
    data_dir: PathBuf,
    /// containerd's socket
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    container_runtime_endpoint: PathBuf,
    /// The cluster DNS address pods get as their nameserver
    #[arg(long, default_value = "10.96.0.10")]
    cluster_dns: IpAddr,
    /// The cluster's DNS domain
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    #[command(flatten)]
    network: NetworkArgs,
    /// The cluster's pod range, as given to the server's --cluster-cidr (IPv4, or IPv4,IPv6 for dual-stack)
    #[arg(long, default_value = "10.244.0.0/16", value_parser = parse_cluster_cidr)]
    cluster_cidr: DualCidr,
    /// Built-in components not to run on this node: ingress (alias traefik), dns (alias coredns)
    #[arg(long, value_delimiter = ',', value_parser = parse_component)]
    disable: Vec<String>,
}

/// Pod network flags shared by `skiff server` and `skiff agent`.
#[derive(Parser, Debug, Clone)]
struct NetworkArgs {
    /// How pods reach pods on other nodes: host-gw (routes via node addresses; nodes on one segment), vxlan
    /// (tunnelled in UDP 8472 to node addresses; nodes only need IP reachability), or none (pods get only
    /// loopback, no service proxy)
    #[arg(long, default_value = "host-gw")]
    flannel_backend: String,
    /// Do not program Services into nftables on this node
    #[arg(long)]
    disable_kube_proxy: bool,
    /// Port of the built-in ingress proxy's plain HTTP listener on every node address
    #[arg(long, default_value_t = 80)]
    ingress_http_port: u16,
    /// Port of the built-in ingress proxy's HTTPS listener on every node address
    #[arg(long, default_value_t = 443)]
    ingress_https_port: u16,
}

impl NetworkArgs {
    /// The agent's pod network options; `disabled` are the `--disable` components, `server` says whether
    /// this node writes Ingress status (the server's own node does).
    fn options(
        &self,
        cluster_cidr: DualCidr,
        disabled: &[String],
        server: bool,
    ) -> Result<Option<skiff_agent::network::NetworkOptions>> {
        if self.flannel_backend == "none" {
            return Ok(None);
        }
        let backend = self.flannel_backend.parse().map_err(|e: String| anyhow::anyhow!("--flannel-backend: {e}"))?;
        let mut opts = skiff_agent::network::NetworkOptions::new(cluster_cidr)
            .map_err(|e| anyhow::anyhow!("--cluster-cidr {cluster_cidr}: {e}"))?;
        opts.backend = backend;
        opts.proxy = !self.disable_kube_proxy;
        opts.addons.dns = !disabled.iter().any(|d| d == "dns");
        let ingress = skiff_agent::addons::IngressOptions {
            http_port: self.ingress_http_port,
            https_port: self.ingress_https_port,
            update_status: server,
        };
        opts.addons.ingress = (!disabled.iter().any(|d| d == "ingress")).then_some(ingress);
        Ok(Some(opts))
    }
}

#[derive(Subcommand, Debug)]
enum ImageCommand {
    /// Import image archives into containerd, where the node agent finds them
    Import {
        /// OCI layout or docker-archive tarballs (`docker save`, `skopeo copy ... oci-archive:`)
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// List the images containerd holds for the agent
    Ls {
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
}

#[derive(Parser, Debug, Clone)]
struct RuntimeArgs {
    /// containerd's socket
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    container_runtime_endpoint: PathBuf,
    /// containerd namespace the agent uses
    #[arg(long, default_value = "k8s.io")]
    containerd_namespace: String,
}

#[derive(Parser, Debug, Clone)]
struct ServerArgs {
    /// YAML file of flags (keys are the flag names, e.g. `data-dir: /srv/skiff`); command-line flags win
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Folder for state: the store, TLS material, the join token, the kubeconfig
    #[arg(long, default_value = "/var/lib/skiff", env = "SKIFF_DATA_DIR")]
    data_dir: PathBuf,
    /// Address the API server listens on
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// HTTPS port of the API server
    #[arg(long, default_value_t = 6443)]
    https_listen_port: u16,
    /// Where to write the admin kubeconfig (default <data-dir>/kubeconfig.yaml), mode 0600
    #[arg(long)]
    write_kubeconfig: Option<PathBuf>,
    /// Join token nodes present; generated and stored in the data dir when absent
    #[arg(long, env = "SKIFF_TOKEN")]
    token: Option<String>,
    /// This node's address (advertised in the `kubernetes` Endpoints and the certificate); IPv4,IPv6 for a
    /// dual-stack node
    #[arg(long, value_parser = parse_node_ip)]
    node_ip: Option<NodeIps>,
    /// Range Service ClusterIPs are drawn from; two ranges separated by a comma (one IPv4, one IPv6, the
    /// first is the default family) make Services dual-stack, e.g. 10.96.0.0/12,fd00:10:96::/112
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cidr: String,
    /// Range pod addresses are drawn from; each node gets a /24 of it (and a /64 of an IPv6 range given after
    /// a comma, e.g. 10.244.0.0/16,fd00:10:244::/56)
    #[arg(long, default_value = "10.244.0.0/16", value_parser = parse_cluster_cidr)]
    cluster_cidr: DualCidr,
    /// Range NodePorts are drawn from, as FIRST-LAST
    #[arg(long, default_value = "30000-32767")]
    service_node_port_range: String,
    /// Run without the node agent (this server runs no pods)
    #[arg(long)]
    disable_agent: bool,
    #[command(flatten)]
    network: NetworkArgs,
    /// Range LoadBalancer Services' addresses are drawn from (the network must route it to the nodes); default:
    /// the nodes' own addresses
    #[arg(long)]
    service_lb_pool: Option<ipnet::Ipv4Net>,
    /// Built-in components not to run: servicelb, ingress (alias traefik), dns (alias coredns)
    #[arg(long, value_delimiter = ',', value_parser = parse_component)]
    disable: Vec<String>,
    /// The embedded agent's node name (default: the hostname)
    #[arg(long)]
    node_name: Option<String>,
    /// containerd's socket, for the embedded agent
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    container_runtime_endpoint: PathBuf,
    /// The cluster DNS address pods get as their nameserver
    #[arg(long, default_value = "10.96.0.10")]
    cluster_dns: IpAddr,
    /// The cluster's DNS domain
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Extra names for the serving certificate (IP addresses)
    #[arg(long = "tls-san", value_delimiter = ',')]
    tls_san: Vec<IpAddr>,
    /// A node whose heartbeat (Lease) is older than this becomes NotReady: seconds, or "40s", "2m"
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    node_monitor_grace_period: std::time::Duration,
    /// How long pods stay on a NotReady node before they are evicted, unless they tolerate longer: seconds, or "300s", "5m"
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pod_eviction_timeout: std::time::Duration,
    #[command(flatten)]
    datastore: datastore::DatastoreArgs,
}

/// A duration as plain seconds ("40") or with units ("40s", "5m", "1h30m", "500ms").
fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    let bad = || format!("{s:?} is not a duration: use seconds (40) or units such as 40s, 5m, 1h30m, 500ms");
    let t = s.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(secs));
    }
    let mut total = std::time::Duration::ZERO;
    let mut rest = t;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => std::time::Duration::from_millis(n),
            "s" => std::time::Duration::from_secs(n),
            "m" => std::time::Duration::from_secs(n * 60),
            "h" => std::time::Duration::from_secs(n * 3600),
            _ => return Err(bad()),
        };
        total += unit;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[derive(Parser, Debug)]
struct KubeconfigArgs {
    #[arg(long, default_value = "/var/lib/skiff", env = "SKIFF_DATA_DIR")]
    data_dir: PathBuf,
    /// The server URL to put in the kubeconfig
    #[arg(long, default_value = "https://127.0.0.1:6443")]
    server: String,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = match config_file::expand(std::env::args_os().collect()) {
        Ok(args) => Cli::parse_from(args),
        Err(e) => {
            eprintln!("skiff: {e:#}");
            std::process::exit(1);
        }
    };
    let result = match cli.command {
        Command::Server(args) => run_server(*args),
        Command::Kubeconfig(args) => print_kubeconfig(args),
        Command::Agent(args) => run_agent(*args),
        Command::Image(cmd) => run_image(cmd),
        Command::Logger { path } => skiff_agent::runtime::containerd::logger::run(&path)
            .map_err(|e| anyhow::anyhow!("logger {}: {e}", path.display())),
    };
    if let Err(e) = result {
        eprintln!("skiff: {e:#}");
        std::process::exit(1);
    }
}

fn parse_port_range(s: &str) -> Result<(u16, u16)> {
    let (a, b) = s
        .split_once('-')
        .with_context(|| format!("--service-node-port-range {s:?}: expected FIRST-LAST, e.g. 30000-32767"))?;
    let a: u16 = a.trim().parse().with_context(|| format!("--service-node-port-range {s:?}: {a:?} is not a port"))?;
    let b: u16 = b.trim().parse().with_context(|| format!("--service-node-port-range {s:?}: {b:?} is not a port"))?;
    if a == 0 || a > b {
        bail!("--service-node-port-range {s:?}: the first port must be between 1 and the last port");
    }
    Ok((a, b))
}

/// A `--disable` value: a built-in component's name (k3s's names accepted).
fn parse_component(s: &str) -> Result<String, String> {
    match s.trim() {
        "servicelb" => Ok("servicelb".into()),
        "ingress" | "traefik" => Ok("ingress".into()),
        "dns" | "coredns" => Ok("dns".into()),
        other => Err(format!("{other:?} is not a component that can be disabled: use servicelb, ingress or dns")),
    }
}

/// `--cluster-cidr`: one range, or an IPv4 and an IPv6 range, with room for at least one node's podCIDR
/// (a /24 of IPv4, a /64 of IPv6).
/// `--node-ip`: the node's address, and a dual-stack node's IPv6 address after a comma.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NodeIps {
    primary: IpAddr,
    ipv6: Option<std::net::Ipv6Addr>,
}

fn parse_node_ip(s: &str) -> Result<NodeIps, String> {
    let parse = |p: &str| p.trim().parse::<IpAddr>().map_err(|_| format!("{p:?} is not an IP address"));
    let parts: Vec<&str> = s.split(',').collect();
    let primary = parse(parts[0])?;
    match parts.as_slice() {
        [_] => Ok(NodeIps { primary, ipv6: None }),
        [_, second] => match (primary, parse(second)?) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => Ok(NodeIps { primary, ipv6: Some(v6) }),
            _ => Err("two addresses must be an IPv4 one then an IPv6 one, e.g. 192.0.2.7,2001:db8::7".into()),
        },
        _ => Err("at most two addresses, IPv4 then IPv6, e.g. 192.0.2.7,2001:db8::7".into()),
    }
}

fn parse_cluster_cidr(s: &str) -> Result<DualCidr, String> {
    let cidrs: DualCidr =
        s.parse().map_err(|e| format!("{e}; e.g. 10.244.0.0/16 or 10.244.0.0/16,fd00:10:244::/56"))?;
    for net in cidrs.iter() {
        let (max, fam) = match net {
            ipnet::IpNet::V4(_) => (24, "IPv4"),
            ipnet::IpNet::V6(_) => (64, "IPv6"),
        };
        if net.prefix_len() > max {
            return Err(format!(
                "{net} is too small: each node takes a /{max} of the {fam} range, so use a prefix of /{max} or shorter"
            ));
        }
        if let ipnet::IpNet::V6(v6) = net {
            if v6.prefix_len() < 48 {
                return Err(format!("{net} is too large: use an IPv6 prefix between /48 and /64 (e.g. a /56)"));
            }
        }
    }
    Ok(cidrs)
}

/// `--service-cidr`: one range, or an IPv4 and an IPv6 range (dual-stack Services).
fn parse_service_cidr(s: &str) -> Result<DualCidr> {
    let cidrs: DualCidr = s.parse().map_err(|e| {
        anyhow::anyhow!(
            "--service-cidr {s:?}: {e}; expected a CIDR such as 10.96.0.0/12, or 10.96.0.0/12,fd00:10:96::/112"
        )
    })?;
    for net in cidrs.iter() {
        match net {
            ipnet::IpNet::V4(v4) if v4.prefix_len() > 28 => {
                bail!("--service-cidr {s:?}: the range {net} is too small; use a prefix of /28 or shorter")
            }
            ipnet::IpNet::V6(v6) if v6.prefix_len() > 124 => {
                bail!("--service-cidr {s:?}: the range {net} is too small; use a prefix of /124 or shorter")
            }
            ipnet::IpNet::V6(v6) if v6.prefix_len() < 108 => {
                bail!(
                    "--service-cidr {s:?}: the range {net} is too large; for 128-bit addresses the mask must be >= 108"
                )
            }
            _ => {}
        }
    }
    Ok(cidrs)
}

/// The join token: given, or read from the data dir, or generated once.
/// The secret of the join token: from --token (a bare secret or a full
/// `K10<ca hash>::server:<secret>` token), else from `<data-dir>/token`,
/// else generated. The full token is written after TLS exists (`write_token`).
fn join_token(data_dir: &Path, given: Option<String>) -> Result<String> {
    if let Some(t) = given {
        if t.trim().is_empty() {
            bail!("--token: the token must not be empty");
        }
        return Ok(skiff_apiserver::tls::parse_token(t.trim()).1.to_string());
    }
    match fs::read_to_string(data_dir.join("token")) {
        Ok(t) if !t.trim().is_empty() => Ok(skiff_apiserver::tls::parse_token(t.trim()).1.to_string()),
        _ => {
            let bytes: [u8; 24] = rand_bytes();
            Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
        }
    }
}

/// Write `<data-dir>/token` in k3s' form, which lets a joining node check the
/// CA it downloads from the server.
fn write_token(data_dir: &Path, tls: &skiff_apiserver::tls::ClusterTls, secret: &str) -> Result<()> {
    let token = skiff_apiserver::tls::full_token(&tls.ca_hash(), secret);
    write_private(&data_dir.join("token"), token.as_bytes())
}

fn rand_bytes() -> [u8; 24] {
    let mut out = [0u8; 24];
    // uuid v4 draws from the OS random source
    let a = uuid_bytes();
    let b = uuid_bytes();
    out[..16].copy_from_slice(&a);
    out[16..].copy_from_slice(&b[..8]);
    out
}

fn uuid_bytes() -> [u8; 16] {
    *uuid::Uuid::new_v4().as_bytes()
}

fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(contents).with_context(|| format!("writing {}", tmp.display()))?;
    f.sync_all().with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn kubeconfig(server: &str, tls: &skiff_apiserver::tls::ClusterTls) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: admin\n    namespace: default\ncurrent-context: skiff\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\npreferences: {{}}\n",
        b64(&tls.ca_cert_pem),
        b64(&tls.admin_cert_pem),
        b64(&tls.admin_key_pem),
    )
}

fn server_url(bind: IpAddr, port: u16) -> String {
    if bind.is_unspecified() || bind.is_loopback() {
        format!("https://127.0.0.1:{port}")
    } else if bind.is_ipv6() {
        format!("https://[{bind}]:{port}")
    } else {
        format!("https://{bind}:{port}")
    }
}

fn run_server(args: ServerArgs) -> Result<()> {
    let node_ports = parse_port_range(&args.service_node_port_range)?;
    let service_cidr = parse_service_cidr(&args.service_cidr)?;
    fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("--data-dir {}: cannot create it", args.data_dir.display()))?;
    let token = join_token(&args.data_dir, args.token.clone())?;
    let advertise = args.node_ip.map(|n| n.primary).unwrap_or(if args.bind_address.is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        args.bind_address
    });
    // Fail on bad datastore flags before anything is created.
    args.datastore.etcd_options()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(async move {
        let opened = args.datastore.open(&args.data_dir).await?;
        let store = opened.dyn_store();
        let token = if opened.is_shared() {
            datastore::share_cluster_secrets(store.as_ref(), &args.data_dir.join("tls"), token, args.token.is_some())
                .await?
        } else {
            token
        };
        let config = skiff_apiserver::Config {
            tls_dir: args.data_dir.join("tls"),
            bind: SocketAddr::new(args.bind_address, args.https_listen_port),
            extra_sans: args.tls_san.clone(),
            advertise,
            service_cidr,
            node_port_range: node_ports,
            node_token: token,
        };
        let secret = config.node_token.clone();
        let running = skiff_apiserver::start(config, store.clone()).await?;
        write_token(&args.data_dir, &running.tls, &secret)?;
        let kubeconfig_path = args.write_kubeconfig.clone().unwrap_or_else(|| args.data_dir.join("kubeconfig.yaml"));
        let kc = kubeconfig(&server_url(args.bind_address, running.addr.port()), &running.tls);
        write_private(&kubeconfig_path, kc.as_bytes())?;
        let controllers = start_controllers(&args, &running).await?;
        if !args.disable.iter().any(|d| d == "dns") {
            ensure_dns_service(&args, &running).await?;
        }
        let agent = if args.disable_agent {
            tracing::info!("node agent disabled (--disable-agent)");
            None
        } else {
            Some(start_embedded_agent(&args, &running, &secret, advertise).await?)
        };
        tracing::info!(kubeconfig = %kubeconfig_path.display(), addr = %running.addr, "skiff server is ready");
        wait_for_signal().await;
        tracing::info!("shutting down");
        if let Some(agent) = agent {
            agent.stop().await;
        }
        controllers.stop().await;
        running.shutdown().await;
        drop(store);
        opened.close();
        Ok::<(), anyhow::Error>(())
    })
}

/// The kube-dns Service (ClusterIP `--cluster-dns`) the nodes' DNS servers publish their endpoints for.
async fn ensure_dns_service(args: &ServerArgs, running: &skiff_apiserver::Running) -> Result<()> {
    let url = server_url(args.bind_address, running.addr.port());
    let tls = &running.tls;
    let client =
        skiff_controllers::client_from_pem(&url, &tls.ca_cert_pem, &tls.admin_cert_pem, &tls.admin_key_pem).await?;
    skiff_agent::addons::ensure_dns_service(&client, args.cluster_dns).await.with_context(|| {
        format!(
            "creating the kube-dns Service with ClusterIP {} (--cluster-dns must be inside --service-cidr)",
            args.cluster_dns
        )
    })
}

/// A node agent running in this process.
struct EmbeddedAgent {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl EmbeddedAgent {
    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

fn spawn_agent(agent: skiff_agent::Agent) -> EmbeddedAgent {
    let stop = tokio_util::sync::CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = agent.run(token).await {
            tracing::error!(error = %e, "the node agent stopped");
        }
    });
    EmbeddedAgent { stop, task }
}

/// The agent of `skiff server`: joins this server with the join token and its CA.
async fn start_embedded_agent(
    args: &ServerArgs,
    running: &skiff_apiserver::Running,
    secret: &str,
    node_ip: IpAddr,
) -> Result<EmbeddedAgent> {
    let url = server_url(args.bind_address, running.addr.port());
    let token = skiff_apiserver::tls::full_token(&running.tls.ca_hash(), secret);
    let mut opts = skiff_agent::AgentOptions::new(url, token, args.data_dir.join("agent"));
    opts.ca_pem = Some(running.tls.ca_cert_pem.clone());
    opts.node_name = args.node_name.clone();
    opts.node_ip = Some(node_ip);
    opts.node_ip_v6 = args.node_ip.and_then(|n| n.ipv6);
    opts.container_runtime_endpoint = args.container_runtime_endpoint.clone();
    opts.cluster_dns = args.cluster_dns;
    opts.cluster_domain = args.cluster_domain.clone();
    opts.network = args.network.options(args.cluster_cidr, &args.disable, true)?;
    let agent = skiff_agent::start_agent(opts).await.with_context(|| {
        format!(
            "starting the node agent (containerd at --container-runtime-endpoint {}); run `skiff server --disable-agent` for a server without one",
            args.container_runtime_endpoint.display()
        )
    })?;
    Ok(spawn_agent(agent))
}

/// `skiff agent`: join a server and run this node's pods until a signal.
fn run_agent(args: AgentArgs) -> Result<()> {
    if args.token.trim().is_empty() {
        bail!("--token: the token must not be empty (it is in <data-dir>/token on the server)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    let servers = skiff_agent::client::server_list(&args.server)?;
    runtime.block_on(async move {
        // Several servers: the agent talks to a loopback forwarder that fails over between them.
        let (server, _proxy, node_ip) = if servers.len() > 1 {
            let proxy = skiff_agent::client::FailoverProxy::start(servers.clone()).await?;
            let node_ip = args
                .node_ip
                .map(|n| n.primary)
                .or_else(|| servers.iter().find_map(|s| skiff_agent::client::local_ip_towards(s)));
            (proxy.url().to_owned(), Some(proxy), node_ip)
        } else {
            (servers[0].clone(), None, args.node_ip.map(|n| n.primary))
        };
        let mut opts = skiff_agent::AgentOptions::new(server, args.token.trim(), args.data_dir.join("agent"));
        opts.node_name = args.node_name.clone();
        opts.node_ip = node_ip;
        opts.node_ip_v6 = args.node_ip.and_then(|n| n.ipv6);
        opts.container_runtime_endpoint = args.container_runtime_endpoint.clone();
        opts.cluster_dns = args.cluster_dns;
        opts.cluster_domain = args.cluster_domain.clone();
        opts.network = args.network.options(args.cluster_cidr, &args.disable, false)?;
        let agent = skiff_agent::start_agent(opts).await.context("starting the node agent")?;
        let agent = spawn_agent(agent);
        wait_for_signal().await;
        tracing::info!("shutting down");
        agent.stop().await;
        Ok::<(), anyhow::Error>(())
    })
}

/// The control loops, running against this server as its admin.
struct Controllers {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Controllers {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn start_controllers(args: &ServerArgs, running: &skiff_apiserver::Running) -> Result<Controllers> {
    let url = server_url(args.bind_address, running.addr.port());
    let tls = &running.tls;
    let client =
        skiff_controllers::client_from_pem(&url, &tls.ca_cert_pem, &tls.admin_cert_pem, &tls.admin_key_pem).await?;
    // With --node-name the leader Lease names the server holding it.
    let identity = args.node_name.as_ref().map(|n| format!("{n}_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    let opts = skiff_controllers::ControllerOptions {
        identity,
        node_monitor_grace_period: args.node_monitor_grace_period,
        pod_eviction_timeout: args.pod_eviction_timeout,
        cluster_cidr: args.cluster_cidr,
        service_lb_pool: args.service_lb_pool,
        root_ca_pem: Some(tls.ca_cert_pem.clone()),
        disabled: args.disable.iter().filter(|c| *c == "servicelb").cloned().collect(),
        // Shorter than Kubernetes' 15 s / 10 s / 2 s, so that when a server
        // sharing the datastore dies another takes the loops over within
        // 15 s: at worst lease + 2 retry periods after the last renewal.
        lease_duration: std::time::Duration::from_secs(10),
        renew_deadline: std::time::Duration::from_secs(7),
        retry_period: std::time::Duration::from_secs(1),
        ..Default::default()
    };
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        if let Err(e) = skiff_controllers::run(client, opts, rx).await {
            tracing::error!(error = %e, "control loops stopped");
        }
    });
    Ok(Controllers { stop, task })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn print_kubeconfig(args: KubeconfigArgs) -> Result<()> {
    let dir = args.data_dir.join("tls");
    if !dir.join("ca.crt").exists() {
        bail!(
            "{}: no cluster here yet; start `skiff server --data-dir {}` first",
            dir.display(),
            args.data_dir.display()
        );
    }
    let tls = skiff_apiserver::tls::ClusterTls::load(&dir)?;
    print!("{}", kubeconfig(&args.server, &tls));
    Ok(())
}

fn run_image(cmd: ImageCommand) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(async move {
        let connect = |r: &RuntimeArgs| {
            let r = r.clone();
            async move {
                skiff_agent::runtime::containerd::ContainerdRuntime::connect(
                    &r.container_runtime_endpoint,
                    &r.containerd_namespace,
                )
                .await
                .with_context(|| format!("--container-runtime-endpoint {}", r.container_runtime_endpoint.display()))
            }
        };
        match cmd {
            ImageCommand::Import { files, runtime } => {
                let rt = connect(&runtime).await?;
                for f in &files {
                    let images = skiff_agent::images::import_files(&rt, std::slice::from_ref(f)).await?;
                    for i in images {
                        println!("{}: imported {}", f.display(), i.reference);
                    }
                }
            }
            ImageCommand::Ls { runtime } => {
                let rt = connect(&runtime).await?;
                let images = skiff_agent::runtime::Runtime::list_images(&rt).await?;
                print!("{}", skiff_agent::images::render_table(&images));
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ip_takes_an_ipv6_address_after_the_ipv4_one() {
        let one = parse_node_ip("192.0.2.7").unwrap();
        assert_eq!((one.primary, one.ipv6), ("192.0.2.7".parse().unwrap(), None));
        let two = parse_node_ip("192.0.2.7,2001:db8::7").unwrap();
        assert_eq!(two.ipv6, Some("2001:db8::7".parse().unwrap()));
        assert!(parse_node_ip("2001:db8::7,192.0.2.7").unwrap_err().contains("IPv4 one then an IPv6 one"));
        assert!(parse_node_ip("192.0.2.7,x").unwrap_err().contains("\"x\" is not an IP address"));
    }
}
