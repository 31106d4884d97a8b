//! Worker threads for the gateway's connections, nginx's model: each worker is a
//! thread with a single-threaded runtime, and a connection lives on one worker
//! with everything it starts (the pooled connections of its calls to services).
//! A request is read, forwarded, answered and written on one core: no task hops
//! to another thread, so no futex wake-up and no work stealing per request,
//! which on a loaded machine cost as much as the gateway's own work.

use std::future::Future;
use std::io;
use std::thread;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// Running workers; connections are handed out round-robin.
pub(crate) struct Workers {
    workers: Vec<Worker>,
    next: usize,
}

struct Worker {
    handle: Handle,
    stop: oneshot::Sender<()>,
    stopped: oneshot::Receiver<()>,
}

impl Workers {
    /// Starts `count` workers (at least one), named `micro-api-<n>`.
    pub(crate) fn start(count: usize) -> io::Result<Self> {
        let workers = (0..count.max(1))
            .map(Worker::start)
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Workers { workers, next: 0 })
    }

    /// Runs `task` (a connection) on the next worker.
    pub(crate) fn spawn<F>(&mut self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let worker = &self.workers[self.next % self.workers.len()];
        self.next = self.next.wrapping_add(1);
        drop(worker.handle.spawn(task));
    }

    /// Stops every worker, dropping what still runs on it (idle pooled
    /// connections); call it once the connections have drained.
    pub(crate) async fn stop(self) {
        let mut stopped = Vec::with_capacity(self.workers.len());
        for worker in self.workers {
            let _ = worker.stop.send(());
            stopped.push(worker.stopped);
        }
        for done in stopped {
            let _ = done.await;
        }
    }
}

impl Worker {
    fn start(index: usize) -> io::Result<Self> {
        let runtime = Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (stop, stop_rx) = oneshot::channel();
        let (stopped_tx, stopped) = oneshot::channel();
        thread::Builder::new()
            .name(format!("micro-api-{index}"))
            .spawn(move || {
                let _ = runtime.block_on(stop_rx);
                // Dropping the runtime outside `block_on` cancels its tasks.
                drop(runtime);
                let _ = stopped_tx.send(());
            })?;
        Ok(Worker {
            handle,
            stop,
            stopped,
        })
    }
}

/// Workers when none are asked for: one per core, as tokio's own default.
pub(crate) fn default_count() -> usize {
    thread::available_parallelism().map_or(1, usize::from)
}
