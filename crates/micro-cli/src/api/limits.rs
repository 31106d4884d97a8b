//! Per-route rate limits: one token bucket per route (micro's own, as the
//! `ratelimit` wrapper uses), kept across routes-file reloads while the route and
//! its limit stay the same.

use std::collections::HashMap;
use std::sync::Mutex;

use micro::wrapper::{RateLimit as Limit, TokenBucket};
use micro::Error;
use tokio::time::Instant;

use super::resolve::ID;
use super::target::RateLimit;

/// The buckets of every rate-limited route, by route key.
#[derive(Debug, Default)]
pub struct RouteLimits {
    buckets: Mutex<HashMap<String, (Limit, TokenBucket)>>,
}

impl RouteLimits {
    /// Takes a token of `route`'s bucket, or the 429 that refuses the request.
    pub fn check(&self, route: &str, limit: &RateLimit) -> Result<(), Error> {
        let limit = Limit::new(limit.rate, Some(f64::from(limit.burst.max(1))))
            .map_err(|e| Error::internal_server_error(ID, format!("route {route}: {e}")))?;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let entry = buckets
            .entry(route.to_string())
            .or_insert_with(|| (limit, TokenBucket::full(&limit, now)));
        if entry.0 != limit {
            *entry = (limit, TokenBucket::full(&limit, now));
        }
        entry.1.take(&limit, now).map_err(|wait| {
            Error::too_many_requests(
                ID,
                format!(
                    "rate limit of {route} reached; retry in {} ms",
                    wait.as_millis().max(1)
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_429_then_refilled() {
        let limits = RouteLimits::default();
        let limit = RateLimit {
            rate: 2.0,
            burst: 2,
        };
        assert!(limits.check("/a", &limit).is_ok());
        assert!(limits.check("/a", &limit).is_ok());
        let e = limits.check("/a", &limit).unwrap_err();
        assert_eq!(e.code(), 429);
        assert!(
            limits.check("/b", &limit).is_ok(),
            "routes have their own buckets"
        );
        tokio::time::advance(std::time::Duration::from_millis(500)).await;
        assert!(limits.check("/a", &limit).is_ok());
    }
}
