//! The store conformance suite against the etcd backend: each case starts its
//! own etcd (Debian's `etcd-server`) on loopback ports with its own data
//! directory, killed by PID when the case ends.

#[macro_use]
mod conformance;

use std::sync::Arc;
use std::time::Duration;

use conformance::Backend;
use skiff_store::testing::EtcdServer;
use skiff_store::{EtcdOptions, EtcdStore, Revision, Store};

struct Etcd {
    store: Arc<EtcdStore>,
    // Dropped after the store: kills etcd.
    _server: EtcdServer,
}

#[async_trait::async_trait]
impl Backend for Etcd {
    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    async fn forget_until(&self, revision: Revision) -> anyhow::Result<()> {
        Ok(self.store.compact(revision).await?)
    }
}

/// A fresh etcd; `window` has no meaning for etcd, whose history is kept
/// until compaction (off here: each case compacts when it means to).
async fn open(_window: usize) -> anyhow::Result<Etcd> {
    let server = EtcdServer::start().map_err(anyhow::Error::msg)?;
    let options = EtcdOptions { compact_interval: Duration::ZERO, ..EtcdOptions::new(vec![server.endpoint()]) };
    let store = EtcdStore::connect(options).await?;
    Ok(Etcd { store, _server: server })
}

cases!(open);
