//! `retry`: how the client retries failed attempts, within a retry budget.
//!
//! Always on: it is the client's retry policy, and its settings reconfigure it.

use std::time::Duration;

use serde::Deserialize;

use super::builtin::{settings_of, Builtin, WrapperContext};
use super::settings::{de, Key, Settings};
use super::Wrappers;
use crate::client::{RetryBudget, RetryPolicy};
use crate::Error;

const KEYS: &[Key] = &[
    Key {
        name: "retries",
        default: "",
        about: "retries per call (default: --client_retries, 1)",
    },
    Key {
        name: "backoff",
        default: "10ms",
        about: "wait before the first retry, at most; each further retry waits up to 4x longer",
    },
    Key {
        name: "backoff_max",
        default: "1s",
        about: "longest wait before a retry",
    },
    Key {
        name: "budget",
        default: "true",
        about: "limit retries to a budget shared by all calls of the client",
    },
    Key {
        name: "budget_ratio",
        default: "0.2",
        about: "retries the budget allows per call made (0.2: 20% more load at most)",
    },
    Key {
        name: "budget_min_per_sec",
        default: "10",
        about: "retries the budget allows every second whatever the traffic",
    },
];

#[derive(Deserialize)]
struct RetrySettings {
    #[serde(default, deserialize_with = "opt_number")]
    retries: Option<u32>,
    #[serde(deserialize_with = "de::duration")]
    backoff: Duration,
    #[serde(deserialize_with = "de::duration")]
    backoff_max: Duration,
    budget: bool,
    #[serde(deserialize_with = "de::number")]
    budget_ratio: f64,
    #[serde(deserialize_with = "de::number")]
    budget_min_per_sec: u32,
}

fn opt_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    de::number(d).map(Some)
}

pub(super) const BUILTIN: Builtin = Builtin {
    name: "retry",
    about: "retry failed attempts on another node, with back-off and a retry budget (always on)",
    keys: KEYS,
    always_on: true,
    build,
};

fn build(settings: &Settings, ctx: &WrapperContext) -> Result<Wrappers, Error> {
    let s: RetrySettings = settings_of(settings, "retry", KEYS)?;
    let mut policy = RetryPolicy::new(s.retries.unwrap_or(ctx.client_retries))
        .backoff(s.backoff, s.backoff_max.max(s.backoff));
    policy = if s.budget {
        policy.budget(RetryBudget::new(s.budget_ratio, s.budget_min_per_sec))
    } else {
        policy.unbudgeted()
    };
    Ok(Wrappers::new().retry(policy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_retries_are_the_default() {
        let mut ctx = WrapperContext::new("s");
        ctx.client_retries = 4;
        let w = build(&Settings::default(), &ctx).unwrap();
        assert_eq!(w.retry.unwrap().get_retries(), 4);
        let s = Settings::from_flags(["retry.retries=2", "retry.budget=false"]).unwrap();
        let policy = build(&s, &ctx).unwrap().retry.unwrap();
        assert_eq!(policy.get_retries(), 2);
        assert!(policy.budget.is_none());
    }
}
