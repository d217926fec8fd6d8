//! The label a variant gets from `#[sqlx(rename_all = "...")]`, as sqlx derives it, so the
//! labels pgevolve creates are the labels sqlx encodes.
//!
//! sqlx applies the `heck` crate's conversions (`to_snake_case`, `to_shouty_snake_case`,
//! `to_kebab_case`, `to_lower_camel_case`, `to_upper_camel_case`) and `str::to_lowercase` /
//! `to_uppercase`. [`words`] splits an identifier as `heck` does, so acronyms come out the same:
//! `HTTPError` is `http_error`, `httpError`, `HttpError`.

/// The `rename_all` rules sqlx accepts.
pub const RULES: &[&str] = &[
    "lowercase",
    "UPPERCASE",
    "snake_case",
    "SCREAMING_SNAKE_CASE",
    "kebab-case",
    "camelCase",
    "PascalCase",
];

/// `ident` under `rule` (one of [`RULES`]).
pub fn apply(rule: &str, ident: &str) -> String {
    let words = words(ident);
    let lower = || words.iter().map(|w| w.to_lowercase()).collect::<Vec<_>>();
    match rule {
        "lowercase" => ident.to_lowercase(),
        "UPPERCASE" => ident.to_uppercase(),
        "snake_case" => lower().join("_"),
        "SCREAMING_SNAKE_CASE" => words
            .iter()
            .map(|w| w.to_uppercase())
            .collect::<Vec<_>>()
            .join("_"),
        "kebab-case" => lower().join("-"),
        "camelCase" => words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                if i == 0 {
                    w.to_lowercase()
                } else {
                    capitalize(w)
                }
            })
            .collect(),
        "PascalCase" => words.iter().map(|w| capitalize(w)).collect(),
        _ => ident.to_string(),
    }
}

/// The first character uppercase, the rest lowercase (`heck`'s capitalization of a word).
fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first
            .to_uppercase()
            .chain(chars.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

/// The words of an identifier, split as `heck` splits them: at every character that is not
/// alphanumeric (`_`), before an uppercase letter that follows a lowercase one (or a digit
/// after one), and before the last capital of a run of capitals followed by a lowercase letter
/// (`HTTPError` → `HTTP`, `Error`).
fn words(ident: &str) -> Vec<&str> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        Boundary,
        Lowercase,
        Uppercase,
    }
    let mut out = Vec::new();
    for word in ident.split(|c: char| !c.is_alphanumeric()) {
        let mut chars = word.char_indices().peekable();
        let (mut start, mut mode) = (0, Mode::Boundary);
        while let Some((i, c)) = chars.next() {
            let Some(&(next_i, next)) = chars.peek() else {
                out.push(&word[start..]);
                break;
            };
            let next_mode = if c.is_lowercase() {
                Mode::Lowercase
            } else if c.is_uppercase() {
                Mode::Uppercase
            } else {
                mode
            };
            if next_mode == Mode::Lowercase && next.is_uppercase() {
                out.push(&word[start..next_i]);
                (start, mode) = (next_i, Mode::Boundary);
            } else if mode == Mode::Uppercase && c.is_uppercase() && next.is_lowercase() {
                out.push(&word[start..i]);
                (start, mode) = (i, Mode::Boundary);
            } else {
                mode = next_mode;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::apply;

    #[test]
    fn rules_follow_sqlx() {
        assert_eq!(apply("snake_case", "InTransit"), "in_transit");
        assert_eq!(apply("SCREAMING_SNAKE_CASE", "InTransit"), "IN_TRANSIT");
        assert_eq!(apply("kebab-case", "InTransit"), "in-transit");
        assert_eq!(apply("camelCase", "InTransit"), "inTransit");
        assert_eq!(apply("lowercase", "InTransit"), "intransit");
        assert_eq!(apply("PascalCase", "InTransit"), "InTransit");
    }

    /// What `heck` (through sqlx) gives an acronym: one word, capitalized as a word.
    #[test]
    fn acronyms_are_one_word_as_in_sqlx() {
        for (rule, label) in [
            ("snake_case", "http_error"),
            ("SCREAMING_SNAKE_CASE", "HTTP_ERROR"),
            ("kebab-case", "http-error"),
            ("camelCase", "httpError"),
            ("PascalCase", "HttpError"),
            ("lowercase", "httperror"),
            ("UPPERCASE", "HTTPERROR"),
        ] {
            assert_eq!(apply(rule, "HTTPError"), label, "{rule}");
        }
        assert_eq!(apply("snake_case", "GetHTTP"), "get_http");
        assert_eq!(apply("snake_case", "ABC"), "abc");
        assert_eq!(apply("snake_case", "Http2Error"), "http2_error");
        assert_eq!(apply("snake_case", "V2"), "v2");
        assert_eq!(apply("snake_case", "Already_Snake"), "already_snake");
        assert_eq!(apply("PascalCase", "already_snake"), "AlreadySnake");
    }

    /// Against `heck` itself, which sqlx's derive calls for each rule.
    #[test]
    fn every_rule_gives_what_heck_gives() {
        use heck::{
            ToKebabCase, ToLowerCamelCase, ToShoutySnakeCase, ToSnakeCase, ToUpperCamelCase,
        };
        for ident in [
            "Pending",
            "InTransit",
            "HTTPError",
            "GetHTTP",
            "ABC",
            "Http2Error",
            "V2",
            "V2Beta",
            "IOErr",
            "Already_Snake",
            "already_snake",
            "A",
            "XMLHttpRequest",
            "Utf8",
        ] {
            assert_eq!(apply("snake_case", ident), ident.to_snake_case(), "{ident}");
            assert_eq!(
                apply("SCREAMING_SNAKE_CASE", ident),
                ident.to_shouty_snake_case(),
                "{ident}"
            );
            assert_eq!(apply("kebab-case", ident), ident.to_kebab_case(), "{ident}");
            assert_eq!(
                apply("camelCase", ident),
                ident.to_lower_camel_case(),
                "{ident}"
            );
            assert_eq!(
                apply("PascalCase", ident),
                ident.to_upper_camel_case(),
                "{ident}"
            );
        }
    }
}
