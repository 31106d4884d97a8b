//! Path patterns (`/hello/{name}`, `/files/{id}.json`, `/legacy/{rest*}`) and the
//! templates that use what they capture (`Greeter.{method}`, `/{rest*}`).
//!
//! A pattern is a list of segments. A segment is literal text, or one `{param}`
//! with optional literal text around it (`{id}.json`), which matches a non-empty
//! part of one path segment; `{rest*}`, a whole last segment, matches the rest of
//! the path (zero or more segments: `/legacy/{rest*}` matches `/legacy` too, with
//! `rest` empty). A trailing `/` is not significant, in patterns or paths.
//! Literals compare exactly (case matters), or after percent-decoding the path.

use std::borrow::Cow;

/// A compiled path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param {
        name: String,
        prefix: String,
        suffix: String,
    },
    Rest(String),
}

/// What a path gave a pattern's parameters: `(name, raw value)` in pattern order;
/// values are as in the path (not percent-decoded).
pub(crate) type Captures<'a> = Vec<(&'a str, &'a str)>;

impl Pattern {
    /// Compiles `text`; the error says what is wrong with it.
    pub(crate) fn parse(text: &str) -> Result<Pattern, String> {
        let Some(body) = text.strip_prefix('/') else {
            return Err(format!("path {text:?} must start with /"));
        };
        if let Some(c) = text
            .chars()
            .find(|c| c.is_whitespace() || *c == '?' || *c == '#')
        {
            return Err(format!(
                "path {text:?} holds {c:?}; a pattern is a path only (no spaces, query or fragment)"
            ));
        }
        let body = body.strip_suffix('/').unwrap_or(body);
        let mut segments = Vec::new();
        if !body.is_empty() {
            let parts: Vec<&str> = body.split('/').collect();
            for (i, part) in parts.iter().enumerate() {
                let segment = parse_segment(text, part)?;
                if let Segment::Rest(name) = &segment {
                    if i + 1 != parts.len() {
                        return Err(format!(
                            "path {text:?}: {{{name}*}} matches the rest of the path, so it must be the last segment"
                        ));
                    }
                }
                if let Some(name) = segment_param(&segment) {
                    if segments
                        .iter()
                        .filter_map(segment_param)
                        .any(|other| other == name)
                    {
                        return Err(format!("path {text:?}: parameter {{{name}}} appears twice"));
                    }
                }
                segments.push(segment);
            }
        }
        Ok(Pattern {
            text: text.to_string(),
            segments,
        })
    }

    /// The pattern as written.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern has a parameter called `name` (`rest` for `{rest*}`).
    pub(crate) fn has_param(&self, name: &str) -> bool {
        self.segments
            .iter()
            .filter_map(segment_param)
            .any(|p| p == name)
    }

    /// The parameters, in order.
    pub(crate) fn params(&self) -> impl Iterator<Item = &str> + '_ {
        self.segments.iter().filter_map(segment_param)
    }

    /// Matches a request path (starting with `/`, no query); the captures on a match.
    pub(crate) fn matches<'a>(&'a self, path: &'a str) -> Option<Captures<'a>> {
        let body = path.strip_prefix('/')?;
        let mut pos = 0;
        let mut captures = Vec::new();
        for segment in &self.segments {
            if let Segment::Rest(name) = segment {
                captures.push((name.as_str(), body.get(pos..).unwrap_or("")));
                return Some(captures);
            }
            let remaining = body.get(pos..).filter(|r| !r.is_empty())?;
            let (current, next) = match remaining.find('/') {
                Some(i) => (&remaining[..i], pos + i + 1),
                None => (remaining, body.len() + 1),
            };
            match segment {
                Segment::Literal(literal) => {
                    if current != literal
                        && !(current.contains('%') && decode(current) == literal.as_str())
                    {
                        return None;
                    }
                }
                Segment::Param {
                    name,
                    prefix,
                    suffix,
                } => {
                    if current.len() <= prefix.len() + suffix.len()
                        || !current.starts_with(prefix.as_str())
                        || !current.ends_with(suffix.as_str())
                    {
                        return None;
                    }
                    let value = &current[prefix.len()..current.len() - suffix.len()];
                    captures.push((name.as_str(), value));
                }
                Segment::Rest(_) => unreachable!("handled above"),
            }
            pos = next;
        }
        // Every segment of the path is used (a trailing `/` is fine).
        (pos >= body.len()).then_some(captures)
    }
}

fn segment_param(segment: &Segment) -> Option<&str> {
    match segment {
        Segment::Literal(_) => None,
        Segment::Param { name, .. } | Segment::Rest(name) => Some(name),
    }
}

