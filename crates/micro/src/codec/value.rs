//! `google.protobuf.Value` ↔ JSON. The API of `micro server` carries free-form JSON
//! (call requests and responses, config values, schemas) as `google.protobuf.Value`,
//! whose numbers are doubles: read back naively, `3` becomes `3.0`, which an
//! integer field refuses. These conversions turn whole numbers back into integers.

use pbjson_types::value::Kind;
use serde_json::Value as Json;

/// 2^53: beyond it a double no longer holds every integer exactly.
const EXACT: f64 = 9_007_199_254_740_992.0;

/// A JSON value as a `google.protobuf.Value`.
pub fn json_to_value(json: Json) -> pbjson_types::Value {
    let kind = match json {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Json::String(s) => Kind::StringValue(s),
        Json::Array(items) => Kind::ListValue(pbjson_types::ListValue {
            values: items.into_iter().map(json_to_value).collect(),
        }),
        Json::Object(fields) => Kind::StructValue(pbjson_types::Struct {
            fields: fields
                .into_iter()
                .map(|(k, v)| (k, json_to_value(v)))
                .collect(),
        }),
    };
    pbjson_types::Value { kind: Some(kind) }
}

/// A `google.protobuf.Value` as JSON; whole numbers (up to 2^53) become integers.
///
/// ```
/// use micro::codec::{json_to_value, value_to_json};
///
/// let value = json_to_value(serde_json::json!({"count": 3, "ratio": 0.5}));
/// assert_eq!(value_to_json(value).to_string(), r#"{"count":3,"ratio":0.5}"#);
/// ```
pub fn value_to_json(value: pbjson_types::Value) -> Json {
    match value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(b),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() <= EXACT {
                Json::from(n as i64)
            } else {
                serde_json::Number::from_f64(n)
                    .map(Json::Number)
                    .unwrap_or(Json::Null)
            }
        }
        Some(Kind::StringValue(s)) => Json::String(s),
        Some(Kind::ListValue(list)) => {
            Json::Array(list.values.into_iter().map(value_to_json).collect())
        }
        Some(Kind::StructValue(s)) => Json::Object(
            s.fields
                .into_iter()
                .map(|(k, v)| (k, value_to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_come_back_as_integers_and_the_rest_unchanged() {
        let json = serde_json::json!({
            "n": 3, "neg": -7, "big": 9_007_199_254_740_992_i64, "f": 2.5,
            "list": [1, 1.5, "x", null, true], "nested": {"k": 0}
        });
        assert_eq!(value_to_json(json_to_value(json.clone())), json);
        // Beyond 2^53 a double is not exact: it stays a double.
        let huge = value_to_json(json_to_value(serde_json::json!(1e300)));
        assert_eq!(huge, serde_json::json!(1e300));
        assert_eq!(
            value_to_json(pbjson_types::Value { kind: None }),
            Json::Null
        );
    }
}
