//! The store conformance suite against the sled backend.

mod common;
#[macro_use]
mod conformance;

use std::sync::Arc;

use conformance::Backend;
use skiff_store::{Revision, Store};

struct Sled(common::TempStore);

#[async_trait::async_trait]
impl Backend for Sled {
    fn store(&self) -> Arc<dyn Store> {
        self.0.store.clone()
    }

    /// The window given at open already forgets older events.
    async fn forget_until(&self, _revision: Revision) -> anyhow::Result<()> {
        Ok(())
    }
}

async fn open(window: usize) -> anyhow::Result<Sled> {
    Ok(Sled(common::open(window, true)))
}

cases!(open);
