//! The keys the `auth` wrapper verifies with: shared secrets, JWKS documents,
//! PEM public keys, and static API keys.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use jsonwebtoken::jwk::{Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::rules::read_structured;
use super::ID;
use crate::Error;

/// A key that verifies token signatures.
#[derive(Clone)]
pub(super) struct JwtKey {
    /// The key id (`kid`) it is known by, if any.
    pub(super) kid: Option<String>,
    /// The one algorithm it is for (a JWK's `alg`), if it says.
    pub(super) alg: Option<Algorithm>,
    pub(super) key: DecodingKey,
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key material.
        f.debug_struct("JwtKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("family", &self.key.family())
            .finish()
    }
}

fn bad(detail: String) -> Error {
    Error::bad_request(ID, detail)
}

/// The keys of a JWKS document (`{"keys": [...]}`); keys that are not for
/// signatures (`use: enc`) or that cannot be read are skipped with a warning.
pub(super) fn jwks_keys(text: &str, source: &str) -> Result<Vec<JwtKey>, Error> {
    let doc: Value = serde_json::from_str(text).map_err(|e| bad(format!("JWKS {source}: {e}")))?;
    let Some(list) = doc.get("keys").and_then(Value::as_array) else {
        return Err(bad(format!(
            "JWKS {source}: expected a JSON object with a \"keys\" list"
        )));
    };
    let mut keys = Vec::new();
    for (i, raw) in list.iter().enumerate() {
        if raw.get("use").and_then(Value::as_str) == Some("enc") {
            continue;
        }
        let jwk: Jwk = match serde_json::from_value(raw.clone()) {
            Ok(jwk) => jwk,
            Err(e) => {
                tracing::warn!(
                    source,
                    key = i,
                    "skipping a JWKS key that cannot be read: {e}"
                );
                continue;
            }
        };
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(a) => match Algorithm::from_str(&a.to_string()) {
                Ok(a) => Some(a),
                Err(_) => {
                    if a != KeyAlgorithm::UNKNOWN_ALGORITHM {
                        tracing::warn!(
                            source,
                            key = i,
                            "skipping a JWKS key for {a}, not a signature algorithm"
                        );
                    } else {
                        tracing::warn!(source, key = i, "skipping a JWKS key with an unknown alg");
                    }
                    continue;
                }
            },
        };
        let key = match DecodingKey::from_jwk(&jwk) {
            Ok(key) => key,
            Err(e) => {
                tracing::warn!(
                    source,
                    key = i,
                    "skipping a JWKS key that cannot be used: {e}"
                );
                continue;
            }
        };
        if let Some(a) = alg {
            if a.family() != key.family() {
                return Err(bad(format!(
                    "JWKS {source}: key {} says alg {a:?} but is a {:?} key",
                    i + 1,
                    key.family()
                )));
            }
        }
        keys.push(JwtKey {
            kid: jwk.common.key_id.clone(),
            alg,
            key,
        });
    }
    if keys.is_empty() {
        return Err(bad(format!("JWKS {source} has no usable signature keys")));
    }
    Ok(keys)
}

/// A PEM public key: RSA, EC (P-256/P-384) or Ed25519.
pub(super) fn pem_key(pem: &[u8], source: &str) -> Result<JwtKey, Error> {
    let key = DecodingKey::from_rsa_pem(pem)
        .or_else(|_| DecodingKey::from_ec_pem(pem))
        .or_else(|_| DecodingKey::from_ed_pem(pem))
        .map_err(|e| {
            bad(format!(
                "{source}: not a PEM public key (RSA, EC or Ed25519): {e}"
            ))
        })?;
    Ok(JwtKey {
        kid: None,
        alg: None,
        key,
    })
}

/// Reads a file named by a setting.
pub(super) fn read(path: &Path, setting: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| {
        bad(format!(
            "auth.{setting}: cannot read {}: {e}",
            path.display()
        ))
    })
}

/// A shared secret from a file: the content less its trailing newline.
pub(super) fn secret_from_file(path: &Path) -> Result<Vec<u8>, Error> {
    let mut bytes = read(path, "secret_file")?;
    while matches!(bytes.last(), Some(b'\n' | b'\r')) {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(bad(format!("auth.secret_file {} is empty", path.display())));
    }
    Ok(bytes)
}

/// Who an API key stands for.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct KeyOwner {
    pub(super) subject: String,
    pub(super) scopes: Vec<String>,
}

