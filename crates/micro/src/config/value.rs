//! The config tree: a JSON value addressed by dot-separated paths, deep merge, and
//! typed reads (durations included).

use std::any::{Any, TypeId};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// The segments of a dot-separated path; the empty path (`""`) is the root.
pub(crate) fn segments(path: &str) -> Vec<&str> {
    path.split('.').filter(|s| !s.is_empty()).collect()
}

/// The value at `path` in `tree`, if any (`null` counts as unset).
pub(crate) fn get<'a>(tree: &'a Value, path: &str) -> Option<&'a Value> {
    let mut node = tree;
    for segment in segments(path) {
        node = node.as_object()?.get(segment)?;
    }
    (!node.is_null()).then_some(node)
}

/// Sets `path` in `tree` to `value`, creating (or replacing non-object) parents.
pub(crate) fn set(tree: &mut Value, path: &str, value: Value) {
    let mut node = tree;
    for segment in segments(path) {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        let Value::Object(map) = node else {
            return;
        };
        node = map.entry(segment.to_string()).or_insert(Value::Null);
    }
    *node = value;
}

/// Removes `path` from `tree`; true if something was removed. Removing the root
/// empties the tree.
pub(crate) fn delete(tree: &mut Value, path: &str) -> bool {
    let segments = segments(path);
    let Some((last, parents)) = segments.split_last() else {
        let had = !matches!(tree, Value::Object(m) if m.is_empty());
        *tree = Value::Object(Map::new());
        return had;
    };
    let mut node = tree;
    for segment in parents {
        match node.as_object_mut().and_then(|m| m.get_mut(*segment)) {
            Some(next) => node = next,
            None => return false,
        }
    }
    node.as_object_mut()
        .is_some_and(|m| m.remove(*last).is_some())
}

/// Deep-merges `upper` over `lower`: objects merge key by key, anything else in
/// `upper` replaces what `lower` has; `null` in `upper` leaves `lower` as it is.
pub(crate) fn merge(lower: &mut Value, upper: &Value) {
    match (lower, upper) {
        (_, Value::Null) => {}
        (Value::Object(low), Value::Object(up)) => {
            for (key, value) in up {
                match low.get_mut(key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        if !value.is_null() {
                            low.insert(key.clone(), value.clone());
                        }
                    }
                }
            }
        }
        (low, up) => *low = up.clone(),
    }
}

/// Parses a text value the way env vars and flags give them: JSON if it reads as a
/// number, boolean, object or array; anything else is the string itself.
pub(crate) fn parse_text(text: &str) -> Value {
    let trimmed = text.trim();
    match serde_json::from_str::<Value>(trimmed) {
        Ok(v @ (Value::Number(_) | Value::Bool(_) | Value::Object(_) | Value::Array(_))) => v,
        _ => Value::String(text.to_string()),
    }
}

/// Reads `value` as a `T`; on failure, what was expected.
pub(crate) fn decode<T: DeserializeOwned + 'static>(value: &Value) -> Result<T, String> {
    if TypeId::of::<T>() == TypeId::of::<Duration>() {
        let duration = duration_of(value)?;
        let any: Box<dyn Any> = Box::new(duration);
        return any
            .downcast::<T>()
            .map(|b| *b)
            .map_err(|_| "expected a duration".to_string());
    }
    serde_json::from_value::<T>(value.clone()).map_err(|e| expected_of::<T>(&e))
}

/// What a `T` looks like, for an error message, from serde's error (whose text may
/// quote the value, so it is not used as is).
fn expected_of<T>(e: &serde_json::Error) -> String {
    let text = e.to_string();
    // serde's message is "invalid type: string \"x\", expected u32": keep what follows
    // "expected", which never holds the value.
    // Others ("missing field `port`") name no value and are kept whole.
    match text.rfind("expected ") {
        Some(i) => text[i..].to_string(),
        None if text.starts_with("missing field") || text.starts_with("unknown field") => {
            format!("expected {} ({text})", short_type_name::<T>())
        }
        None => format!("expected {}", short_type_name::<T>()),
    }
}

fn short_type_name<T>() -> String {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full).to_string()
}

/// A duration from a number (seconds) or a string like `30s`, `500ms`, `1m`.
pub(crate) fn duration_of(value: &Value) -> Result<Duration, String> {
    let expected = crate::options::parse_duration("x").err();
    let expected =
        expected.unwrap_or_else(|| "expected a duration like 30, 30s, 500ms or 1m".into());
    match value {
        Value::Number(n) => n
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .ok_or(expected),
        Value::String(s) => crate::options::parse_duration(s).map_err(|_| expected),
        _ => Err(expected),
    }
}

