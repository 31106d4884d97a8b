//! Parsing and formatting of option values: durations, byte sizes, addresses, lists.

use std::time::Duration;

const EXPECTED_DURATION: &str = "expected a duration like 30, 30s, 500ms or 1m";
const EXPECTED_SIZE: &str = "expected a size in bytes like 4194304, 512KiB, 4MiB or 1MB";
const EXPECTED_ADDRESS: &str = "expected host:port, like 0.0.0.0:8080, :8080 or localhost:8080";

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Parses a duration the way go-micro users write them: plain seconds (`30`, `1.5`)
/// or Go-style units (`500ms`, `30s`, `1m`, `1h`, `2m30s`, `100us`, `10ns`).
///
/// Units are `ns`, `us` (also `µs`), `ms`, `s`, `m` and `h`; a value may chain several
/// (`1h30m`) and each number may have a fraction (`1.5s`). Negative, empty and
/// malformed values are rejected with a message saying what is expected.
///
/// ```
/// use std::time::Duration;
/// use micro::options::parse_duration;
///
/// assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
/// assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
/// assert_eq!(parse_duration("2m30s"), Ok(Duration::from_secs(150)));
/// assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
/// assert!(parse_duration("-1s").is_err());
/// assert!(parse_duration("soon").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err(format!("{EXPECTED_DURATION}, got an empty value"));
    }
    if s.starts_with('-') {
        return Err(format!(
            "{EXPECTED_DURATION}; negative durations are not allowed"
        ));
    }
    let nanos = if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        // go-micro's plain number of seconds.
        let (int, frac) = split_number(s).ok_or_else(|| EXPECTED_DURATION.to_string())?;
        scale(int, frac, NANOS_PER_SEC).ok_or_else(too_large_duration)?
    } else {
        let mut total: u128 = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let number = &rest[..num_len];
            let (int, frac) = split_number(number).ok_or_else(|| EXPECTED_DURATION.to_string())?;
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let per_unit: u128 = match unit {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => NANOS_PER_SEC,
                "m" => 60 * NANOS_PER_SEC,
                "h" => 3600 * NANOS_PER_SEC,
                "" => {
                    return Err(format!(
                        "{EXPECTED_DURATION}; missing a unit after {number:?}"
                    ))
                }
                other => {
                    return Err(format!(
                        "{EXPECTED_DURATION}; unknown unit {other:?} (use ns, us, ms, s, m or h)"
                    ))
                }
            };
            let part = scale(int, frac, per_unit).ok_or_else(too_large_duration)?;
            total = total.checked_add(part).ok_or_else(too_large_duration)?;
        }
        total
    };
    let secs = u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| too_large_duration())?;
    // The remainder is below one billion, so it fits.
    let sub = (nanos % NANOS_PER_SEC) as u32;
    Ok(Duration::new(secs, sub))
}

fn too_large_duration() -> String {
    format!("{EXPECTED_DURATION}; this one is too large")
}

/// Writes a duration in the unit form [`parse_duration`] reads back: `0s`, `10ns`,
/// `100us`, `1.5ms`, `500ms`, `30s`, `1.5s`, `1m30s`, `1h`, `1h30m`. Zero components
/// are left out, so the text stays short.
///
/// ```
/// use std::time::Duration;
/// use micro::options::{format_duration, parse_duration};
///
/// assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
/// assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
/// assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
/// let d = Duration::from_millis(2_500);
/// assert_eq!(parse_duration(&format_duration(d)), Ok(d));
/// ```
pub fn format_duration(d: Duration) -> String {
    let total = d.as_nanos();
    if total == 0 {
        return "0s".to_string();
    }
    if total < 1_000 {
        return format!("{total}ns");
    }
    if total < 1_000_000 {
        return format!("{}us", decimal(total, 1_000));
    }
    if total < NANOS_PER_SEC {
        return format!("{}ms", decimal(total, 1_000_000));
    }
    let secs = d.as_secs();
    let (hours, minutes) = (secs / 3600, (secs % 3600) / 60);
    let rest = total % (60 * NANOS_PER_SEC);
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    if rest > 0 {
        out.push_str(&format!("{}s", decimal(rest, NANOS_PER_SEC)));
    }
    out
}