fn parse_segment(text: &str, part: &str) -> Result<Segment, String> {
    if part.is_empty() {
        return Err(format!("path {text:?} has an empty segment (//)"));
    }
    let opens = part.matches('{').count();
    let closes = part.matches('}').count();
    if opens == 0 && closes == 0 {
        return Ok(Segment::Literal(part.to_string()));
    }
    let (Some(open), Some(close)) = (part.find('{'), part.find('}')) else {
        return Err(format!("path {text:?} has unbalanced braces in {part:?}"));
    };
    if opens != closes || close < open {
        return Err(format!("path {text:?} has unbalanced braces in {part:?}"));
    }
    if opens > 1 {
        return Err(format!(
            "path {text:?}: segment {part:?} holds more than one {{param}}; use one per segment"
        ));
    }
    let prefix = &part[..open];
    let inner = &part[open + 1..close];
    let suffix = &part[close + 1..];
    if let Some(name) = inner.strip_suffix('*') {
        check_name(text, name)?;
        if !prefix.is_empty() || !suffix.is_empty() {
            return Err(format!(
                "path {text:?}: {{{name}*}} must be a whole segment, not part of {part:?}"
            ));
        }
        return Ok(Segment::Rest(name.to_string()));
    }
    check_name(text, inner)?;
    Ok(Segment::Param {
        name: inner.to_string(),
        prefix: prefix.to_string(),
        suffix: suffix.to_string(),
    })
}

/// A parameter name: letters, digits, `_`, `-` and `.` (a nested field, `user.id`).
fn check_name(text: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!(
            "path {text:?} has an empty {{}}; name the parameter"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(format!(
            "path {text:?}: parameter name {name:?} may hold only letters, digits, _, - and ."
        ));
    }
    Ok(())
}

/// Text with `{param}`s filled from a path's captures (`Greeter.{method}`,
/// `/v2/{rest*}`); `{rest}` and `{rest*}` are the same parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Param(String),
}

impl Template {
    /// Compiles `text`, whose parameters must all be captured by `pattern`.
    pub(crate) fn parse(text: &str, pattern: &Pattern) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err(format!("{text:?} has unbalanced braces"));
            }
            let Some(len) = rest[open + 1..].find(['{', '}']) else {
                return Err(format!("{text:?} has unbalanced braces"));
            };
            let close = open + 1 + len;
            if rest.as_bytes()[close] == b'{' {
                return Err(format!("{text:?} has unbalanced braces"));
            }
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let inner = &rest[open + 1..close];
            let name = inner.strip_suffix('*').unwrap_or(inner);
            if !pattern.has_param(name) {
                let known: Vec<String> = pattern.params().map(|p| format!("{{{p}}}")).collect();
                return Err(format!(
                    "{text:?} uses {{{name}}}, which path {:?} does not capture{}",
                    pattern.as_str(),
                    if known.is_empty() {
                        String::new()
                    } else {
                        format!(" (it captures {})", known.join(", "))
                    }
                ));
            }
            parts.push(Part::Param(name.to_string()));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// Whether the text has no parameters.
    pub(crate) fn literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// The text as written (parameters as `{name}`).
    pub(crate) fn source(&self) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.clone(),
                Part::Param(n) => format!("{{{n}}}"),
            })
            .collect()
    }

    /// Fills the parameters with `value(name)`.
    pub(crate) fn render<'a>(&self, value: impl Fn(&str) -> Cow<'a, str>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Param(name) => out.push_str(&value(name)),
            }
        }
        out
    }
}

