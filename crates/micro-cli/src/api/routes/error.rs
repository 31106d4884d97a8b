//! [`RoutesError`]: why a routes file was rejected, and where.

use std::fmt;

/// A routes file that cannot be used: it does not parse, or it breaks a rule.
///
/// Displays as `file:line: reason` (`routes.yaml:12: unknown key "metod" in a
/// route; did you mean "method"?`), or `file: reason` when no line applies (the
/// file cannot be read).
///
/// ```
/// use micro_cli::api::routes::Routes;
///
/// let err = Routes::parse("routes:\n  - path: /a\n    handler: grpc\n", "routes.yaml")
///     .unwrap_err();
/// assert_eq!(err.line(), Some(3));
/// assert!(err.to_string().starts_with("routes.yaml:3: unknown handler \"grpc\""));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutesError {
    file: String,
    line: Option<usize>,
    reason: String,
}

impl RoutesError {
    pub(crate) fn at(file: &str, line: usize, reason: impl Into<String>) -> Self {
        RoutesError {
            file: file.to_string(),
            line: Some(line.max(1)),
            reason: reason.into(),
        }
    }

    pub(crate) fn whole_file(file: &str, reason: impl Into<String>) -> Self {
        RoutesError {
            file: file.to_string(),
            line: None,
            reason: reason.into(),
        }
    }

    /// The file, as it was named to [`Routes::parse`](super::Routes::parse) or
    /// [`Routes::load`](super::Routes::load).
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The line (from 1) of the offending key or route; `None` when the file could
    /// not be read at all.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// What is wrong, without the place.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for RoutesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.reason),
            None => write!(f, "{}: {}", self.file, self.reason),
        }
    }
}

impl std::error::Error for RoutesError {}

/// An error found while reading the document tree, before the file name is known
/// to it: a line and a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub(crate) line: usize,
    pub(crate) reason: String,
}

impl Problem {
    pub(crate) fn new(line: usize, reason: impl Into<String>) -> Self {
        Problem {
            line,
            reason: reason.into(),
        }
    }

    pub(crate) fn in_file(self, file: &str) -> RoutesError {
        RoutesError::at(file, self.line, self.reason)
    }
}

/// `Err` of a [`Problem`].
pub(crate) type Checked<T> = Result<T, Problem>;
