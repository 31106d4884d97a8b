//! Deadlines on the wire: gRPC's `grpc-timeout` and micro's HTTP `Timeout` header.

use std::time::Duration;

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (`H M S m u n`).
pub(crate) fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    // ASCII only: splitting off the unit below must land on a char boundary.
    if value.len() < 2 || value.len() > 9 || !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Formats a `grpc-timeout` value, rounded down so the callee never sees a later
/// deadline than the caller's. From one second up it is whole milliseconds: a value
/// that repeats across calls lets HTTP/2 header compression reuse it.
pub(crate) fn format_grpc_timeout(d: Duration) -> String {
    const MAX: u128 = 99_999_999;
    const UNITS: [(&str, u128); 6] = [
        ("n", 1),
        ("u", 1_000),
        ("m", 1_000_000),
        ("S", 1_000_000_000),
        ("M", 60_000_000_000),
        ("H", 3_600_000_000_000),
    ];
    let nanos = d.as_nanos();
    let finest = match nanos {
        n if n >= 1_000_000_000 => 2,
        n if n >= 1_000_000 => 1,
        _ => 0,
    };
    for (unit, per) in &UNITS[finest..] {
        let value = nanos / per;
        if value <= MAX {
            return format!("{value}{unit}");
        }
    }
    format!("{MAX}H")
}

/// Parses micro's HTTP `Timeout` header: a duration as in DESIGN.md (`30` seconds,
/// or `500ms`, `2s`, `1m`).
pub(crate) fn parse_http_timeout(value: &str) -> Option<Duration> {
    let value = value.trim();
    // What micro's clients send (`29998ms`), read without the general parser: a
    // service reads it on every call.
    if let Some(millis) = value.strip_suffix("ms") {
        if (1..=15).contains(&millis.len()) && millis.bytes().all(|b| b.is_ascii_digit()) {
            return millis.parse().ok().map(Duration::from_millis);
        }
    }
    crate::options::parse_duration(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_timeouts() {
        for (text, want) in [
            ("29998ms", Some(Duration::from_millis(29_998))),
            (" 1ms ", Some(Duration::from_millis(1))),
            ("30", Some(Duration::from_secs(30))),
            ("2s", Some(Duration::from_secs(2))),
            ("1.5s", Some(Duration::from_millis(1500))),
            ("ms", None),
            ("-1ms", None),
            ("12x", None),
        ] {
            assert_eq!(parse_http_timeout(text), want, "{text:?}");
        }
    }

    #[test]
    fn grpc_timeout_round_trips() {
        for d in [
            Duration::from_nanos(1),
            Duration::from_millis(1500),
            Duration::from_micros(4_999_873),
            Duration::from_micros(1500),
            Duration::from_secs(5),
            Duration::from_secs(86_400 * 365),
        ] {
            let text = format_grpc_timeout(d);
            let back = parse_grpc_timeout(&text).unwrap();
            assert!(back <= d, "{d:?} -> {text} -> {back:?}: never later");
            assert!(
                d - back < d / 1000 + Duration::from_micros(1),
                "{d:?} -> {back:?}: close"
            );
            assert!(text.len() <= 9);
        }
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        for bad in [
            "",
            "m",
            "10",
            "123456789S",
            "-1S",
            "1x",
            "1.5S",
            "1\u{fffd}",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }
}

#[cfg(test)]
mod more_tests {
    use super::*;

    #[test]
    fn whole_milliseconds_from_a_second_up() {
        assert_eq!(
            format_grpc_timeout(Duration::from_micros(4_999_873)),
            "4999m"
        );
        assert_eq!(format_grpc_timeout(Duration::from_micros(1500)), "1500u");
        assert_eq!(format_grpc_timeout(Duration::from_nanos(999)), "999n");
    }
}