/// A serde helper for durations in structs read with
/// [`Config::get`](super::Config::get): accepts `30`, `1.5`, `"30s"`, `"500ms"`,
/// `"1m"`.
///
/// ```
/// use std::time::Duration;
///
/// #[derive(serde::Deserialize)]
/// struct Db {
///     #[serde(with = "micro::config::duration")]
///     timeout: Duration,
/// }
/// let db: Db = serde_json::from_value(serde_json::json!({"timeout": "500ms"})).unwrap();
/// assert_eq!(db.timeout, Duration::from_millis(500));
/// ```
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Reads a duration from seconds or text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        super::duration_of(&value).map_err(serde::de::Error::custom)
    }

    /// Writes a duration as text (`1m30s`).
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::options::format_duration(*d))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_get_set_delete() {
        let mut tree = json!({});
        set(&mut tree, "a.b.c", json!(1));
        set(&mut tree, "a.x", json!("y"));
        assert_eq!(get(&tree, "a.b.c"), Some(&json!(1)));
        assert_eq!(get(&tree, "a.b"), Some(&json!({"c": 1})));
        assert_eq!(get(&tree, ""), Some(&tree));
        assert_eq!(get(&tree, "a.b.c.d"), None);
        assert_eq!(get(&tree, "nope"), None);
        // A scalar parent is replaced by a table.
        set(&mut tree, "a.x.z", json!(true));
        assert_eq!(get(&tree, "a.x"), Some(&json!({"z": true})));
        assert!(delete(&mut tree, "a.b"));
        assert!(!delete(&mut tree, "a.b"));
        assert_eq!(tree, json!({"a": {"x": {"z": true}}}));
        assert!(delete(&mut tree, ""));
        assert_eq!(tree, json!({}));
    }

    #[test]
    fn merge_is_deep_and_later_wins() {
        let mut low = json!({"db": {"host": "a", "port": 1}, "list": [1, 2], "keep": 1});
        merge(
            &mut low,
            &json!({"db": {"port": 2, "user": "u"}, "list": [3], "keep": null, "new": {}}),
        );
        assert_eq!(
            low,
            json!({"db": {"host": "a", "port": 2, "user": "u"}, "list": [3], "keep": 1, "new": {}})
        );
        let mut scalar = json!("x");
        merge(&mut scalar, &json!({"a": 1}));
        assert_eq!(scalar, json!({"a": 1}));
    }

    #[test]
    fn text_values_parse_as_json_scalars() {
        assert_eq!(parse_text("42"), json!(42));
        assert_eq!(parse_text("1.5"), json!(1.5));
        assert_eq!(parse_text("true"), json!(true));
        assert_eq!(parse_text("Hi"), json!("Hi"));
        assert_eq!(parse_text("007"), json!("007"));
        assert_eq!(parse_text("null"), json!("null"));
        assert_eq!(parse_text(r#"{"a":1}"#), json!({"a": 1}));
        assert_eq!(parse_text("[1,2]"), json!([1, 2]));
    }

    #[test]
    fn durations_in_every_form() {
        for (value, want) in [
            (json!(30), Duration::from_secs(30)),
            (json!(1.5), Duration::from_millis(1500)),
            (json!("30s"), Duration::from_secs(30)),
            (json!("500ms"), Duration::from_millis(500)),
            (json!("1m"), Duration::from_secs(60)),
            (json!("30"), Duration::from_secs(30)),
        ] {
            assert_eq!(decode::<Duration>(&value).unwrap(), want, "{value}");
        }
        for bad in [json!("soon"), json!(-1), json!(true), json!({"a": 1})] {
            let err = decode::<Duration>(&bad).unwrap_err();
            assert!(err.contains("expected a duration"), "{err}");
        }
    }

    #[test]
    fn type_errors_never_quote_the_value() {
        let err = decode::<u32>(&json!("hunter2")).unwrap_err();
        assert_eq!(err, "expected u32");
        assert!(!err.contains("hunter2"));
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Db {
            port: u16,
        }
        let err = decode::<Db>(&json!({"port": "secret-port"})).unwrap_err();
        assert!(!err.contains("secret-port"), "{err}");
        let err = decode::<Db>(&json!({})).unwrap_err();
        assert_eq!(err, "expected Db (missing field `port`)");
    }
}
