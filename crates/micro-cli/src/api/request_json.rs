//! The JSON request a gateway call sends: the body, or for a bodiless request the
//! query string (`GET /greeter/hello?name=John` → `{"name":"John"}`), with the
//! route's `{param}`s filled in. Values from a query or a path are text; where the
//! endpoint's request schema (from its registry record) says a field is a number,
//! a boolean or a list, they are converted, so `?count=3` fills an integer field.

use std::collections::BTreeMap;

use bytes::Bytes;
use micro::Error;
use serde_json::{Map, Value};

use super::resolve::ID;

/// Builds the request JSON from a body (may be empty), a query string and path
/// params; `schema` is the request message's JSON Schema, if known. A JSON body
/// with no params to add is sent on as it is (shared, not copied).
pub fn build(
    body: &Bytes,
    query: Option<&str>,
    params: &BTreeMap<String, String>,
    schema: Option<&Value>,
) -> Result<Bytes, Error> {
    let empty_body = body.iter().all(u8::is_ascii_whitespace);
    if !empty_body && params.is_empty() {
        // The common case: a JSON body sent on unchanged, once it is known to parse.
        serde_json::from_slice::<serde::de::IgnoredAny>(body).map_err(malformed)?;
        return Ok(body.clone());
    }
    let mut request = if empty_body {
        from_query(query.unwrap_or(""), schema)
    } else {
        match serde_json::from_slice(body).map_err(malformed)? {
            Value::Object(map) => map,
            _ => {
                return Err(Error::bad_request(
                    ID,
                    "the body must be a JSON object on a route with path parameters",
                ))
            }
        }
    };
    for (name, text) in params {
        request.insert(name.clone(), typed(text, field_type(schema, name)));
    }
    Ok(Bytes::from(Value::Object(request).to_string()))
}

fn malformed(e: serde_json::Error) -> Error {
    Error::bad_request(
        ID,
        format!("malformed JSON body: {e}; send a JSON object such as {{\"name\":\"John\"}}"),
    )
}

/// The query as an object; a repeated name, or one the schema calls an array,
/// becomes a list.
fn from_query(query: &str, schema: Option<&Value>) -> Map<String, Value> {
    let mut map = Map::new();
    for (name, text) in form_urlencoded::parse(query.as_bytes()) {
        let kind = field_type(schema, &name);
        let value = match kind {
            Some("array") => typed(&text, item_type(schema, &name)),
            _ => typed(&text, kind),
        };
        match map.get_mut(name.as_ref()) {
            Some(Value::Array(items)) => items.push(value),
            Some(first) => {
                let first = first.take();
                map.insert(name.into_owned(), Value::Array(vec![first, value]));
            }
            None if kind == Some("array") => {
                map.insert(name.into_owned(), Value::Array(vec![value]));
            }
            None => {
                map.insert(name.into_owned(), value);
            }
        }
    }
    map
}

/// The JSON Schema `type` of property `name`.
fn field_type<'a>(schema: Option<&'a Value>, name: &str) -> Option<&'a str> {
    schema?.get("properties")?.get(name)?.get("type")?.as_str()
}

/// The item type of array property `name`.
fn item_type<'a>(schema: Option<&'a Value>, name: &str) -> Option<&'a str> {
    schema?
        .get("properties")?
        .get(name)?
        .get("items")?
        .get("type")?
        .as_str()
}

/// `text` as the JSON type `kind` if it parses as one; else a string.
fn typed(text: &str, kind: Option<&str>) -> Value {
    let parsed = match kind {
        Some("integer") => text.parse::<i64>().ok().map(Value::from),
        Some("number") => text.parse::<f64>().ok().map(Value::from),
        Some("boolean") => match text {
            "true" | "1" => Some(Value::Bool(true)),
            "false" | "0" => Some(Value::Bool(false)),
            _ => None,
        },
        _ => None,
    };
    parsed.unwrap_or_else(|| Value::String(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn built(
        body: &str,
        query: Option<&str>,
        params: &[(&str, &str)],
        schema: Option<&Value>,
    ) -> Value {
        let params = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        serde_json::from_slice(
            &build(
                &Bytes::copy_from_slice(body.as_bytes()),
                query,
                &params,
                schema,
            )
            .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn bodies_pass_through_and_queries_become_objects() {
        assert_eq!(
            built(r#"{"name":"John"}"#, Some("x=1"), &[], None),
            json!({"name": "John"})
        );
        assert_eq!(
            built("", Some("name=J%C3%B6rg&tag=a&tag=b"), &[], None),
            json!({"name": "Jörg", "tag": ["a", "b"]})
        );
        assert_eq!(built("", None, &[], None), json!({}));
        let e = build(&Bytes::from_static(b"{nope"), None, &BTreeMap::new(), None).unwrap_err();
        assert_eq!(e.code(), 400);
        assert!(e.detail().contains("malformed JSON"), "{}", e.detail());
    }

    #[test]
    fn the_schema_types_query_and_path_values() {
        let schema = json!({"type": "object", "properties": {
            "count": {"type": "integer"}, "ratio": {"type": "number"}, "on": {"type": "boolean"},
            "ids": {"type": "array", "items": {"type": "integer"}}, "name": {"type": "string"}}});
        assert_eq!(
            built(
                "",
                Some("count=3&ratio=0.5&on=true&ids=7&name=42"),
                &[],
                Some(&schema)
            ),
            json!({"count": 3, "ratio": 0.5, "on": true, "ids": [7], "name": "42"})
        );
        // Not a number after all: sent as text, and the service says what is wrong.
        assert_eq!(
            built("", Some("count=many"), &[], Some(&schema)),
            json!({"count": "many"})
        );
        assert_eq!(
            built(r#"{"name":"x"}"#, None, &[("count", "5")], Some(&schema)),
            json!({"name": "x", "count": 5})
        );
        let e = build(
            &Bytes::from_static(b"[1]"),
            None,
            &[("a".to_string(), "b".to_string())].into(),
            None,
        )
        .unwrap_err();
        assert_eq!(e.code(), 400);
    }
}