/// Percent-decodes a path part; the raw text when it is not valid UTF-8 after.
pub(crate) fn decode(raw: &str) -> Cow<'_, str> {
    if !raw.contains('%') {
        return Cow::Borrowed(raw);
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).map_or(Cow::Borrowed(raw), Cow::Owned)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(pattern: &str, path: &str) -> Option<Vec<(String, String)>> {
        let p = Pattern::parse(pattern).unwrap();
        p.matches(path).map(|c| {
            c.into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
    }

    fn pairs(list: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn literals_match_exactly() {
        assert_eq!(caps("/hello", "/hello"), pairs(&[]));
        assert_eq!(caps("/hello", "/hello/"), pairs(&[]));
        assert_eq!(caps("/hello/", "/hello"), pairs(&[]));
        assert_eq!(caps("/hello", "/Hello"), None);
        assert_eq!(caps("/hello", "/hello/x"), None);
        assert_eq!(caps("/hello/x", "/hello"), None);
        assert_eq!(caps("/hello", "/"), None);
        assert_eq!(caps("/", "/"), pairs(&[]));
        assert_eq!(caps("/", "/a"), None);
        assert_eq!(caps("/a/b", "/a//b"), None);
    }

    #[test]
    fn percent_encoded_literals_match() {
        assert_eq!(caps("/say-hello", "/say%2Dhello"), pairs(&[]));
    }

    #[test]
    fn params_match_one_non_empty_segment() {
        assert_eq!(
            caps("/hello/{name}", "/hello/john"),
            pairs(&[("name", "john")])
        );
        assert_eq!(
            caps("/hello/{name}", "/hello/john/"),
            pairs(&[("name", "john")])
        );
        assert_eq!(caps("/hello/{name}", "/hello/"), None);
        assert_eq!(caps("/hello/{name}", "/hello"), None);
        assert_eq!(caps("/hello/{name}", "/hello/a/b"), None);
        assert_eq!(
            caps("/{a}/x/{b}", "/1/x/2"),
            pairs(&[("a", "1"), ("b", "2")])
        );
        assert_eq!(
            caps("/files/{id}.json", "/files/42.json"),
            pairs(&[("id", "42")])
        );
        assert_eq!(caps("/files/{id}.json", "/files/.json"), None);
        assert_eq!(caps("/files/{id}.json", "/files/42.xml"), None);
        assert_eq!(caps("/files/v{n}", "/files/v2"), pairs(&[("n", "2")]));
    }

    #[test]
    fn rest_takes_the_remainder() {
        assert_eq!(
            caps("/legacy/{rest*}", "/legacy/a/b/c"),
            pairs(&[("rest", "a/b/c")])
        );
        assert_eq!(
            caps("/legacy/{rest*}", "/legacy/a/b/"),
            pairs(&[("rest", "a/b/")])
        );
        assert_eq!(caps("/legacy/{rest*}", "/legacy"), pairs(&[("rest", "")]));
        assert_eq!(caps("/legacy/{rest*}", "/legacy/"), pairs(&[("rest", "")]));
        assert_eq!(caps("/legacy/{rest*}", "/legacyx/a"), None);
        assert_eq!(caps("/{all*}", "/"), pairs(&[("all", "")]));
        assert_eq!(caps("/{all*}", "/x/%2F/y"), pairs(&[("all", "x/%2F/y")]));
    }

    #[test]
    fn bad_patterns_say_why() {
        let err = |p: &str| Pattern::parse(p).unwrap_err();
        assert!(err("hello").contains("must start with /"));
        assert!(err("/a/{b").contains("unbalanced braces"));
        assert!(err("/a/b}").contains("unbalanced braces"));
        assert!(err("/a/}b{").contains("unbalanced braces"));
        assert!(err("/a/{b}/{b}").contains("appears twice"));
        assert!(err("/a/{b}/c/{b*}").contains("appears twice"));
        assert!(err("/a/{rest*}/b").contains("must be the last segment"));
        assert!(err("/a/x{rest*}").contains("whole segment"));
        assert!(err("/a/{}").contains("empty {}"));
        assert!(err("/a/{x}{y}").contains("more than one"));
        assert!(err("/a//b").contains("empty segment"));
        assert!(err("/a b").contains("no spaces"));
        assert!(err("/a?x=1").contains("query"));
        assert!(err("/a/{x y}").contains("no spaces"));
        assert!(err("/a/{x$}").contains("parameter name"));
    }

    #[test]
    fn templates_fill_and_check_params() {
        let p = Pattern::parse("/api/{svc}/{method}/{rest*}").unwrap();
        let t = Template::parse("{svc}.{method}", &p).unwrap();
        assert_eq!(t.literal(), None);
        let out = t.render(|n| Cow::Owned(n.to_uppercase()));
        assert_eq!(out, "SVC.METHOD");
        let t = Template::parse("/x/{rest*}", &p).unwrap();
        assert_eq!(t.source(), "/x/{rest}");
        assert_eq!(
            Template::parse("Greeter.Hello", &p).unwrap().literal(),
            Some("Greeter.Hello")
        );
        assert!(Template::parse("{nope}", &p)
            .unwrap_err()
            .contains("does not capture"));
        assert!(Template::parse("{svc", &p)
            .unwrap_err()
            .contains("unbalanced"));
        assert!(Template::parse("svc}", &p)
            .unwrap_err()
            .contains("unbalanced"));
        assert!(Template::parse("{{svc}}", &p)
            .unwrap_err()
            .contains("unbalanced"));
    }

    #[test]
    fn decoding() {
        assert_eq!(decode("John%20Smith"), "John Smith");
        assert_eq!(decode("plain"), "plain");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
        assert_eq!(decode("%e2%82%ac"), "€");
        assert_eq!(decode("%ff"), "%ff");
        assert_eq!(decode("%4"), "%4");
    }
}
