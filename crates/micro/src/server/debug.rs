//! `Debug.Health` and `Debug.Stats`, served by every micro service (go-micro's
//! built-in debug handler). Internal: served, not listed in the registry.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use super::serve::Stats;
use crate::proto::debug::v1::debug_server::{Debug, DebugServer};
use crate::proto::debug::v1::{HealthRequest, HealthResponse, StatsRequest, StatsResponse};
use crate::server::{Handler, HandlerDesc};
use crate::{Error, Request};

struct DebugHandler {
    service: Arc<str>,
    version: Arc<str>,
    stats: Arc<Stats>,
}

impl Debug for DebugHandler {
    async fn health(&self, _request: Request<HealthRequest>) -> Result<HealthResponse, Error> {
        Ok(HealthResponse {
            status: "ok".to_string(),
        })
    }

    async fn stats(&self, _request: Request<StatsRequest>) -> Result<StatsResponse, Error> {
        let process = ProcessStats::read();
        Ok(StatsResponse {
            started: self
                .stats
                .started
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
            uptime: self.stats.started_at.elapsed().as_secs(),
            memory: process.rss_bytes,
            threads: process.threads,
            gc: 0,
            requests: self.stats.requests.load(Ordering::Relaxed),
            errors: self.stats.errors.load(Ordering::Relaxed),
            service: self.service.to_string(),
            version: self.version.to_string(),
        })
    }
}

/// The debug handler of a server.
pub(crate) fn handler(service: Arc<str>, version: Arc<str>, stats: Arc<Stats>) -> HandlerDesc {
    let mut desc = DebugServer::new(DebugHandler {
        service,
        version,
        stats,
    })
    .into_desc();
    desc.internal = true;
    desc
}

/// Resident memory and thread count of this process, from /proc where there is one.
#[derive(Debug, Default)]
struct ProcessStats {
    rss_bytes: u64,
    threads: u64,
}

impl ProcessStats {
    fn read() -> Self {
        let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
            return ProcessStats::default();
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        ProcessStats {
            rss_bytes: field("VmRSS:") * 1024,
            threads: field("Threads:"),
        }
    }
}
