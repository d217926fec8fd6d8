//! Quoting of identifiers and literals in generated SQL. Every identifier is quoted, always.

use std::fmt;

/// An identifier, rendered with double quotes (`"users"`), embedded quotes doubled.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ident<'a>(pub &'a str);

impl fmt::Display for Ident<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.replace('"', "\"\""))
    }
}

/// `"schema"."name"`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Qualified<'a>(pub &'a str, pub &'a str);

impl fmt::Display for Qualified<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", Ident(self.0), Ident(self.1))
    }
}

/// A string literal, rendered with single quotes (`'it''s'`). Only for values pgevolve produces
/// itself; user values travel as bind parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Literal<'a>(pub &'a str);

impl fmt::Display for Literal<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}'", self.0.replace('\'', "''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_embedded_quotes() {
        assert_eq!(Ident("a\"b").to_string(), "\"a\"\"b\"");
        assert_eq!(Literal("it's").to_string(), "'it''s'");
        assert_eq!(
            Qualified("public", "users").to_string(),
            "\"public\".\"users\""
        );
    }
}
