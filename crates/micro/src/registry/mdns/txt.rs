//! How one node's registry record travels in a DNS-SD TXT record.
//!
//! Layout (`txtvers=1`), one TXT string per key:
//!
//! | key       | value                                                        |
//! |-----------|--------------------------------------------------------------|
//! | `txtvers` | `1`                                                          |
//! | `id`      | the node id                                                  |
//! | `service` | the service name                                             |
//! | `version` | the service version                                          |
//! | `address` | the node's `host:port`                                       |
//! | `digest`  | 16 hex digits: FNV-1a 64 of the full record's JSON           |
//! | `scope`   | optional: 16 hex digits naming the same-machine registry     |
//! | `record`  | `full`, `summary`, `node` or `none`: what `r0..rN` carry     |
//! | `r0`…`rN` | raw DEFLATE of the record's JSON, cut into 250-byte pieces   |
//!
//! The readable keys let `avahi-browse -r _micro._tcp` or `dns-sd -L` show a node; the
//! `r*` pieces carry the record itself. RFC 6763 §6.2 advises keeping a TXT record
//! under 1300 bytes so it fits one Ethernet frame, and a fragmented multicast packet is
//! exactly what Wi-Fi access points and VPNs drop. So the encoder tries, in order, the
//! full record, a summary (endpoint names, types and metadata without JSON Schemas),
//! the node alone (service metadata and node metadata), and finally nothing but the
//! readable keys, and keeps the first that fits in [`TXT_BUDGET`] bytes.

use std::fmt::Write as _;

use mdns_sd::{TxtProperties, TxtProperty};

use crate::registry::{Node, Service};

/// The most bytes a node's TXT record may take (RFC 6763 §6.2).
pub(crate) const TXT_BUDGET: usize = 1300;
/// Bytes of compressed record per `rN` string (key + `=` + value must stay <= 255).
const CHUNK: usize = 250;
/// The largest record a peer will inflate, against compression bombs.
const MAX_INFLATED: usize = 1 << 20;
/// The TXT layout this code writes.
const TXT_VERSION: &str = "1";

/// How much of the registry record a TXT record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Detail {
    /// Everything, JSON Schemas included.
    Full,
    /// Endpoints without their JSON Schemas.
    Summary,
    /// Service and node metadata, no endpoints.
    Node,
    /// Only the readable keys: name, version, node id and address.
    None,
}

impl Detail {
    fn as_str(self) -> &'static str {
        match self {
            Detail::Full => "full",
            Detail::Summary => "summary",
            Detail::Node => "node",
            Detail::None => "none",
        }
    }

    fn parse(s: &str) -> Detail {
        match s {
            "full" => Detail::Full,
            "summary" => Detail::Summary,
            "node" => Detail::Node,
            _ => Detail::None,
        }
    }
}

/// A TXT record ready to announce.
#[derive(Debug)]
pub(crate) struct Encoded {
    pub(crate) props: Vec<TxtProperty>,
    pub(crate) detail: Detail,
    pub(crate) digest: u64,
    /// Wire size of the TXT record in bytes.
    pub(crate) size: usize,
}

/// A node read back from a peer's TXT record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decoded {
    /// The service version with exactly one node.
    pub(crate) service: Service,
    pub(crate) detail: Detail,
    pub(crate) digest: String,
    /// The announcer's same-machine registry, if it said.
    pub(crate) scope: Option<String>,
}

/// FNV-1a, 64 bits: stable across builds and platforms (unlike `DefaultHasher`).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn prop_size(key: &str, value: &[u8]) -> usize {
    1 + key.len() + 1 + value.len()
}

