//! JSON Schemas (draft 2020-12) of the proto3 JSON form of messages.
//!
//! Each schema is self-contained: the message itself at the root, every message it
//! refers to (transitively, recursion included) under `$defs`, keyed by the full
//! proto name (`greeter.HelloRequest`). Properties are keyed by the JSON name protoc
//! reports (`lowerCamelCase`), in field order; proto comments become `description`s.

use std::collections::{HashMap, HashSet, VecDeque};

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto,
};

use crate::json::Json;

/// The JSON Schema dialect of every generated schema.
pub(crate) const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

// Field numbers in descriptor.proto, for source-code-info paths.
const FILE_MESSAGE_TYPE: i32 = 4;
const MESSAGE_FIELD: i32 = 2;
const MESSAGE_NESTED_TYPE: i32 = 3;

#[derive(Debug, Clone)]
struct MessageInfo {
    descriptor: DescriptorProto,
    /// The name inside its package (`Outer.Inner`).
    local_name: String,
    description: Option<String>,
    /// One per field of `descriptor.field`, same order.
    field_descriptions: Vec<Option<String>>,
}

#[derive(Debug, Clone)]
struct EnumInfo {
    local_name: String,
    values: Vec<String>,
}

/// Every message and enum of a set of proto files, ready to describe as JSON Schema.
#[derive(Debug, Clone, Default)]
pub(crate) struct Schemas {
    /// Keyed by full name without the leading dot (`greeter.HelloRequest`).
    messages: HashMap<String, MessageInfo>,
    enums: HashMap<String, EnumInfo>,
}

