//! `--datastore-endpoint` and friends: which store a server opens, and what
//! servers sharing one etcd must agree on before they start (the cluster CA
//! and the join token, kept under [`BOOTSTRAP_KEY`], as k3s keeps its
//! bootstrap data in the datastore).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde_json::json;
use skiff_apiserver::tls::SERVICE_ACCOUNT_KEY;
use skiff_store::{DynStore, EtcdOptions, EtcdStore, EtcdTls, SledOptions, SledStore, Store, StoreError};

/// The cluster's shared secrets in the datastore (CA, join token, service
/// account signing key). Outside `/registry/`, so
/// the API never serves it.
pub const BOOTSTRAP_KEY: &str = "/skiff/bootstrap";

/// The datastore flags (k3s' names).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DatastoreArgs {
    /// Keep the cluster's state in etcd instead of the embedded store, so several servers can share it:
    /// etcd://host:2379[,host:2379...]
    #[arg(long, value_name = "URL")]
    pub datastore_endpoint: Option<String>,
    /// CA that signed etcd's serving certificate (TLS to etcd)
    #[arg(long, value_name = "FILE")]
    pub datastore_cafile: Option<PathBuf>,
    /// Client certificate presented to etcd
    #[arg(long, value_name = "FILE")]
    pub datastore_certfile: Option<PathBuf>,
    /// Key of --datastore-certfile
    #[arg(long, value_name = "FILE")]
    pub datastore_keyfile: Option<PathBuf>,
}

/// The open store, kept by its concrete type so it can be closed.
pub enum Opened {
    Sled(Arc<SledStore>),
    Etcd(Arc<EtcdStore>),
}

impl Opened {
    pub fn dyn_store(&self) -> DynStore {
        match self {
            Opened::Sled(s) => s.clone(),
            Opened::Etcd(s) => s.clone(),
        }
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, Opened::Etcd(_))
    }

    pub fn close(&self) {
        match self {
            Opened::Sled(s) => s.close(),
            Opened::Etcd(s) => s.close(),
        }
    }
}

impl DatastoreArgs {
    /// etcd options from the flags, `None` for the embedded store.
    pub fn etcd_options(&self) -> Result<Option<EtcdOptions>> {
        let tls_given =
            self.datastore_cafile.is_some() || self.datastore_certfile.is_some() || self.datastore_keyfile.is_some();
        let Some(endpoint) = &self.datastore_endpoint else {
            if tls_given {
                bail!("--datastore-cafile/--datastore-certfile/--datastore-keyfile need --datastore-endpoint=etcd://host:2379");
            }
            return Ok(None);
        };
        let endpoints = EtcdOptions::parse_endpoint(endpoint).map_err(|e| anyhow::anyhow!("--{e}"))?;
        if self.datastore_certfile.is_some() != self.datastore_keyfile.is_some() {
            bail!("--datastore-certfile and --datastore-keyfile go together: give both or neither");
        }
        for path in [&self.datastore_cafile, &self.datastore_certfile, &self.datastore_keyfile].into_iter().flatten() {
            if !path.is_file() {
                bail!("{}: no such file (given as a --datastore-* TLS file)", path.display());
            }
        }
        let mut options = EtcdOptions::new(endpoints);
        if tls_given || endpoint.contains("https://") {
            options.tls = Some(EtcdTls {
                ca_file: self.datastore_cafile.clone(),
                cert_file: self.datastore_certfile.clone(),
                key_file: self.datastore_keyfile.clone(),
            });
        }
        Ok(Some(options))
    }

    /// Open the store the flags ask for: etcd, or sled in `<data-dir>/db`.
    pub async fn open(&self, data_dir: &Path) -> Result<Opened> {
        match self.etcd_options()? {
            Some(options) => {
                let shown = options.endpoints.join(",");
                let store = EtcdStore::connect(options)
                    .await
                    .with_context(|| format!("--datastore-endpoint: cannot use etcd at {shown}"))?;
                Ok(Opened::Etcd(store))
            }
            None => {
                let db = data_dir.join("db");
                let store = SledStore::open(SledOptions::new(db.clone())).with_context(|| {
                    format!("opening the store at {} (is another skiff server using this --data-dir?)", db.display())
                })?;
                Ok(Opened::Sled(store))
            }
        }
    }
}