/// Encodes `service`, which holds exactly one node.
///
/// Fails only when a readable field alone is too long for a TXT string (255 bytes).
pub(crate) fn encode(service: &Service, scope: Option<&str>) -> Result<Encoded, String> {
    let node = service
        .nodes
        .first()
        .ok_or_else(|| "a record to announce needs one node".to_string())?;
    let full_json = serde_json::to_vec(service).map_err(|e| e.to_string())?;
    let digest = fnv1a(&full_json);

    let mut header: Vec<(&str, Vec<u8>)> = vec![
        ("txtvers", TXT_VERSION.as_bytes().to_vec()),
        ("id", node.id.as_bytes().to_vec()),
        ("service", service.name.as_bytes().to_vec()),
        ("version", service.version.as_bytes().to_vec()),
        ("address", node.address.as_bytes().to_vec()),
        ("digest", format!("{digest:016x}").into_bytes()),
    ];
    if let Some(scope) = scope {
        header.push(("scope", scope.as_bytes().to_vec()));
    }
    for (key, value) in &header {
        if prop_size(key, value) > 256 {
            return Err(format!(
                "the {key} {:?} is too long for an mDNS TXT string (255 bytes)",
                String::from_utf8_lossy(value)
            ));
        }
    }
    let header_size: usize = header.iter().map(|(k, v)| prop_size(k, v)).sum();

    let mut chosen: Option<(Detail, Vec<u8>)> = None;
    for detail in [Detail::Full, Detail::Summary, Detail::Node] {
        let json = if detail == Detail::Full {
            full_json.clone()
        } else {
            serde_json::to_vec(&reduce(service, detail)).map_err(|e| e.to_string())?
        };
        let packed = miniz_oxide::deflate::compress_to_vec(&json, 9);
        let pieces = packed.len().div_ceil(CHUNK);
        let size = header_size
            + prop_size("record", detail.as_str().as_bytes())
            + (0..pieces)
                .map(|i| {
                    let len = CHUNK.min(packed.len() - i * CHUNK);
                    1 + format!("r{i}").len() + 1 + len
                })
                .sum::<usize>();
        if size <= TXT_BUDGET {
            chosen = Some((detail, packed));
            break;
        }
    }

    let detail = chosen.as_ref().map_or(Detail::None, |(d, _)| *d);
    header.push(("record", detail.as_str().as_bytes().to_vec()));
    let mut props: Vec<TxtProperty> = header
        .into_iter()
        .map(|(k, v)| TxtProperty::from((k, v)))
        .collect();
    if let Some((_, packed)) = chosen {
        for (i, piece) in packed.chunks(CHUNK).enumerate() {
            props.push(TxtProperty::from((format!("r{i}"), piece.to_vec())));
        }
    }
    let size = props
        .iter()
        .map(|p| prop_size(p.key(), p.val().unwrap_or_default()))
        .sum();
    Ok(Encoded {
        props,
        detail,
        digest,
        size,
    })
}

/// `service` with only what `detail` keeps.
fn reduce(service: &Service, detail: Detail) -> Service {
    let mut out = service.clone();
    match detail {
        Detail::Full => {}
        Detail::Summary => {
            for ep in &mut out.endpoints {
                ep.request.schema = serde_json::Value::Null;
                ep.response.schema = serde_json::Value::Null;
            }
        }
        Detail::Node | Detail::None => out.endpoints.clear(),
    }
    out
}

