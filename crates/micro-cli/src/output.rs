//! Printing: aligned tables for people.

use std::io::Write;

/// Prints one line to stdout and flushes (streams show each message at once).
/// A reader that went away (`micro get service x | head`) ends the program quietly,
/// as it does for other command-line tools.
pub fn print_line(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let written = writeln!(out, "{text}").and_then(|()| out.flush());
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => Ok(other?),
    }
}

/// A table with a header row, printed with columns padded to their widest cell.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Table {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, no trailing spaces.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        self.rows
            .iter()
            .map(|row| {
                let line: Vec<String> = row
                    .iter()
                    .enumerate()
                    .map(|(c, cell)| format!("{cell:<width$}", width = widths[c]))
                    .collect();
                line.join("  ").trim_end().to_string()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Prints the table.
    pub fn print(&self) -> anyhow::Result<()> {
        print_line(&self.render())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let mut t = Table::new(&["NAME", "NODES"]);
        t.row(vec!["greeter".into(), "2".into()]);
        t.row(vec!["x".into(), "10".into()]);
        assert_eq!(t.render(), "NAME     NODES\ngreeter  2\nx        10");
    }
}