/// Make this server's CA and join token those of the cluster in the shared
/// store: the first server to start stores its own; the others take them
/// (writing the CA into `tls_dir` before the API server loads it). Returns
/// the join token's secret.
///
/// `local_secret` is what the server would use alone (`--token`, or
/// `<data-dir>/token`, or a new one); `given` says whether `--token` set it.
pub async fn share_cluster_secrets(
    store: &dyn Store,
    tls_dir: &Path,
    local_secret: String,
    given: bool,
) -> Result<String> {
    for _ in 0..3 {
        if let Some(kv) = store.get(BOOTSTRAP_KEY).await.context("reading the cluster's bootstrap data")? {
            return adopt(&kv.value, tls_dir, &local_secret, given);
        }
        let fresh_tls = !tls_dir.join("ca.crt").exists();
        if fresh_tls {
            let names = skiff_apiserver::tls::ServingNames::standard(&[], None);
            skiff_apiserver::tls::ClusterTls::load_or_generate(tls_dir, &names)
                .with_context(|| format!("generating the cluster CA in {}", tls_dir.display()))?;
        }
        let ca_cert = read(&tls_dir.join("ca.crt"))?;
        let ca_key = read(&tls_dir.join("ca.key"))?;
        // a data dir from before service account tokens has no key yet
        let sa_key = skiff_apiserver::tls::service_account_key(tls_dir)
            .with_context(|| format!("the service account signing key in {}", tls_dir.display()))?;
        let data = json!({"caCert": ca_cert, "caKey": ca_key, "token": local_secret, "serviceAccountKey": sa_key});
        match store.create(BOOTSTRAP_KEY, Bytes::from(data.to_string())).await {
            Ok(_) => {
                tracing::info!("first server of this datastore: stored the cluster CA and join token in it");
                return Ok(local_secret);
            }
            Err(StoreError::AlreadyExists(_)) => {
                // Another server started at the same moment and won: take its CA.
                if fresh_tls {
                    fs::remove_dir_all(tls_dir).with_context(|| format!("removing {}", tls_dir.display()))?;
                }
            }
            Err(e) => return Err(e).context("storing the cluster's bootstrap data"),
        }
    }
    bail!("{BOOTSTRAP_KEY}: could not agree on the cluster's bootstrap data with the other servers")
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Take the cluster's CA and token from the stored bootstrap data.
fn adopt(raw: &[u8], tls_dir: &Path, local_secret: &str, given: bool) -> Result<String> {
    let data: serde_json::Value = serde_json::from_slice(raw).with_context(|| format!("{BOOTSTRAP_KEY}: not JSON"))?;
    let field = |name: &str| {
        data.get(name)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .with_context(|| format!("{BOOTSTRAP_KEY}: no {name:?}"))
    };
    let (ca_cert, ca_key, token) = (field("caCert")?, field("caKey")?, field("token")?);
    // absent in bootstrap data written before service account tokens existed:
    // then each server keeps its own key, and a token works on its issuer only
    let sa_key = data.get("serviceAccountKey").and_then(|v| v.as_str());
    if sa_key.is_none() {
        tracing::warn!(
            "{BOOTSTRAP_KEY} holds no service account signing key; tokens verify only on the server that issued them"
        );
    }
    if given && token != local_secret {
        bail!("--token differs from the token of the cluster in this datastore; give the same --token to every server (or none)");
    }
    let cert_path = tls_dir.join("ca.crt");
    let write_sa_key = || -> Result<()> {
        if let Some(key) = sa_key {
            let path = tls_dir.join(SERVICE_ACCOUNT_KEY);
            skiff_apiserver::tls::write_private(&path, key.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    };
    match fs::read_to_string(&cert_path) {
        Ok(local) if local == ca_cert => {
            write_sa_key()?;
            return Ok(token);
        }
        Ok(_) => bail!(
            "{}: this data dir has its own cluster CA, not the one of the cluster in the datastore; \
             remove {} to join that cluster",
            cert_path.display(),
            tls_dir.display()
        ),
        Err(_) => {}
    }
    fs::create_dir_all(tls_dir).with_context(|| format!("creating {}", tls_dir.display()))?;
    skiff_apiserver::tls::write_private(&tls_dir.join("ca.key"), ca_key.as_bytes())
        .with_context(|| format!("writing {}", tls_dir.join("ca.key").display()))?;
    skiff_apiserver::tls::write_private(&cert_path, ca_cert.as_bytes())
        .with_context(|| format!("writing {}", cert_path.display()))?;
    write_sa_key()?;
    tracing::info!("joined the cluster in the datastore: took its CA and join token");
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_without_an_endpoint_mean_sled() {
        assert!(DatastoreArgs::default().etcd_options().expect("valid").is_none());
        let args = DatastoreArgs { datastore_cafile: Some("/x".into()), ..Default::default() };
        let err = args.etcd_options().expect_err("tls without etcd");
        assert!(err.to_string().contains("need --datastore-endpoint"), "{err}");
    }

    #[test]
    fn endpoint_flags_parse() {
        let args = DatastoreArgs { datastore_endpoint: Some("etcd://a:2379,b:2379".into()), ..Default::default() };
        let options = args.etcd_options().expect("valid").expect("etcd");
        assert_eq!(options.endpoints, ["a:2379", "b:2379"]);
        assert_eq!(options.tls, None);
        let args = DatastoreArgs { datastore_endpoint: Some("postgres://x".into()), ..Default::default() };
        let err = args.etcd_options().expect_err("not etcd");
        assert!(err.to_string().contains("--datastore-endpoint \"postgres://x\": only etcd"), "{err}");
    }
}