/// Static API keys, kept as SHA-256 digests: a presented key is hashed and looked
/// up, so no comparison ever runs over the secret itself.
#[derive(Clone, Default)]
pub(super) struct ApiKeys {
    by_digest: HashMap<[u8; 32], KeyOwner>,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeys({} keys)", self.by_digest.len())
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl ApiKeys {
    pub(super) fn insert(&mut self, key: &str, owner: KeyOwner) -> Result<(), Error> {
        if key.is_empty() || owner.subject.is_empty() {
            return Err(bad(
                "an API key needs a key and a subject (key:subject:scope1 scope2)".into(),
            ));
        }
        if self.by_digest.insert(digest(key), owner).is_some() {
            return Err(bad("the same API key is listed twice".into()));
        }
        Ok(())
    }

    pub(super) fn get(&self, key: &str) -> Option<&KeyOwner> {
        if self.by_digest.is_empty() {
            return None;
        }
        self.by_digest.get(&digest(key))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// One entry written `key:subject:scope1 scope2` (the scopes optional).
    pub(super) fn insert_line(&mut self, line: &str) -> Result<(), Error> {
        let mut parts = line.splitn(3, ':');
        let key = parts.next().unwrap_or("").trim();
        let subject = parts.next().unwrap_or("").trim();
        let scopes = split_scopes(parts.next().unwrap_or(""));
        self.insert(
            key,
            KeyOwner {
                subject: subject.to_string(),
                scopes,
            },
        )
        .map_err(|e| {
            bad(format!(
                "{}: expected key:subject:scope1 scope2",
                e.detail()
            ))
        })
    }

    /// Keys from a file: a YAML/JSON/TOML table `key -> {subject, scopes}` (by
    /// extension), else lines `key:subject:scope1 scope2` with `#` comments.
    pub(super) fn load_file(&mut self, path: &Path) -> Result<(), Error> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let at = |e: Error| {
            bad(format!(
                "auth.api_keys_file {}: {}",
                path.display(),
                e.detail()
            ))
        };
        if matches!(ext.as_str(), "json" | "yaml" | "yml" | "toml") {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Entry {
                subject: String,
                #[serde(default)]
                scopes: Scopes,
            }
            let value = read_structured(path)?;
            let table: HashMap<String, Entry> = serde_json::from_value(value).map_err(|e| {
                bad(format!(
                    "auth.api_keys_file {}: expected a table key -> {{subject, scopes}}: {e}",
                    path.display()
                ))
            })?;
            for (key, entry) in table {
                self.insert(
                    &key,
                    KeyOwner {
                        subject: entry.subject,
                        scopes: entry.scopes.0,
                    },
                )
                .map_err(at)?;
            }
        } else {
            let text = String::from_utf8(read(path, "api_keys_file")?).map_err(|_| {
                bad(format!(
                    "auth.api_keys_file {} is not UTF-8",
                    path.display()
                ))
            })?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                self.insert_line(line).map_err(|e| {
                    bad(format!(
                        "auth.api_keys_file {} line {}: {}",
                        path.display(),
                        n + 1,
                        e.detail()
                    ))
                })?;
            }
        }
        Ok(())
    }
}

/// Scopes written as a list or as one space-separated string.
#[derive(Default)]
pub(super) struct Scopes(pub(super) Vec<String>);

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Scopes(scopes_of(&Value::deserialize(d)?)))
    }
}

/// `"a b"` or `["a", "b"]` -> `[a, b]`.
pub(super) fn scopes_of(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => split_scopes(s),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .flat_map(split_scopes)
            .collect(),
        _ => Vec::new(),
    }
}

fn split_scopes(text: &str) -> Vec<String> {
    text.split_whitespace().map(String::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_lines_and_files() {
        let mut keys = ApiKeys::default();
        keys.insert_line("k1:ci:deploy read").unwrap();
        keys.insert_line("k2:bot").unwrap();
        assert_eq!(keys.get("k1").unwrap().scopes, ["deploy", "read"]);
        assert!(keys.get("k2").unwrap().scopes.is_empty());
        assert!(keys.get("k3").is_none());
        assert!(keys
            .insert_line("k1:again")
            .unwrap_err()
            .detail()
            .contains("twice"));
        assert!(keys
            .insert_line("lonely")
            .unwrap_err()
            .detail()
            .contains("key:subject"));

        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("keys.yaml");
        std::fs::write(
            &yaml,
            "abc: {subject: svc, scopes: [a, b]}\ndef: {subject: two, scopes: \"x y\"}\n",
        )
        .unwrap();
        let lines = dir.path().join("keys.txt");
        std::fs::write(&lines, "# ops\nghi:ops:admin\n\n").unwrap();
        let mut keys = ApiKeys::default();
        keys.load_file(&yaml).unwrap();
        keys.load_file(&lines).unwrap();
        assert_eq!(keys.get("abc").unwrap().scopes, ["a", "b"]);
        assert_eq!(keys.get("def").unwrap().scopes, ["x", "y"]);
        assert_eq!(keys.get("ghi").unwrap().subject, "ops");
        std::fs::write(&lines, "ghi\n").unwrap();
        let e = ApiKeys::default().load_file(&lines).unwrap_err();
        assert!(e.detail().contains("line 1"), "{e}");
        // Debug output shows no key.
        assert_eq!(format!("{keys:?}"), "ApiKeys(3 keys)");
    }

    #[test]
    fn jwks_errors() {
        assert!(jwks_keys("[]", "t")
            .unwrap_err()
            .detail()
            .contains("\"keys\" list"));
        assert!(jwks_keys(r#"{"keys":[]}"#, "t")
            .unwrap_err()
            .detail()
            .contains("no usable"));
        // An encryption key and an unreadable one are skipped; the oct key stays.
        let keys = jwks_keys(
            r#"{"keys":[{"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"},{"kty":"weird"},
                {"kty":"oct","k":"c2VjcmV0","kid":"h1","alg":"HS256"}]}"#,
            "t",
        )
        .unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("h1"));
        assert!(!format!("{:?}", keys[0]).contains("c2VjcmV0"));
    }
}
