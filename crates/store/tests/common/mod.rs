//! Helpers shared by the store's integration tests.
// Each test binary uses a different subset.
#![allow(dead_code)]

use std::sync::Arc;

use skiff_store::{SledOptions, SledStore};

/// A store in a fresh temporary directory (removed when the guard drops).
pub struct TempStore {
    pub store: Arc<SledStore>,
    pub dir: tempfile::TempDir,
}

pub fn open(window: usize, flush: bool) -> TempStore {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = reopen(&dir, window, flush);
    TempStore { store, dir }
}

pub fn reopen(dir: &tempfile::TempDir, window: usize, flush: bool) -> Arc<SledStore> {
    let options = SledOptions { window, flush, ..SledOptions::new(dir.path().join("db")) };
    SledStore::open(options).expect("open store")
}