/// Parses a size in bytes: a plain number (`4194304`) or a number with a unit, binary
/// (`512KiB`, `4MiB`, `1GiB`, also `K`, `M`, `G` as in nginx) or decimal (`1KB`,
/// `1MB`, `1GB`). Units are case-insensitive and may follow a space (`4 MiB`).
///
/// ```
/// use micro::options::parse_size;
///
/// assert_eq!(parse_size("4MiB"), Ok(4 * 1024 * 1024));
/// assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
/// assert_eq!(parse_size("1MB"), Ok(1_000_000));
/// assert_eq!(parse_size("4194304"), Ok(4_194_304));
/// assert!(parse_size("lots").is_err());
/// ```
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err(format!("{EXPECTED_SIZE}, got an empty value"));
    }
    if s.starts_with('-') {
        return Err(format!("{EXPECTED_SIZE}; negative sizes are not allowed"));
    }
    let num_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (int, frac) = split_number(&s[..num_len]).ok_or_else(|| EXPECTED_SIZE.to_string())?;
    let unit = s[num_len..].trim();
    const K: u128 = 1024;
    let per_unit: u128 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "ki" | "kib" => K,
        "m" | "mi" | "mib" => K * K,
        "g" | "gi" | "gib" => K * K * K,
        "t" | "ti" | "tib" => K * K * K * K,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "{EXPECTED_SIZE}; unknown unit {unit:?} (use B, KiB, MiB, GiB, KB, MB or GB)"
            ))
        }
    };
    scale(int, frac, per_unit)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| format!("{EXPECTED_SIZE}; this one is too large"))
}

/// Writes a size the short way [`parse_size`] reads back: `4MiB`, `512KiB`, or plain
/// bytes when the size is not a whole number of KiB.
///
/// ```
/// assert_eq!(micro::options::format_size(4 * 1024 * 1024), "4MiB");
/// assert_eq!(micro::options::format_size(1000), "1000");
/// ```
pub fn format_size(bytes: usize) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    let n = bytes as u64;
    if n > 0 {
        for (name, size) in UNITS {
            if n.is_multiple_of(size) {
                return format!("{}{name}", n / size);
            }
        }
    }
    n.to_string()
}

/// Checks a listening address `host:port` and completes go-micro's short form: an
/// empty host (`:8080`, `:0`) means every interface, `0.0.0.0`. IPv6 hosts need
/// brackets (`[::1]:8080`).
///
/// ```
/// use micro::options::parse_address;
///
/// assert_eq!(parse_address(":8080").as_deref(), Ok("0.0.0.0:8080"));
/// assert_eq!(parse_address("127.0.0.1:9090").as_deref(), Ok("127.0.0.1:9090"));
/// assert_eq!(parse_address("[::]:0").as_deref(), Ok("[::]:0"));
/// assert!(parse_address("8080").is_err());
/// ```
pub fn parse_address(s: &str) -> Result<String, String> {
    address_with_default_host(s, "0.0.0.0")
}

/// Like [`parse_address`] for an address to dial: an empty host is this machine.
pub(crate) fn parse_dial_address(s: &str) -> Result<String, String> {
    address_with_default_host(s, "127.0.0.1")
}

fn address_with_default_host(s: &str, default_host: &str) -> Result<String, String> {
    let s = s.trim();
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(EXPECTED_ADDRESS.to_string());
    };
    if port.parse::<u16>().is_err() {
        return Err(format!(
            "{EXPECTED_ADDRESS}; the port must be a number from 0 to 65535"
        ));
    }
    if host.starts_with('[') != host.ends_with(']') {
        return Err(EXPECTED_ADDRESS.to_string());
    }
    if !host.starts_with('[') && host.contains(':') {
        return Err(format!(
            "{EXPECTED_ADDRESS}; write an IPv6 host in brackets, like [::1]:8080"
        ));
    }
    if host.contains(char::is_whitespace) {
        return Err(EXPECTED_ADDRESS.to_string());
    }
    if host.is_empty() {
        return Ok(format!("{default_host}:{port}"));
    }
    Ok(s.to_string())
}

/// Completes the short form `:port` without checking anything else (for values set
/// in code, which do not go through a parser).
pub(crate) fn complete_host(address: String, default_host: &str) -> String {
    if address.starts_with(':') {
        format!("{default_host}{address}")
    } else {
        address
    }
}

/// A secret option value (a password): compared and cloned like a string, but
/// `Debug` shows `<redacted>`, so logging the options never shows it.
///
/// ```
/// use micro::options::Secret;
///
/// let password = Secret::new("hunter2");
/// assert_eq!(password.expose(), "hunter2");
/// assert_eq!(format!("{password:?}"), "<redacted>");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, to hand to whatever needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Splits `a,b, c` into trimmed, non-empty items.
pub(crate) fn parse_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

/// Splits `12.5` into `("12", "5")`; `None` unless there is at least one digit and at
/// most one dot.
fn split_number(s: &str) -> Option<(&str, &str)> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
        return None;
    }
    Some((int, frac))
}