impl Schemas {
    /// Indexes the messages and enums of `files`.
    pub(crate) fn new<'a>(files: impl IntoIterator<Item = &'a FileDescriptorProto>) -> Self {
        let mut schemas = Schemas::default();
        for file in files {
            let comments = Comments::of(file);
            let package = file.package();
            for (i, message) in file.message_type.iter().enumerate() {
                schemas.add_message(
                    package,
                    "",
                    message,
                    vec![FILE_MESSAGE_TYPE, i as i32],
                    &comments,
                );
            }
            for enumeration in &file.enum_type {
                schemas.add_enum(package, "", enumeration);
            }
        }
        schemas
    }

    fn add_message(
        &mut self,
        package: &str,
        parent: &str,
        message: &DescriptorProto,
        path: Vec<i32>,
        comments: &Comments,
    ) {
        let local_name = join(parent, message.name());
        let field_descriptions = (0..message.field.len())
            .map(|k| comments.get(&path, &[MESSAGE_FIELD, k as i32]))
            .collect();
        for (j, nested) in message.nested_type.iter().enumerate() {
            let mut nested_path = path.clone();
            nested_path.extend([MESSAGE_NESTED_TYPE, j as i32]);
            self.add_message(package, &local_name, nested, nested_path, comments);
        }
        for enumeration in &message.enum_type {
            self.add_enum(package, &local_name, enumeration);
        }
        self.messages.insert(
            join(package, &local_name),
            MessageInfo {
                descriptor: message.clone(),
                description: comments.get(&path, &[]),
                field_descriptions,
                local_name,
            },
        );
    }

    fn add_enum(&mut self, package: &str, parent: &str, enumeration: &EnumDescriptorProto) {
        let local_name = join(parent, enumeration.name());
        let values = enumeration
            .value
            .iter()
            .map(|v| v.name().to_string())
            .collect();
        self.enums
            .insert(join(package, &local_name), EnumInfo { local_name, values });
    }

    /// The name of a message inside its package (`HelloRequest`, `Outer.Inner`), for
    /// registry records. `type_name` may start with a dot.
    pub(crate) fn type_name(&self, type_name: &str) -> String {
        let name = type_name.trim_start_matches('.');
        match self.messages.get(name) {
            Some(info) => info.local_name.clone(),
            None => name.rsplit('.').next().unwrap_or(name).to_string(),
        }
    }

    /// The JSON Schema of a message's proto3 JSON form, as compact JSON text.
    pub(crate) fn schema_text(&self, type_name: &str) -> String {
        self.schema(type_name).to_json_string()
    }

    /// The JSON Schema of a message's proto3 JSON form.
    pub(crate) fn schema(&self, type_name: &str) -> Json {
        let name = type_name.trim_start_matches('.');
        let mut root = Json::obj([
            ("$schema", Json::str(DIALECT)),
            ("title", Json::str(self.type_name(name))),
        ]);
        if let Some(known) = well_known(name) {
            // The well-known types' own comments speak of protobuf internals: leave them out.
            merge(&mut root, known);
            return root;
        }
        let Some(info) = self.messages.get(name) else {
            // Not in the descriptor set (cannot happen for protoc output): accept anything.
            return root;
        };
        let mut pending = VecDeque::new();
        merge(&mut root, self.object(info, &mut pending));

        let mut defs = Vec::new();
        let mut seen = HashSet::new();
        while let Some(def) = pending.pop_front() {
            if !seen.insert(def.clone()) {
                continue;
            }
            if let Some(info) = self.messages.get(&def) {
                let mut schema = Json::obj([("title", Json::str(info.local_name.clone()))]);
                merge(&mut schema, self.object(info, &mut pending));
                defs.push((def, schema));
            }
        }
        if !defs.is_empty() {
            root.set("$defs", Json::Obj(defs));
        }
        root
    }

    /// The object schema of one message; messages it refers to go to `pending`.
    fn object(&self, info: &MessageInfo, pending: &mut VecDeque<String>) -> Json {
        let message = &info.descriptor;
        let mut schema = Json::obj([("type", Json::str("object"))]);
        set_description(&mut schema, info.description.clone());

        let mut properties = Vec::new();
        let mut required = Vec::new();
        for (k, field) in message.field.iter().enumerate() {
            let json_name = json_name(field);
            let mut property = self.field(field, pending);
            let mut description = info.field_descriptions.get(k).cloned().flatten();
            if let Some(note) = oneof_note(message, field) {
                description = Some(match description {
                    Some(d) => format!("{d}\n\n{note}"),
                    None => note,
                });
            }
            set_description(&mut property, description);
            if field.options.as_ref().is_some_and(|o| o.deprecated()) {
                property.set("deprecated", Json::Bool(true));
            }
            if field.label() == Label::Required {
                required.push(json_name.clone());
            }
            properties.push((json_name, property));
        }
        schema.set("properties", Json::Obj(properties));
        if !required.is_empty() {
            schema.set("required", Json::strs(required));
        }
        schema.set("additionalProperties", Json::Bool(false));
        schema
    }

    /// The schema of a field's value (arrays and maps included).
    fn field(&self, field: &FieldDescriptorProto, pending: &mut VecDeque<String>) -> Json {
        if field.label() == Label::Repeated {
            if let Some(entry) = self.map_entry(field) {
                let key = entry.field.iter().find(|f| f.number() == 1);
                let value = entry.field.iter().find(|f| f.number() == 2);
                let mut schema = Json::obj([("type", Json::str("object"))]);
                if let Some(names) = key.and_then(map_key_names) {
                    schema.set("propertyNames", names);
                }
                let values = value.map_or(Json::obj::<&str>([]), |v| self.single(v, pending));
                schema.set("additionalProperties", values);
                return schema;
            }
            return Json::obj([
                ("type", Json::str("array")),
                ("items", self.single(field, pending)),
            ]);
        }
        self.single(field, pending)
    }

    fn map_entry(&self, field: &FieldDescriptorProto) -> Option<&DescriptorProto> {
        if field.r#type() != Type::Message {
            return None;
        }
        let info = self
            .messages
            .get(field.type_name().trim_start_matches('.'))?;
        let is_entry = info
            .descriptor
            .options
            .as_ref()
            .is_some_and(|o| o.map_entry());
        is_entry.then_some(&info.descriptor)
    }

    /// The schema of one value of a field's type.
    fn single(&self, field: &FieldDescriptorProto, pending: &mut VecDeque<String>) -> Json {
        match field.r#type() {
            Type::Double | Type::Float => Json::obj([("type", Json::strs(["number", "string"]))]),
            Type::Int64 | Type::Sint64 | Type::Sfixed64 => int64(),
            Type::Uint64 | Type::Fixed64 => uint64(),
            Type::Int32 | Type::Sint32 | Type::Sfixed32 => int32(),
            Type::Uint32 | Type::Fixed32 => uint32(),
            Type::Bool => Json::obj([("type", Json::str("boolean"))]),
            Type::String => Json::obj([("type", Json::str("string"))]),
            Type::Bytes => bytes(),
            Type::Enum => self.enumeration(field.type_name()),
            Type::Message | Type::Group => {
                let name = field.type_name().trim_start_matches('.');
                if let Some(known) = well_known(name) {
                    return known;
                }
                pending.push_back(name.to_string());
                Json::obj([("$ref", Json::str(format!("#/$defs/{name}")))])
            }
        }
    }

    fn enumeration(&self, type_name: &str) -> Json {
        let name = type_name.trim_start_matches('.');
        if name == "google.protobuf.NullValue" {
            return Json::obj([("type", Json::str("null"))]);
        }
        let Some(info) = self.enums.get(name) else {
            return Json::obj([(
                "anyOf",
                Json::Arr(vec![Json::obj([("type", Json::str("string"))]), int32()]),
            )]);
        };
        Json::obj([
            ("title", Json::str(info.local_name.clone())),
            (
                "anyOf",
                Json::Arr(vec![
                    Json::obj([
                        ("type", Json::str("string")),
                        ("enum", Json::strs(info.values.iter().cloned())),
                    ]),
                    int32(),
                ]),
            ),
        ])
    }
}

