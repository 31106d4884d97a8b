//! The gateway's Prometheus metrics at `GET /metrics`: requests by route, handler
//! and status code, and their latency.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Latency bucket bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Request counts and latencies, by label set.
#[derive(Debug, Default)]
pub struct Metrics {
    /// By route, then by handler and status code.
    series: Mutex<BTreeMap<String, ByHandlerAndCode>>,
}

/// The series of one route, by handler and status code.
type ByHandlerAndCode = BTreeMap<(&'static str, u16), Series>;

#[derive(Debug, Default, Clone)]
struct Series {
    /// One count per bucket (not cumulative), then `+Inf`.
    buckets: [u64; BUCKETS.len() + 1],
    count: u64,
    sum: f64,
}

impl Metrics {
    /// Records one answered request.
    pub fn record(&self, route: &str, handler: &'static str, status: u16, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        // A route's name is copied at its first request, not at every one.
        if !series.contains_key(route) {
            series.insert(route.to_string(), BTreeMap::new());
        }
        let Some(by_route) = series.get_mut(route) else {
            return;
        };
        let s = by_route.entry((handler, status)).or_default();
        s.buckets[bucket] += 1;
        s.count += 1;
        s.sum += secs;
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let series: Vec<((String, &'static str, u16), Series)> = self
            .series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .flat_map(|(route, by_code)| {
                by_code
                    .iter()
                    .map(move |((handler, code), s)| ((route.clone(), *handler, *code), s.clone()))
            })
            .collect();
        let mut out = String::new();
        out.push_str("# HELP micro_api_requests_total Requests answered by the API gateway.\n");
        out.push_str("# TYPE micro_api_requests_total counter\n");
        for ((route, handler, code), s) in &series {
            let _ = writeln!(
                out,
                "micro_api_requests_total{{route=\"{}\",handler=\"{handler}\",code=\"{code}\"}} {}",
                escape(route),
                s.count
            );
        }
        out.push_str("# HELP micro_api_request_duration_seconds Time to answer a request (to the first byte of a stream).\n");
        out.push_str("# TYPE micro_api_request_duration_seconds histogram\n");
        for ((route, handler, code), s) in &series {
            let labels = format!(
                "route=\"{}\",handler=\"{handler}\",code=\"{code}\"",
                escape(route)
            );
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += s.buckets[i];
                let _ = writeln!(out, "micro_api_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
            }
            let _ = writeln!(
                out,
                "micro_api_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "micro_api_request_duration_seconds_sum{{{labels}}} {}",
                s.sum
            );
            let _ = writeln!(
                out,
                "micro_api_request_duration_seconds_count{{{labels}}} {}",
                s.count
            );
        }
        out
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_buckets_add_up() {
        let m = Metrics::default();
        m.record("/greeter/hello", "rpc", 200, Duration::from_micros(300));
        m.record("/greeter/hello", "rpc", 200, Duration::from_millis(30));
        m.record("/x\"y", "rpc", 404, Duration::from_secs(9));
        let text = m.render();
        assert!(
            text.contains(
                "micro_api_requests_total{route=\"/greeter/hello\",handler=\"rpc\",code=\"200\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("le=\"0.0005\"} 1"), "{text}");
        assert!(
            text.contains("route=\"/greeter/hello\",handler=\"rpc\",code=\"200\",le=\"0.05\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("route=\"/x\\\"y\",handler=\"rpc\",code=\"404\",le=\"5\"} 0"),
            "{text}"
        );
        assert!(text.contains("code=\"404\",le=\"+Inf\"} 1"), "{text}");
    }
}
