//! Who may call what: an ordered list of rules, the first match wins.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::{Account, ID};
use crate::Error;

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Let the call through.
    Allow,
    /// Refuse it: 403 for an authenticated caller, 401 for an anonymous one.
    Deny,
}

/// Whom a rule is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// Anyone, with or without credentials (`public: true`, or `subjects: "public"`).
    Public,
    /// Any authenticated caller (no `subjects`/`scopes`, or `"*"`).
    Authenticated,
    /// Authenticated callers whose subject is one of `subjects` or who hold one of
    /// `scopes`.
    Some {
        /// Subjects (`sub`) the rule names.
        subjects: Vec<String>,
        /// Scopes the rule names; holding any one of them matches.
        scopes: Vec<String>,
    },
}

/// One rule: which endpoints, whom, and what to do.
///
/// Patterns are globs where `*` stands for any run of characters: `*`,
/// `Greeter.*`, `Greeter.Hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Service name patterns (empty: any service).
    pub services: Vec<String>,
    /// Endpoint patterns (`Greeter.*`); empty matches every endpoint.
    pub endpoints: Vec<String>,
    /// Whom it is about.
    pub who: Who,
    /// What it does.
    pub action: Action,
}

impl Rule {
    /// A rule for `endpoint` (a pattern) that allows any authenticated caller;
    /// narrow it with [`subjects`](Self::subjects), [`scopes`](Self::scopes),
    /// [`public`](Self::public) or [`deny`](Self::deny).
    pub fn endpoint(pattern: impl Into<String>) -> Self {
        Rule {
            services: Vec::new(),
            endpoints: vec![pattern.into()],
            who: Who::Authenticated,
            action: Action::Allow,
        }
    }
    /// Only for services matching `pattern`.
    pub fn service(mut self, pattern: impl Into<String>) -> Self {
        self.services.push(pattern.into());
        self
    }
    /// About callers with one of these subjects.
    pub fn subjects<I: IntoIterator<Item = S>, S: Into<String>>(mut self, subjects: I) -> Self {
        let (mut s, c) = self.take_some();
        s.extend(subjects.into_iter().map(Into::into));
        self.who = Who::Some {
            subjects: s,
            scopes: c,
        };
        self
    }
    /// About callers holding one of these scopes.
    pub fn scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        let (s, mut c) = self.take_some();
        c.extend(scopes.into_iter().map(Into::into));
        self.who = Who::Some {
            subjects: s,
            scopes: c,
        };
        self
    }
    /// About anyone, credentials or not.
    pub fn public(mut self) -> Self {
        self.who = Who::Public;
        self
    }
    /// Denies instead of allowing.
    pub fn deny(mut self) -> Self {
        self.action = Action::Deny;
        self
    }

    fn take_some(&mut self) -> (Vec<String>, Vec<String>) {
        match std::mem::replace(&mut self.who, Who::Authenticated) {
            Who::Some { subjects, scopes } => (subjects, scopes),
            _ => (Vec::new(), Vec::new()),
        }
    }

    /// Whether the rule is about this call.
    pub fn matches(&self, service: &str, endpoint: &str, account: Option<&Account>) -> bool {
        let place = (self.services.is_empty() || self.services.iter().any(|p| glob(p, service)))
            && (self.endpoints.is_empty() || self.endpoints.iter().any(|p| glob(p, endpoint)));
        place
            && match (&self.who, account) {
                (Who::Public, _) => true,
                (_, None) => false,
                (Who::Authenticated, Some(_)) => true,
                (Who::Some { subjects, scopes }, Some(a)) => {
                    subjects.contains(&a.subject) || scopes.iter().any(|s| a.scopes.contains(s))
                }
            }
    }
}

/// What the rules decided for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Through, whoever calls (a public rule).
    Public,
    /// Through, for this authenticated caller.
    Allow,
    /// Refused.
    Deny,
}

/// The rules of the `auth` wrapper: an ordered list, the first match wins; when
/// none matches, authenticated callers are allowed (or denied, with
/// [`default_deny`](Self::default_deny)) and anonymous ones need credentials.
///
/// ```
/// use micro::wrapper::auth::{Account, Decision, Rule, Rules};
///
/// let rules = Rules::new()
///     .rule(Rule::endpoint("Debug.*").public())
///     .rule(Rule::endpoint("Admin.*").scopes(["admin"]))
///     .rule(Rule::endpoint("Admin.*").deny());
/// let alice = Account::new("alice").scope("admin");
/// let bob = Account::new("bob");
/// assert_eq!(rules.decide("svc", "Admin.Drop", Some(&alice)), Decision::Allow);
/// assert_eq!(rules.decide("svc", "Admin.Drop", Some(&bob)), Decision::Deny);
/// assert_eq!(rules.decide("svc", "Debug.Health", None), Decision::Public);
/// assert!(rules.check("svc", "Admin.Drop", Some(&bob)).unwrap_err().code() == 403);
/// assert!(rules.check("svc", "Greeter.Hello", None).unwrap_err().code() == 401);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    rules: Vec<Rule>,
    default_deny: bool,
}