fn text<'a>(props: &'a TxtProperties, key: &str) -> Option<&'a str> {
    props
        .get_property_val(key)
        .flatten()
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Reads a node back from a TXT record; `None` when it is not a micro node.
///
/// A record whose payload is missing, cut short or inconsistent still yields the node
/// from the readable keys (as [`Detail::None`]): a peer with a newer layout or a
/// damaged packet stays callable.
pub(crate) fn decode(props: &TxtProperties) -> Option<Decoded> {
    text(props, "txtvers")?;
    let id = text(props, "id").filter(|s| !s.is_empty())?;
    let name = text(props, "service").filter(|s| !s.is_empty())?;
    let address = text(props, "address").filter(|s| !s.is_empty())?;
    let version = text(props, "version").unwrap_or_default();
    let digest = text(props, "digest").unwrap_or_default().to_string();
    let scope = text(props, "scope").map(str::to_string);
    let layout_known = text(props, "txtvers") == Some(TXT_VERSION);
    let detail = if layout_known {
        text(props, "record").map_or(Detail::None, Detail::parse)
    } else {
        Detail::None
    };

    let bare = || Service {
        name: name.to_string(),
        version: version.to_string(),
        nodes: vec![Node {
            id: id.to_string(),
            address: address.to_string(),
            ..Default::default()
        }],
        ..Default::default()
    };

    let from_payload = (detail != Detail::None)
        .then(|| {
            let mut packed = Vec::new();
            for i in 0.. {
                match props.get_property_val(&format!("r{i}")) {
                    Some(Some(piece)) => packed.extend_from_slice(piece),
                    _ => break,
                }
            }
            let json =
                miniz_oxide::inflate::decompress_to_vec_with_limit(&packed, MAX_INFLATED).ok()?;
            let mut service: Service = serde_json::from_slice(&json).ok()?;
            let consistent = service.name == name
                && service.version == version
                && service.nodes.len() == 1
                && service.nodes[0].id == id;
            if !consistent {
                return None;
            }
            // The readable key is what the announcer vouches for.
            service.nodes[0].address = address.to_string();
            Some(service)
        })
        .flatten();

    Some(match from_payload {
        Some(service) => Decoded {
            service,
            detail,
            digest,
            scope,
        },
        None => Decoded {
            service: bare(),
            detail: Detail::None,
            digest,
            scope,
        },
    })
}

