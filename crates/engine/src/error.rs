//! Errors a user sees, with the exit code each one maps to.
//!
//! Every error that comes from user input (pipeline files, `--set` values, data files,
//! command-line arguments) is an [`Error`] with exit code 2 and, where it has one, the
//! file, line and column it points at. Stage failures are reported by the executor,
//! not through this type, and map to exit code 1.

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

/// A text that values were parsed from: a pipeline file or one `--set` argument.
#[derive(Debug)]
pub struct Source {
    /// How the source is named in messages (a path, or `--set KEY=VALUE`).
    pub name: String,
    /// The whole text.
    pub text: String,
    /// Byte offset of the start of every line.
    line_starts: Vec<usize>,
}

impl Source {
    /// Wraps a text under a display name.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Arc<Source> {
        let text = text.into();
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Arc::new(Source {
            name: name.into(),
            text,
            line_starts,
        })
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line];
        let col = self
            .text
            .get(start..offset)
            .map(|s| s.chars().count())
            .unwrap_or(offset - start);
        (line + 1, col + 1)
    }
}

/// Where a value was written: a source and a byte range in it.
#[derive(Clone, Debug)]
pub struct Loc {
    /// The text the range points into.
    pub source: Arc<Source>,
    /// Byte range of the value or key.
    pub span: Range<usize>,
}

impl Loc {
    /// A location in `source`.
    pub fn new(source: &Arc<Source>, span: Range<usize>) -> Loc {
        Loc {
            source: Arc::clone(source),
            span,
        }
    }

    /// A location for values that do not come from any text (defaults, generated values).
    pub fn builtin() -> Loc {
        thread_local! {
            static BUILTIN: Arc<Source> = Source::new("<default>", "");
        }
        BUILTIN.with(|s| Loc::new(s, 0..0))
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (line, col) = self.source.line_col(self.span.start);
        write!(f, "{}:{}:{}", self.source.name, line, col)
    }
}

/// What kind of failure an [`Error`] is; decides the exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad usage, pipeline or data: exit code 2.
    Usage,
    /// A stage failed while running: exit code 1.
    StageFailed,
}

/// An error for the user: a message that says what is wrong and where.
#[derive(Debug)]
pub struct Error {
    /// Decides the exit code.
    pub kind: ErrorKind,
    /// The full message, location first where there is one.
    pub message: String,
}

impl Error {
    /// A usage, pipeline or data error without a location.
    pub fn usage(message: impl Into<String>) -> Error {
        Error {
            kind: ErrorKind::Usage,
            message: message.into(),
        }
    }

    /// An error at a location, about the key path `key` (may be empty).
    pub fn at(loc: &Loc, key: &str, message: impl fmt::Display) -> Error {
        let message = if key.is_empty() {
            format!("{loc}: {message}")
        } else {
            format!("{loc}: `{key}`: {message}")
        };
        Error {
            kind: ErrorKind::Usage,
            message,
        }
    }

    /// An I/O error on a path.
    pub fn io(path: &Path, err: impl fmt::Display) -> Error {
        Error::usage(format!("{}: {err}", path.display()))
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            ErrorKind::Usage => 2,
            ErrorKind::StageFailed => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// The indefinite article for `word` in a message: `an` before a vowel (`an exec stage`,
/// `an embed stage`), else `a`.
pub fn article(word: &str) -> &'static str {
    match word.trim_start_matches('`').chars().next() {
        Some(c) if "aeiouAEIOU".contains(c) => "an",
        _ => "a",
    }
}

/// Result with the user-facing [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// "did you mean" help: the closest candidate, if close enough.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let best = candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((_, c)) => format!(" (did you mean `{c}`?)"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let s = Source::new("f.toml", "a = 1\nbé = 2\n");
        assert_eq!(s.line_col(0), (1, 1));
        assert_eq!(s.line_col(6), (2, 1));
        // 'é' is two bytes but one column
        assert_eq!(s.line_col(9), (2, 3));
    }

    #[test]
    fn suggestions_only_for_close_words() {
        assert_eq!(
            suggest("epoch", ["epochs", "lr"]),
            " (did you mean `epochs`?)"
        );
        assert_eq!(suggest("zzzzzz", ["epochs", "lr"]), "");
    }
}