impl Rules {
    /// No rules: every authenticated caller is allowed.
    pub fn new() -> Self {
        Rules::default()
    }
    /// Adds a rule after the others.
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }
    /// Denies authenticated callers no rule allows (default: allows them).
    pub fn default_deny(mut self, deny: bool) -> Self {
        self.default_deny = deny;
        self
    }
    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// What the first matching rule (or the default) says.
    pub fn decide(&self, service: &str, endpoint: &str, account: Option<&Account>) -> Decision {
        for rule in &self.rules {
            if rule.matches(service, endpoint, account) {
                return match (rule.action, &rule.who) {
                    (Action::Deny, _) => Decision::Deny,
                    (Action::Allow, Who::Public) => Decision::Public,
                    (Action::Allow, _) => Decision::Allow,
                };
            }
        }
        match account {
            Some(_) if !self.default_deny => Decision::Allow,
            _ => Decision::Deny,
        }
    }

    /// `Ok` when the call may go on; else a 401 for an anonymous caller (no or bad
    /// credentials) or a 403 for an authenticated one.
    pub fn check(
        &self,
        service: &str,
        endpoint: &str,
        account: Option<&Account>,
    ) -> Result<(), Error> {
        match (self.decide(service, endpoint, account), account) {
            (Decision::Public | Decision::Allow, _) => Ok(()),
            (Decision::Deny, Some(a)) => Err(Error::forbidden(
                ID,
                format!("{} may not call {endpoint}", a.subject),
            )),
            (Decision::Deny, None) => Err(Error::unauthorized(
                ID,
                format!("{endpoint} needs credentials: send Authorization: Bearer <token>"),
            )),
        }
    }

    /// Rules from a value: a list of rules, or a table with `rules` (and
    /// optionally `default: allow|deny`).
    pub fn from_value(value: &Value) -> Result<Rules, Error> {
        let (list, default) = match value {
            Value::Array(_) => (value.clone(), None),
            Value::Object(table) => (
                table
                    .get("rules")
                    .cloned()
                    .unwrap_or(Value::Array(Vec::new())),
                table.get("default").cloned(),
            ),
            Value::Null => (Value::Array(Vec::new()), None),
            other => {
                return Err(bad(format!(
                    "auth rules must be a list of rules, found {other}"
                )))
            }
        };
        let raw: Vec<RawRule> =
            serde_json::from_value(list).map_err(|e| bad(format!("auth rules: {e}")))?;
        let mut rules = Rules::new();
        for (i, r) in raw.into_iter().enumerate() {
            rules.rules.push(
                r.into_rule()
                    .map_err(|e| bad(format!("auth rule {}: {e}", i + 1)))?,
            );
        }
        if let Some(default) = default {
            rules.default_deny = parse_default(&default)?;
        }
        Ok(rules)
    }

    /// Rules from a YAML, JSON or TOML file (told apart by extension; YAML
    /// otherwise).
    pub fn from_file(path: &Path) -> Result<Rules, Error> {
        let value = read_structured(path)?;
        Rules::from_value(&value)
    }
}

/// `allow` or `deny` -> whether it denies.
pub(super) fn parse_default(value: &Value) -> Result<bool, Error> {
    match value.as_str().map(str::trim) {
        Some("allow") => Ok(false),
        Some("deny") => Ok(true),
        _ => Err(bad(format!(
            "auth default must be allow or deny, found {value}"
        ))),
    }
}

fn bad(detail: String) -> Error {
    Error::bad_request(ID, detail)
}

/// A file as a JSON value: `.json`, `.toml`, else YAML.
pub(super) fn read_structured(path: &Path) -> Result<Value, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let parsed = match ext.as_str() {
        "json" => serde_json::from_str(&text).map_err(|e| e.to_string()),
        "toml" => toml::from_str::<toml::Value>(&text)
            .map_err(|e| e.to_string())
            .and_then(|v| serde_json::to_value(v).map_err(|e| e.to_string())),
        _ => serde_yaml::from_str(&text).map_err(|e| e.to_string()),
    };
    parsed.map_err(|e| bad(format!("{}: {e}", path.display())))
}