/// Schemas of the well-known types with a special JSON form.
fn well_known(name: &str) -> Option<Json> {
    let wkt = name.strip_prefix("google.protobuf.")?;
    let with_null = |mut schema: Json, ty: &[&str]| {
        let mut types: Vec<&str> = ty.to_vec();
        types.push("null");
        schema.set("type", Json::strs(types));
        schema
    };
    Some(match wkt {
        "Timestamp" => Json::obj([
            ("type", Json::str("string")),
            ("format", Json::str("date-time")),
        ]),
        "Duration" => Json::obj([
            ("type", Json::str("string")),
            ("pattern", Json::str(r"^-?[0-9]+(\.[0-9]+)?s$")),
        ]),
        "Struct" => Json::obj([("type", Json::str("object"))]),
        "Value" => Json::obj::<&str>([]),
        "ListValue" => Json::obj([("type", Json::str("array"))]),
        "Empty" => Json::obj([
            ("type", Json::str("object")),
            ("additionalProperties", Json::Bool(false)),
        ]),
        "FieldMask" => Json::obj([("type", Json::str("string"))]),
        "Any" => Json::obj([
            ("type", Json::str("object")),
            (
                "properties",
                Json::obj([("@type", Json::obj([("type", Json::str("string"))]))]),
            ),
            ("required", Json::strs(["@type"])),
        ]),
        "DoubleValue" | "FloatValue" => with_null(Json::obj::<&str>([]), &["number", "string"]),
        "Int64Value" => with_null(int64(), &["integer", "string"]),
        "UInt64Value" => with_null(uint64(), &["integer", "string"]),
        "Int32Value" => with_null(int32(), &["integer"]),
        "UInt32Value" => with_null(uint32(), &["integer"]),
        "BoolValue" => with_null(Json::obj::<&str>([]), &["boolean"]),
        "StringValue" => with_null(Json::obj::<&str>([]), &["string"]),
        "BytesValue" => with_null(bytes(), &["string"]),
        _ => return None,
    })
}

/// 64-bit integers are written as decimal strings; numbers are accepted too.
fn int64() -> Json {
    Json::obj([
        ("type", Json::strs(["integer", "string"])),
        ("pattern", Json::str("^-?[0-9]+$")),
    ])
}

