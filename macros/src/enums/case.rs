//! The label a variant gets from `#[sqlx(rename_all = "...")]`, as sqlx derives it, so the
//! labels pgevolve creates are the labels sqlx encodes.

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
    match rule {
        "lowercase" => ident.to_lowercase(),
        "UPPERCASE" => ident.to_uppercase(),
        "snake_case" => words(ident).join("_"),
        "SCREAMING_SNAKE_CASE" => words(ident).join("_").to_uppercase(),
        "kebab-case" => words(ident).join("-"),
        "camelCase" => {
            let pascal = ident.replace('_', "");
            let mut chars = pascal.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => String::new(),
            }
        }
        _ => ident.to_string(),
    }
}

/// The lowercase words of a PascalCase identifier (`InTransit` → `in`, `transit`).
fn words(ident: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for (i, ch) in ident.char_indices() {
        if ch == '_' {
            words.push(String::new());
        } else if ch.is_uppercase() && i > 0 && !ident[..i].ends_with('_') {
            words.push(ch.to_lowercase().collect());
        } else if let Some(last) = words.last_mut() {
            last.extend(ch.to_lowercase());
        } else {
            words.push(ch.to_lowercase().collect());
        }
    }
    words.retain(|w| !w.is_empty());
    words
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
}
