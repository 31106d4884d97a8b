//! Reads TOML into the [document tree](super::doc), with the line of every key
//! (spans from `toml_edit`, whose parser also bounds nesting).
//!
//! `[[routes]]` tables are the routes; a route's line is its `[[routes]]` header.

use toml_edit::{ImDocument, InlineTable, Item, Table};

use super::doc::{line_of, Budget, Key, Node, Value, MAX_DEPTH};
use super::error::{Checked, Problem};

/// Parses a TOML document (always a map at the top).
pub(crate) fn read(text: &str) -> Checked<Node> {
    let doc = ImDocument::parse(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(text, s.start));
        Problem::new(line, format!("TOML syntax: {}", e.message().trim()))
    })?;
    let mut reader = Reader {
        text,
        budget: Budget::default(),
    };
    reader.table(doc.as_table(), 1, 0)
}

struct Reader<'a> {
    text: &'a str,
    budget: Budget,
}

impl Reader<'_> {
    fn line(&self, span: Option<std::ops::Range<usize>>, or: usize) -> usize {
        span.map_or(or, |s| line_of(self.text, s.start))
    }

    fn table(&mut self, table: &Table, line: usize, depth: usize) -> Checked<Node> {
        let line = self.line(table.span(), line);
        self.enter(line, depth)?;
        let mut entries = Vec::new();
        for (name, _) in table.iter() {
            let Some((key, item)) = table.get_key_value(name) else {
                continue;
            };
            let key_line = self.line(key.span(), line);
            if let Some(node) = self.item(item, key_line, depth + 1)? {
                entries.push((
                    Key {
                        name: name.to_string(),
                        line: key_line,
                    },
                    node,
                ));
            }
        }
        Ok(Node::new(line, Value::Map(entries)))
    }

    fn inline_table(&mut self, table: &InlineTable, line: usize, depth: usize) -> Checked<Node> {
        let line = self.line(table.span(), line);
        self.enter(line, depth)?;
        let mut entries = Vec::new();
        for (name, _) in table.iter() {
            let Some((key, item)) = table.get_key_value(name) else {
                continue;
            };
            let key_line = self.line(key.span(), line);
            if let Some(node) = self.item(item, key_line, depth + 1)? {
                entries.push((
                    Key {
                        name: name.to_string(),
                        line: key_line,
                    },
                    node,
                ));
            }
        }
        Ok(Node::new(line, Value::Map(entries)))
    }

    fn enter(&mut self, line: usize, depth: usize) -> Checked<()> {
        self.budget.take(1, line)?;
        if depth >= MAX_DEPTH {
            return Err(Problem::new(
                line,
                format!("values are nested more than {MAX_DEPTH} deep"),
            ));
        }
        Ok(())
    }

    fn item(&mut self, item: &Item, line: usize, depth: usize) -> Checked<Option<Node>> {
        Ok(Some(match item {
            Item::None => return Ok(None),
            Item::Value(value) => self.value(value, line, depth)?,
            Item::Table(table) => self.table(table, line, depth)?,
            Item::ArrayOfTables(tables) => {
                let line = self.line(tables.span(), line);
                self.enter(line, depth)?;
                let mut items = Vec::new();
                for table in tables.iter() {
                    items.push(self.table(table, line, depth + 1)?);
                }
                Node::new(line, Value::Seq(items))
            }
        }))
    }

    fn value(&mut self, value: &toml_edit::Value, line: usize, depth: usize) -> Checked<Node> {
        use toml_edit::Value as V;
        let line = self.line(value.span(), line);
        let scalar = |text: String, quoted: bool| Node::new(line, Value::Scalar { text, quoted });
        Ok(match value {
            V::String(s) => scalar(s.value().clone(), true),
            V::Integer(n) => scalar(n.value().to_string(), false),
            V::Float(n) => scalar(n.value().to_string(), false),
            V::Boolean(b) => scalar(b.value().to_string(), false),
            V::Datetime(d) => scalar(d.value().to_string(), false),
            V::Array(array) => {
                self.enter(line, depth)?;
                let mut items = Vec::new();
                for v in array.iter() {
                    items.push(self.value(v, line, depth + 1)?);
                }
                Node::new(line, Value::Seq(items))
            }
            V::InlineTable(table) => self.inline_table(table, line, depth)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_route_tables_carry_their_lines() {
        let text = "fallback = \"none\"\n\n[[routes]]\npath = \"/a\"\nretries = 2\n\n[[routes]]\npath = \"/b\"\ncors = { origins = [\"*\"] }\n";
        let node = read(text).unwrap();
        let Value::Map(top) = &node.value else {
            panic!("not a map")
        };
        assert_eq!((top[0].0.name.as_str(), top[0].0.line), ("fallback", 1));
        let Value::Seq(routes) = &top[1].1.value else {
            panic!("routes not a list: {:?}", top[1])
        };
        assert_eq!(routes[0].line, 3);
        assert_eq!(routes[1].line, 7);
        let Value::Map(first) = &routes[0].value else {
            panic!("route not a map")
        };
        assert_eq!(first[1].0.line, 5);
        assert_eq!(
            first[1].1.value,
            Value::Scalar {
                text: "2".into(),
                quoted: false
            }
        );
        let Value::Map(second) = &routes[1].value else {
            panic!("route not a map")
        };
        assert_eq!(second[1].0.line, 9);
    }

    #[test]
    fn syntax_errors_have_the_parser_line() {
        let err = read("a = 1\nb = [1, 2\nc = 3\n").unwrap_err();
        assert!(err.reason.starts_with("TOML syntax"), "{err:?}");
        assert!(err.line >= 2, "{err:?}");
        let err = read("a = 1\nb = = 2\n").unwrap_err();
        assert_eq!(err.line, 2, "{err:?}");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("a = {}", "[".repeat(5_000));
        assert!(read(&deep).is_err());
    }
}
