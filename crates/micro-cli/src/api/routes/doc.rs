//! The document tree a routes file is read into, whatever its format: maps, lists
//! and scalars, each with the line it starts on, so that every rule broken later
//! can name its line.
//!
//! Scalars keep their text: `retries: 2`, `retries: "2"` (YAML) and `retries = 2`
//! (TOML) read the same, and each rule decides what text it accepts.

use super::error::{Checked, Problem};

/// The most values a file may hold (aliases included): a bound for hostile input.
pub(crate) const MAX_NODES: usize = 100_000;
/// The deepest nesting a file may have.
pub(crate) const MAX_DEPTH: usize = 64;

/// One value of the file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    /// The line (from 1) it starts on.
    pub(crate) line: usize,
    pub(crate) value: Value,
}

/// A key of a map, with its line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Key {
    pub(crate) name: String,
    pub(crate) line: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// An absent value: YAML `~`, `null` or nothing.
    Null,
    /// A string, number or boolean, as written. `quoted` is true for YAML quoted
    /// or block scalars and TOML strings: those are never booleans.
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    /// Keys in file order; no key twice.
    Map(Vec<(Key, Node)>),
}

impl Node {
    pub(crate) fn new(line: usize, value: Value) -> Self {
        Node { line, value }
    }

    /// What the value is, for messages: "a list", "a map", "a string", "nothing".
    pub(crate) fn kind(&self) -> &'static str {
        match &self.value {
            Value::Null => "nothing",
            Value::Scalar { .. } => "a single value",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a map",
        }
    }

    /// The entries of a map; `what` names the value in the error otherwise.
    pub(crate) fn map(&self, what: &str) -> Checked<&[(Key, Node)]> {
        match &self.value {
            Value::Map(entries) => Ok(entries),
            _ => Err(Problem::new(
                self.line,
                format!("{what} must be a map of keys, not {}", self.kind()),
            )),
        }
    }

    /// The text of a scalar (a number or boolean as written).
    pub(crate) fn text(&self, what: &str) -> Checked<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Ok(text),
            _ => Err(Problem::new(
                self.line,
                format!("{what} must be a single value, not {}", self.kind()),
            )),
        }
    }

    /// A non-empty string.
    pub(crate) fn string(&self, what: &str) -> Checked<&str> {
        let text = self.text(what)?.trim();
        if text.is_empty() {
            return Err(Problem::new(self.line, format!("{what} is empty")));
        }
        Ok(text)
    }

    /// `true` or `false`.
    pub(crate) fn boolean(&self, what: &str) -> Checked<bool> {
        if let Value::Scalar {
            text,
            quoted: false,
        } = &self.value
        {
            match text.as_str() {
                "true" | "True" | "TRUE" => return Ok(true),
                "false" | "False" | "FALSE" => return Ok(false),
                _ => {}
            }
        }
        Err(Problem::new(
            self.line,
            format!("{what} must be true or false"),
        ))
    }

    /// A whole number from 0 to `u32::MAX`.
    pub(crate) fn unsigned(&self, what: &str) -> Checked<u32> {
        let text = self.text(what)?.trim();
        text.parse::<u32>().map_err(|_| {
            Problem::new(
                self.line,
                format!("{what} must be a whole number (0 or more), not {text:?}"),
            )
        })
    }

    /// A finite number.
    pub(crate) fn number(&self, what: &str) -> Checked<f64> {
        let text = self.text(what)?.trim();
        match text.parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(n),
            _ => Err(Problem::new(
                self.line,
                format!("{what} must be a number, not {text:?}"),
            )),
        }
    }

    /// One string or a list of strings (`method: GET` and `method: [GET, POST]`).
    pub(crate) fn strings(&self, what: &str) -> Checked<Vec<(usize, &str)>> {
        match &self.value {
            Value::Seq(items) => items
                .iter()
                .map(|item| Ok((item.line, item.string(what)?)))
                .collect(),
            _ => Ok(vec![(self.line, self.string(what)?)]),
        }
    }
}

/// Counts values as they are made, and fails past [`MAX_NODES`].
#[derive(Debug, Default)]
pub(crate) struct Budget {
    used: usize,
}

impl Budget {
    pub(crate) fn take(&mut self, n: usize, line: usize) -> Checked<()> {
        self.used = self.used.saturating_add(n);
        if self.used > MAX_NODES {
            return Err(Problem::new(
                line,
                format!(
                    "the file holds more than {MAX_NODES} values; a routes file is much smaller"
                ),
            ));
        }
        Ok(())
    }
}

/// How many values `node` holds, itself included (iteratively: no deep recursion).
pub(crate) fn count(node: &Node) -> usize {
    let mut n = 0;
    let mut stack = vec![node];
    while let Some(node) = stack.pop() {
        n += 1;
        match &node.value {
            Value::Seq(items) => stack.extend(items.iter()),
            Value::Map(entries) => stack.extend(entries.iter().map(|(_, v)| v)),
            _ => {}
        }
    }
    n
}

/// The line (from 1) of byte `offset` in `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The closest of `candidates` to `word`, if close enough to be a typo.
pub(crate) fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4) && *d < c.len().max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_only() {
        let keys = ["path", "method", "service", "endpoint", "timeout"];
        assert_eq!(did_you_mean("metod", &keys), Some("method"));
        assert_eq!(did_you_mean("Servce", &keys), Some("service"));
        assert_eq!(did_you_mean("endpont", &keys), Some("endpoint"));
        assert_eq!(did_you_mean("colour", &keys), None);
        assert_eq!(did_you_mean("x", &keys), None);
    }

    #[test]
    fn lines_count_from_one() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 4), 3);
        assert_eq!(line_of("a\nb\nc", 400), 3);
    }
}
