//! The runtimes a bench runs its sides on.

use anyhow::Context as _;
use tokio::runtime::Runtime;

/// A multi-thread runtime of one worker thread named `name`. Each side of a
/// bench (servers, clients) gets its own, so on a 2-core machine each side gets
/// a core and every system under test gets the very same runtime setup.
pub fn runtime(name: &str) -> anyhow::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
        .context("building a runtime")
}