fn uint64() -> Json {
    Json::obj([
        ("type", Json::strs(["integer", "string"])),
        ("minimum", Json::Int(0)),
        ("pattern", Json::str("^[0-9]+$")),
    ])
}

fn int32() -> Json {
    Json::obj([
        ("type", Json::str("integer")),
        ("minimum", Json::Int(i32::MIN.into())),
        ("maximum", Json::Int(i32::MAX.into())),
    ])
}

fn uint32() -> Json {
    Json::obj([
        ("type", Json::str("integer")),
        ("minimum", Json::Int(0)),
        ("maximum", Json::UInt(u32::MAX.into())),
    ])
}

fn bytes() -> Json {
    Json::obj([
        ("type", Json::str("string")),
        ("contentEncoding", Json::str("base64")),
    ])
}

/// What the keys of a JSON map object look like, for non-string keys.
fn map_key_names(key: &FieldDescriptorProto) -> Option<Json> {
    let pattern = match key.r#type() {
        Type::Bool => return Some(Json::obj([("enum", Json::strs(["true", "false"]))])),
        Type::Int64
        | Type::Sint64
        | Type::Sfixed64
        | Type::Int32
        | Type::Sint32
        | Type::Sfixed32 => "^-?[0-9]+$",
        Type::Uint64 | Type::Fixed64 | Type::Uint32 | Type::Fixed32 => "^[0-9]+$",
        _ => return None,
    };
    Some(Json::obj([("pattern", Json::str(pattern))]))
}

/// "Part of oneof `x`" for members of a real (not synthetic) oneof.
fn oneof_note(message: &DescriptorProto, field: &FieldDescriptorProto) -> Option<String> {
    if field.proto3_optional() {
        return None;
    }
    let index = field.oneof_index?;
    let oneof = message.oneof_decl.get(usize::try_from(index).ok()?)?;
    let members: Vec<String> = message
        .field
        .iter()
        .filter(|f| f.oneof_index == Some(index))
        .map(|f| format!("`{}`", json_name(f)))
        .collect();
    Some(format!(
        "Part of oneof `{}`: set at most one of {}.",
        oneof.name(),
        members.join(", ")
    ))
}

/// The field's JSON name as protoc computed it, or the same rule applied here.
pub(crate) fn json_name(field: &FieldDescriptorProto) -> String {
    if let Some(name) = &field.json_name {
        return name.clone();
    }
    let mut out = String::new();
    let mut upper = false;
    for c in field.name().chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

fn set_description(schema: &mut Json, description: Option<String>) {
    if let Some(d) = description {
        schema.set("description", Json::Str(d));
    }
}

/// Appends the entries of object `from` to object `into`.
fn merge(into: &mut Json, from: Json) {
    if let Json::Obj(pairs) = from {
        for (k, v) in pairs {
            into.set(&k, v);
        }
    }
}

/// The comments of one file, by source-code-info path.
struct Comments(HashMap<Vec<i32>, String>);

impl Comments {
    fn of(file: &FileDescriptorProto) -> Self {
        let mut map = HashMap::new();
        for location in file.source_code_info.iter().flat_map(|i| &i.location) {
            let text: Vec<&str> = location
                .leading_comments
                .iter()
                .chain(location.trailing_comments.iter())
                .map(String::as_str)
                .collect();
            if let Some(text) = clean_comment(&text) {
                map.insert(location.path.clone(), text);
            }
        }
        Comments(map)
    }

    fn get(&self, path: &[i32], suffix: &[i32]) -> Option<String> {
        let mut key = path.to_vec();
        key.extend_from_slice(suffix);
        self.0.get(&key).cloned()
    }
}

/// Trims each line of the comment blocks and joins them; `None` if nothing is left.
fn clean_comment(blocks: &[&str]) -> Option<String> {
    let mut paragraphs = Vec::new();
    for block in blocks {
        let lines: Vec<&str> = block.lines().map(str::trim).collect();
        let text = lines.join("\n").trim().to_string();
        if !text.is_empty() {
            paragraphs.push(text);
        }
    }
    (!paragraphs.is_empty()).then(|| paragraphs.join("\n"))
}