/// A DNS label (<= 63 bytes) naming the instance: the node id when it fits, else a
/// prefix of it and a hash of the whole.
pub(crate) fn instance_label(id: &str) -> String {
    // mdns-sd escapes `.` and `\` with a backslash, which counts in the label.
    let escaped_len = id.len() + id.chars().filter(|c| matches!(c, '.' | '\\')).count();
    if escaped_len <= 63 && !id.is_empty() {
        return id.to_string();
    }
    let mut prefix = String::new();
    for c in id.chars().filter(|c| !matches!(c, '.' | '\\')) {
        if prefix.len() + c.len_utf8() > 46 {
            break;
        }
        prefix.push(c);
    }
    let _ = write!(prefix, "-{:016x}", fnv1a(id.as_bytes()));
    prefix
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::registry::{Endpoint, Type};

    fn props(encoded: &Encoded) -> TxtProperties {
        use mdns_sd::IntoTxtProperties;
        encoded.props.clone().into_txt_properties()
    }

    fn record(endpoints: usize, schema_words: usize) -> Service {
        let schema = serde_json::json!({
            "type": "object",
            "properties": (0..schema_words)
                .map(|i| (format!("field_{i}"), serde_json::json!({"type": "string", "description": format!("word {i} of a longer schema {}", i * 7919 % 1000)})))
                .collect::<serde_json::Map<_, _>>(),
        });
        Service {
            name: "greeter".into(),
            version: "1.2.0".into(),
            metadata: BTreeMap::from([("team".into(), "core".into())]),
            endpoints: (0..endpoints)
                .map(|i| Endpoint {
                    name: format!("Greeter.Hello{i}"),
                    request: Type {
                        name: "HelloRequest".into(),
                        schema: schema.clone(),
                    },
                    response: Type {
                        name: "HelloResponse".into(),
                        schema: schema.clone(),
                    },
                    metadata: BTreeMap::from([("stream".into(), "false".into())]),
                })
                .collect(),
            nodes: vec![Node {
                id: "greeter-6b0c2f4e-8d1a-4f6e-9a53-0d0b1c2d3e4f".into(),
                address: "127.0.0.1:9090".into(),
                metadata: BTreeMap::from([("protocol".into(), "grpc+json".into())]),
            }],
        }
    }

    #[test]
    fn small_records_travel_whole() {
        let service = record(2, 3);
        let enc = encode(&service, None).unwrap();
        assert_eq!(enc.detail, Detail::Full);
        assert!(enc.size <= TXT_BUDGET, "{}", enc.size);
        let back = decode(&props(&enc)).unwrap();
        assert_eq!(back.service, service);
        assert_eq!(back.detail, Detail::Full);
        assert_eq!(back.digest, format!("{:016x}", enc.digest));
        assert_eq!(back.scope, None);
        let scoped = encode(&service, Some("00112233aabbccdd")).unwrap();
        let back = decode(&props(&scoped)).unwrap();
        assert_eq!(back.scope.as_deref(), Some("00112233aabbccdd"));
        assert_eq!(back.service, service);
    }

    #[test]
    fn big_records_fall_back_to_a_summary_then_the_node() {
        let service = record(4, 200);
        let enc = encode(&service, None).unwrap();
        assert_eq!(enc.detail, Detail::Summary);
        assert!(enc.size <= TXT_BUDGET, "{}", enc.size);
        let back = decode(&props(&enc)).unwrap().service;
        assert_eq!(back.endpoints.len(), 4);
        assert_eq!(back.endpoints[0].request.name, "HelloRequest");
        assert_eq!(back.endpoints[0].request.schema, serde_json::Value::Null);
        assert_eq!(back.endpoints[0].metadata["stream"], "false");
        assert_eq!(back.nodes, service.nodes);

        let mut huge = record(400, 1);
        huge.endpoints
            .iter_mut()
            .enumerate()
            .for_each(|(i, e)| e.name = format!("Service{}.Method{}", i * 7919, i * 104_729));
        let enc = encode(&huge, None).unwrap();
        assert_eq!(enc.detail, Detail::Node);
        let back = decode(&props(&enc)).unwrap().service;
        assert!(back.endpoints.is_empty());
        assert_eq!(back.metadata, huge.metadata);
        assert_eq!(back.nodes, huge.nodes);
    }

    #[test]
    fn oversized_metadata_leaves_the_readable_keys() {
        let mut service = record(1, 1);
        service.nodes[0].metadata = (0..300)
            .map(|i| {
                (
                    format!("k{i}"),
                    format!("{:x}", fnv1a(&[i as u8, (i >> 8) as u8])),
                )
            })
            .collect();
        let enc = encode(&service, None).unwrap();
        assert_eq!(enc.detail, Detail::None);
        let back = decode(&props(&enc)).unwrap();
        assert_eq!(back.detail, Detail::None);
        assert_eq!(back.service.nodes[0].id, service.nodes[0].id);
        assert_eq!(back.service.nodes[0].address, "127.0.0.1:9090");
        assert_eq!(back.service.version, "1.2.0");
    }

    #[test]
    fn foreign_and_damaged_records() {
        use mdns_sd::IntoTxtProperties;
        let other: TxtProperties =
            vec![TxtProperty::from(("path", "/printer"))].into_txt_properties();
        assert!(decode(&other).is_none());

        let service = record(2, 3);
        let mut enc = encode(&service, None).unwrap();
        // Drop the last payload piece: the node is still usable from the readable keys.
        enc.props.pop();
        let back = decode(&props(&enc)).unwrap();
        assert_eq!(back.detail, Detail::None);
        assert_eq!(back.service.nodes[0].address, "127.0.0.1:9090");
        assert!(back.service.endpoints.is_empty());

        let mut long = record(1, 1);
        long.nodes[0].address = "h".repeat(300);
        assert!(encode(&long, None).unwrap_err().contains("too long"));
    }

    #[test]
    fn labels_fit_dns() {
        assert_eq!(instance_label("greeter-1"), "greeter-1");
        let long = format!("com.example.orders.{}", "x".repeat(80));
        let label = instance_label(&long);
        assert!(label.len() <= 63, "{label}");
        assert_ne!(label, instance_label(&format!("{long}y")));
    }
}