/// `int.frac * unit`, rounded down; `None` on overflow.
fn scale(int: &str, frac: &str, unit: u128) -> Option<u128> {
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut total = int.checked_mul(unit)?;
    // Digits beyond the 18th cannot change the result for units up to 2^40 or 1h.
    let frac = &frac[..frac.len().min(18)];
    if !frac.is_empty() {
        let value: u128 = frac.parse().ok()?;
        let denominator = 10u128.pow(frac.len() as u32);
        total = total.checked_add(value * unit / denominator)?;
    }
    Some(total)
}

/// `value / unit` as a decimal without trailing zeros: `1500, 1000` -> `1.5`.
fn decimal(value: u128, unit: u128) -> String {
    let (int, frac) = (value / unit, value % unit);
    if frac == 0 {
        return int.to_string();
    }
    let width = unit.ilog10() as usize;
    let frac = format!("{frac:0width$}");
    format!("{int}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn options_durations_parse() {
        let good = [
            ("30", Duration::from_secs(30)),
            ("1.5", ms(1500)),
            ("0", Duration::ZERO),
            (" 30s ", Duration::from_secs(30)),
            ("500ms", ms(500)),
            ("1m", Duration::from_secs(60)),
            ("1h", Duration::from_secs(3600)),
            ("2m30s", Duration::from_secs(150)),
            ("1h30m", Duration::from_secs(5400)),
            ("100us", Duration::from_micros(100)),
            ("100µs", Duration::from_micros(100)),
            ("10ns", Duration::from_nanos(10)),
            ("1.5s", ms(1500)),
            (".5s", ms(500)),
            ("0.001", ms(1)),
        ];
        for (text, want) in good {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn options_durations_reject() {
        for bad in [
            "", "  ", "-1", "-5s", "abc", "5x", "1m30", "s", "1..5s", "1.2.3", "+5s", "5 s",
        ] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.starts_with(EXPECTED_DURATION), "{bad}: {err}");
        }
        assert!(parse_duration("-1s")
            .expect_err("negative")
            .contains("negative"));
        assert!(parse_duration("5d")
            .expect_err("unit")
            .contains("unknown unit \"d\""));
        assert!(parse_duration("1m30")
            .expect_err("unit")
            .contains("missing a unit"));
        assert!(parse_duration("99999999999999999999999h")
            .expect_err("large")
            .contains("too large"));
    }

    #[test]
    fn options_durations_format_and_round_trip() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(10), "10ns"),
            (Duration::from_micros(100), "100us"),
            (Duration::from_micros(1500), "1.5ms"),
            (ms(500), "500ms"),
            (Duration::from_secs(5), "5s"),
            (ms(1500), "1.5s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(5400), "1h30m"),
            (Duration::new(3605, 1), "1h5.000000001s"),
        ];
        for (d, text) in cases {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d), "{text}");
        }
    }

    #[test]
    fn options_sizes() {
        let good = [
            ("4194304", 4_194_304),
            ("4MiB", 4 << 20),
            ("4 MiB", 4 << 20),
            ("4mib", 4 << 20),
            ("512KiB", 512 << 10),
            ("1MB", 1_000_000),
            ("1kb", 1_000),
            ("2K", 2048),
            ("1.5KiB", 1536),
            ("10B", 10),
            ("1GiB", 1 << 30),
        ];
        for (text, want) in good {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
        for bad in ["", "-1", "lots", "4XB", "1..5", "MiB"] {
            let err = parse_size(bad).expect_err(bad);
            assert!(err.starts_with(EXPECTED_SIZE), "{bad}: {err}");
        }
        assert_eq!(format_size(4 << 20), "4MiB");
        assert_eq!(format_size(512 << 10), "512KiB");
        assert_eq!(format_size(1000), "1000");
        assert_eq!(format_size(0), "0");
    }

    #[test]
    fn options_addresses() {
        assert_eq!(parse_address(":8080").as_deref(), Ok("0.0.0.0:8080"));
        assert_eq!(parse_address(":0").as_deref(), Ok("0.0.0.0:0"));
        assert_eq!(
            parse_address("localhost:9090").as_deref(),
            Ok("localhost:9090")
        );
        assert_eq!(parse_address("[::1]:1").as_deref(), Ok("[::1]:1"));
        assert_eq!(parse_dial_address(":8081").as_deref(), Ok("127.0.0.1:8081"));
        for bad in [
            "8080",
            "host:",
            "host:http",
            "host:70000",
            "::1:80",
            "[::1:80",
            "a b:1",
        ] {
            let err = parse_address(bad).expect_err(bad);
            assert!(err.starts_with(EXPECTED_ADDRESS), "{bad}: {err}");
        }
        assert_eq!(complete_host(":1".into(), "0.0.0.0"), "0.0.0.0:1");
        assert_eq!(parse_list(" a, ,b ,"), vec!["a", "b"]);
    }
}