/// One or more strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default, alias = "endpoints")]
    endpoint: Option<OneOrMany>,
    #[serde(default, alias = "services")]
    service: Option<OneOrMany>,
    #[serde(default, alias = "subject")]
    subjects: Option<OneOrMany>,
    #[serde(default, alias = "scope")]
    scopes: Option<OneOrMany>,
    #[serde(default)]
    public: bool,
    #[serde(default = "allow")]
    action: Action,
}

fn allow() -> Action {
    Action::Allow
}

impl RawRule {
    fn into_rule(self) -> Result<Rule, String> {
        let mut any = false;
        let mut public = self.public;
        let mut named = |v: Option<OneOrMany>| -> Vec<String> {
            match v {
                Some(OneOrMany::One(s)) if s == "*" => {
                    any = true;
                    Vec::new()
                }
                Some(OneOrMany::One(s)) if s == "public" => {
                    public = true;
                    Vec::new()
                }
                Some(v) => v.into_vec(),
                None => Vec::new(),
            }
        };
        let subjects = named(self.subjects);
        let scopes = named(self.scopes);
        let who = if public {
            if !subjects.is_empty() || !scopes.is_empty() {
                return Err("a public rule cannot also name subjects or scopes".into());
            }
            Who::Public
        } else if any || (subjects.is_empty() && scopes.is_empty()) {
            Who::Authenticated
        } else {
            Who::Some { subjects, scopes }
        };
        let endpoints = self.endpoint.map(OneOrMany::into_vec).unwrap_or_default();
        let services = self.service.map(OneOrMany::into_vec).unwrap_or_default();
        for p in endpoints.iter().chain(&services) {
            if p.is_empty() {
                return Err("an empty pattern matches nothing; use \"*\" for all".into());
            }
        }
        Ok(Rule {
            services,
            endpoints,
            who,
            action: self.action,
        })
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters.
pub(super) fn glob(pattern: &str, text: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == text;
    };
    let Some(mut text) = text.strip_prefix(first) else {
        return false;
    };
    let mut parts: Vec<&str> = rest.split('*').collect();
    let last = parts.pop().unwrap_or("");
    for part in parts {
        match text.find(part) {
            Some(i) => text = &text[i + part.len()..],
            None => return false,
        }
    }
    text.len() >= last.len() && text.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn acct(sub: &str, scopes: &[&str]) -> Account {
        scopes.iter().fold(Account::new(sub), |a, s| a.scope(*s))
    }

    #[test]
    fn globs() {
        assert!(glob("*", "Greeter.Hello"));
        assert!(glob("Greeter.*", "Greeter.Hello"));
        assert!(!glob("Greeter.*", "GreeterX.Hello"));
        assert!(glob("Greeter.Hello", "Greeter.Hello"));
        assert!(!glob("Greeter.Hello", "Greeter.Hello2"));
        assert!(glob("*.Hello", "Greeter.Hello"));
        assert!(glob("G*r.*o", "Greeter.Hello"));
        assert!(!glob("*.Hello", "Greeter.Bye"));
        assert!(glob("a*a", "aa"));
        assert!(!glob("a*a", "a"));
    }

    #[test]
    fn first_match_wins_and_deny_before_allow() {
        let rules = Rules::from_value(&json!([
            {"endpoint": "Greeter.Secret", "action": "deny"},
            {"endpoint": "Greeter.*", "action": "allow"},
        ]))
        .unwrap();
        let a = acct("alice", &[]);
        assert_eq!(
            rules.decide("s", "Greeter.Secret", Some(&a)),
            Decision::Deny
        );
        assert_eq!(
            rules.decide("s", "Greeter.Hello", Some(&a)),
            Decision::Allow
        );
        let e = rules.check("s", "Greeter.Secret", Some(&a)).unwrap_err();
        assert_eq!(e.code(), 403);
        assert!(e.detail().contains("alice"), "{e}");

        // The same rules the other way round: the allow shadows the deny.
        let rules = Rules::from_value(&json!([
            {"endpoint": "Greeter.*"},
            {"endpoint": "Greeter.Secret", "action": "deny"},
        ]))
        .unwrap();
        assert_eq!(
            rules.decide("s", "Greeter.Secret", Some(&a)),
            Decision::Allow
        );
    }

    #[test]
    fn public_endpoints_need_no_credentials() {
        let rules = Rules::from_value(&json!({"rules": [
            {"endpoint": "Greeter.Hello", "public": true},
            {"endpoint": ["Greeter.Open", "Other.*"], "subjects": "public"},
        ], "default": "deny"}))
        .unwrap();
        assert_eq!(rules.decide("s", "Greeter.Hello", None), Decision::Public);
        assert_eq!(rules.decide("s", "Other.X", None), Decision::Public);
        assert_eq!(
            rules.decide("s", "Greeter.Hello", Some(&acct("a", &[]))),
            Decision::Public
        );
        assert!(rules.check("s", "Greeter.Open", None).is_ok());
        let e = rules.check("s", "Greeter.Bye", None).unwrap_err();
        assert_eq!(e.code(), 401);
        // default deny: an authenticated caller no rule allows gets a 403.
        let e = rules
            .check("s", "Greeter.Bye", Some(&acct("a", &[])))
            .unwrap_err();
        assert_eq!(e.code(), 403);
    }

    #[test]
    fn subjects_and_scopes_match() {
        let rules = Rules::from_value(&json!([
            {"endpoint": "Admin.*", "scopes": ["admin", "root"]},
            {"endpoint": "Admin.*", "subjects": ["ops-bot"]},
            {"endpoint": "Admin.*", "subjects": "*", "action": "deny"},
            {"service": "billing", "scope": "billing", "action": "allow"},
            {"service": "billing", "action": "deny"},
        ]))
        .unwrap();
        let admin = acct("carol", &["read", "root"]);
        let bot = acct("ops-bot", &[]);
        let bob = acct("bob", &["read"]);
        assert_eq!(
            rules.decide("s", "Admin.Drop", Some(&admin)),
            Decision::Allow
        );
        assert_eq!(rules.decide("s", "Admin.Drop", Some(&bot)), Decision::Allow);
        assert_eq!(rules.decide("s", "Admin.Drop", Some(&bob)), Decision::Deny);
        assert_eq!(rules.decide("s", "Admin.Drop", None), Decision::Deny);
        assert_eq!(
            rules.check("s", "Admin.Drop", None).unwrap_err().code(),
            401
        );
        // No rule matches: the default lets authenticated callers in.
        assert_eq!(
            rules.decide("s", "Greeter.Hello", Some(&bob)),
            Decision::Allow
        );
        assert_eq!(rules.decide("s", "Greeter.Hello", None), Decision::Deny);
        // Service patterns.
        let payer = acct("p", &["billing"]);
        assert_eq!(
            rules.decide("billing", "Pay.Now", Some(&payer)),
            Decision::Allow
        );
        assert_eq!(
            rules.decide("billing", "Pay.Now", Some(&bob)),
            Decision::Deny
        );
        assert_eq!(rules.decide("shop", "Pay.Now", Some(&bob)), Decision::Allow);
    }

    #[test]
    fn builder_matches_the_file_form() {
        let built = Rules::new()
            .rule(Rule::endpoint("Greeter.Hello").public())
            .rule(
                Rule::endpoint("Admin.*")
                    .scopes(["admin"])
                    .subjects(["root"]),
            )
            .rule(Rule::endpoint("*").deny());
        let parsed = Rules::from_value(&json!([
            {"endpoint": "Greeter.Hello", "public": true},
            {"endpoint": "Admin.*", "subjects": ["root"], "scopes": ["admin"]},
            {"endpoint": "*", "action": "deny"},
        ]))
        .unwrap();
        assert_eq!(built, parsed);
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (value, want) in [
            (
                json!([{"endpoint": "*", "action": "maybe"}]),
                "unknown variant",
            ),
            (json!([{"endpoint": "*", "who": "x"}]), "unknown field"),
            (
                json!([{"endpoint": "*", "public": true, "subjects": ["a"]}]),
                "public rule",
            ),
            (json!([{"endpoint": ""}]), "empty pattern"),
            (json!({"rules": [], "default": "perhaps"}), "allow or deny"),
            (json!(5), "must be a list"),
        ] {
            let e = Rules::from_value(&value).unwrap_err();
            assert_eq!(e.code(), 400);
            assert!(e.detail().contains(want), "{value}: {e}");
        }
    }

    #[test]
    fn rules_files_in_three_formats() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("rules.yaml");
        std::fs::write(
            &yaml,
            "default: deny\nrules:\n  - endpoint: Greeter.*\n    scopes: [greet]\n",
        )
        .unwrap();
        let json = dir.path().join("rules.json");
        std::fs::write(&json, r#"[{"endpoint":"Greeter.*","scopes":["greet"]}]"#).unwrap();
        let toml = dir.path().join("rules.toml");
        std::fs::write(
            &toml,
            "default = \"deny\"\n[[rules]]\nendpoint = \"Greeter.*\"\nscopes = [\"greet\"]\n",
        )
        .unwrap();
        let y = Rules::from_file(&yaml).unwrap();
        let t = Rules::from_file(&toml).unwrap();
        assert_eq!(y, t);
        assert!(y.default_deny);
        let j = Rules::from_file(&json).unwrap();
        assert_eq!(j.rules(), y.rules());
        let e = Rules::from_file(&dir.path().join("missing.yaml")).unwrap_err();
        assert!(e.detail().contains("cannot read"), "{e}");
    }
}
