//! Reads YAML into the [document tree](super::doc), with the line of every value.
//!
//! The parser's events are folded into the tree with an explicit stack (no
//! recursion, so hostile nesting cannot overflow the stack); anchors and aliases
//! work, within the file's value budget.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::TScalarStyle;

use super::doc::{count, Budget, Key, Node, Value, MAX_DEPTH};
use super::error::{Checked, Problem};

/// Parses one YAML document. An empty file is `Null`.
pub(crate) fn read(text: &str) -> Checked<Node> {
    // The parser may place an error at the end of input on a line past the last.
    let last_line =
        1 + text.matches('\n').count() + text.matches('\r').count() - text.matches("\r\n").count();
    let mut parser = Parser::new_from_str(text);
    let mut builder = Builder::default();
    let mut documents = 0;
    loop {
        let (event, mark) = parser.next_token().map_err(|e| {
            let line = e.marker().line().clamp(1, last_line);
            Problem::new(line, format!("YAML syntax: {}", e.info()))
        })?;
        let line = mark.line().clamp(1, last_line);
        match event {
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => {}
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(Problem::new(
                        line,
                        "the file holds more than one YAML document (`---`); \
                         put every route in one",
                    ));
                }
            }
            Event::Alias(id) => {
                let node = builder.anchors.get(&id).cloned().ok_or_else(|| {
                    Problem::new(line, "an alias names an anchor that is not defined")
                })?;
                builder.budget.take(count(&node), line)?;
                builder.deliver(Node { line, ..node }, 0)?;
            }
            Event::Scalar(text, style, anchor, _tag) => {
                builder.budget.take(1, line)?;
                let value = if style == TScalarStyle::Plain {
                    match text.as_str() {
                        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
                        _ => Value::Scalar {
                            text,
                            quoted: false,
                        },
                    }
                } else {
                    Value::Scalar { text, quoted: true }
                };
                builder.deliver(Node::new(line, value), anchor)?;
            }
            Event::SequenceStart(anchor, _tag) => builder.open(Frame {
                line,
                anchor,
                kind: FrameKind::Seq(Vec::new()),
            })?,
            Event::MappingStart(anchor, _tag) => builder.open(Frame {
                line,
                anchor,
                kind: FrameKind::Map(Vec::new(), None),
            })?,
            Event::SequenceEnd | Event::MappingEnd => builder.close(line)?,
        }
    }
    Ok(builder.root.unwrap_or(Node::new(1, Value::Null)))
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    anchors: HashMap<usize, Node>,
    budget: Budget,
}

struct Frame {
    line: usize,
    anchor: usize,
    kind: FrameKind,
}

enum FrameKind {
    Seq(Vec<Node>),
    /// Entries so far, and a key waiting for its value.
    Map(Vec<(Key, Node)>, Option<Key>),
}

impl Builder {
    fn open(&mut self, frame: Frame) -> Checked<()> {
        self.budget.take(1, frame.line)?;
        if self.stack.len() >= MAX_DEPTH {
            return Err(Problem::new(
                frame.line,
                format!("values are nested more than {MAX_DEPTH} deep"),
            ));
        }
        self.stack.push(frame);
        Ok(())
    }

    fn close(&mut self, line: usize) -> Checked<()> {
        let frame = self
            .stack
            .pop()
            .ok_or_else(|| Problem::new(line, "YAML syntax: unbalanced end of a list or map"))?;
        let value = match frame.kind {
            FrameKind::Seq(items) => Value::Seq(items),
            FrameKind::Map(entries, None) => Value::Map(entries),
            FrameKind::Map(_, Some(key)) => {
                return Err(Problem::new(
                    key.line,
                    format!("key {:?} has no value", key.name),
                ))
            }
        };
        self.deliver(Node::new(frame.line, value), frame.anchor)
    }

    /// Places a finished value: in the open list or map, or as the document.
    fn deliver(&mut self, node: Node, anchor: usize) -> Checked<()> {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let Some(top) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        match &mut top.kind {
            FrameKind::Seq(items) => items.push(node),
            FrameKind::Map(entries, pending) => match pending.take() {
                Some(key) => entries.push((key, node)),
                None => {
                    let name = match node.value {
                        Value::Scalar { text, .. } => text,
                        Value::Null => {
                            return Err(Problem::new(node.line, "a key is empty"));
                        }
                        _ => {
                            return Err(Problem::new(
                                node.line,
                                format!("a key must be a name, not {}", node.kind()),
                            ));
                        }
                    };
                    if entries.iter().any(|(k, _)| k.name == name) {
                        return Err(Problem::new(
                            node.line,
                            format!("key {name:?} appears twice in the same map"),
                        ));
                    }
                    *pending = Some(Key {
                        name,
                        line: node.line,
                    });
                }
            },
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(text: &str, quoted: bool) -> Value {
        Value::Scalar {
            text: text.into(),
            quoted,
        }
    }

    #[test]
    fn values_carry_their_lines() {
        let node = read("# comment\na: 1\nb:\n  - x\n  - 'y'\nc: ~\n").unwrap();
        let Value::Map(entries) = &node.value else {
            panic!("not a map: {node:?}")
        };
        let lines: Vec<(&str, usize)> = entries
            .iter()
            .map(|(k, _)| (k.name.as_str(), k.line))
            .collect();
        assert_eq!(lines, [("a", 2), ("b", 3), ("c", 6)]);
        assert_eq!(entries[0].1.value, scalar("1", false));
        let Value::Seq(items) = &entries[1].1.value else {
            panic!("not a list")
        };
        assert_eq!((items[0].line, &items[0].value), (4, &scalar("x", false)));
        assert_eq!((items[1].line, &items[1].value), (5, &scalar("y", true)));
        assert_eq!(entries[2].1.value, Value::Null);
    }

    #[test]
    fn aliases_copy_their_anchor() {
        let node = read("a: &x {k: v}\nb: *x\n").unwrap();
        let Value::Map(entries) = &node.value else {
            panic!("not a map")
        };
        assert_eq!(entries[0].1.value, entries[1].1.value);
        assert_eq!(entries[1].1.line, 2);
    }

    #[test]
    fn hostile_input_is_an_error_not_a_crash() {
        let deep = "[".repeat(10_000);
        assert!(read(&deep).is_err());
        // A billion laughs stops at the value budget.
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = (b'a' + i - 1) as char;
            let name = (b'a' + i) as char;
            bomb.push_str(&format!(
                "{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
        }
        let err = read(&bomb).unwrap_err();
        assert!(err.reason.contains("more than"), "{err:?}");
    }

    #[test]
    fn duplicate_keys_and_documents_are_errors() {
        let err = read("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.line, 3);
        let err = read("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(err.line, 2);
    }

    #[test]
    fn syntax_errors_have_the_parser_line() {
        let err = read("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert!(err.reason.starts_with("YAML syntax"), "{err:?}");
        assert!(err.line >= 2, "{err:?}");
        let err = read("a: 1\n  b: 2\n").unwrap_err();
        assert_eq!(err.line, 2, "{err:?}");
    }
}
