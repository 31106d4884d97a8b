//! Weighted version routing (a canary): `split: {greeter@v2: 10%, greeter@v1: 90%}`
//! sends about one request in ten to `v2`.
//!
//! The caller supplies a uniformly random number per request (`pick`); `pick % 100`
//! falls into one share, in file order, so the choice is deterministic in tests.

/// The versions of one service, each with its share (shares sum to 100).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Split {
    /// The service every share names.
    pub(crate) service: String,
    /// `(version, cumulative share)`: a pick below the bound takes the version.
    shares: Vec<(Option<String>, u32)>,
}

impl Split {
    /// `shares` are `(version, percent)`; the caller checked that they sum to 100.
    pub(crate) fn new(service: String, shares: Vec<(Option<String>, u32)>) -> Split {
        let mut upto = 0;
        let shares = shares
            .into_iter()
            .map(|(version, share)| {
                upto += share;
                (version, upto)
            })
            .collect();
        Split { service, shares }
    }

    /// The version `pick` chooses (`None`: any version of the service).
    pub(crate) fn choose(&self, pick: u32) -> Option<&str> {
        let slot = pick % 100;
        self.shares
            .iter()
            .find(|(_, upto)| slot < *upto)
            .or(self.shares.last())
            .and_then(|(version, _)| version.as_deref())
    }
}

/// `greeter@v2` -> (`greeter`, `Some("v2")`); `greeter` -> (`greeter`, `None`).
pub(crate) fn service_and_version(text: &str) -> Result<(&str, Option<&str>), String> {
    let text = text.trim();
    let (service, version) = match text.split_once('@') {
        Some((s, v)) => (s, Some(v)),
        None => (text, None),
    };
    if service.is_empty() {
        return Err(format!("{text:?} names no service"));
    }
    if let Some(version) = version {
        if version.is_empty()
            || !version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'+'))
        {
            return Err(format!(
                "{text:?}: the version after @ must be a name like v2 or 1.4.0"
            ));
        }
    }
    Ok((service, version))
}

/// A share: `10%`, `10` or `10.0%` -> 10; 1 to 100.
pub(crate) fn parse_share(text: &str) -> Result<u32, String> {
    let number = text.trim().trim_end_matches('%').trim();
    let value = number
        .parse::<u32>()
        .ok()
        .or_else(|| {
            number
                .parse::<f64>()
                .ok()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= 100.0)
                .map(|f| f as u32)
        })
        .filter(|n| (1..=100).contains(n));
    value.ok_or_else(|| format!("share {text:?} must be a whole percentage from 1% to 100%"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_fall_into_shares_in_order() {
        let split = Split::new(
            "greeter".into(),
            vec![(Some("v2".into()), 10), (Some("v1".into()), 90)],
        );
        assert_eq!(split.choose(0), Some("v2"));
        assert_eq!(split.choose(9), Some("v2"));
        assert_eq!(split.choose(10), Some("v1"));
        assert_eq!(split.choose(99), Some("v1"));
        assert_eq!(split.choose(100), Some("v2"));
        assert_eq!(split.choose(u32::MAX), Some("v1")); // 4294967295 % 100 = 95
        let counts = (0..10_000u32).fold([0u32; 2], |mut acc, pick| {
            match split.choose(pick) {
                Some("v2") => acc[0] += 1,
                Some("v1") => acc[1] += 1,
                other => panic!("unexpected {other:?}"),
            }
            acc
        });
        assert_eq!(counts, [1_000, 9_000]);
    }

    #[test]
    fn names_and_shares() {
        assert_eq!(
            service_and_version("greeter@v2"),
            Ok(("greeter", Some("v2")))
        );
        assert_eq!(service_and_version("greeter"), Ok(("greeter", None)));
        assert!(service_and_version("greeter@").is_err());
        assert!(service_and_version("@v1").is_err());
        assert!(service_and_version("g@v 1").is_err());
        assert_eq!(parse_share("10%"), Ok(10));
        assert_eq!(parse_share("100"), Ok(100));
        assert_eq!(parse_share("25.0%"), Ok(25));
        assert!(parse_share("0%").is_err());
        assert!(parse_share("101%").is_err());
        assert!(parse_share("12.5%").is_err());
        assert!(parse_share("ten").is_err());
    }
}
