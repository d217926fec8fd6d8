//! PostgreSQL's rules for names, written once for [pgevolve](https://docs.rs/pgevolve): the
//! derive checks the names users write against them, the runtime makes up the names it creates
//! with them. Not public API: use the `pgevolve` crate.
//!
//! A crate of its own, without dependencies, because the derive must not depend on the runtime
//! (it would build sqlx and tokio a second time, for the host).

/// The longest identifier PostgreSQL keeps, in bytes (`NAMEDATALEN - 1`). A longer one is cut
/// silently, so two long names can end up the same.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// The suffix PostgreSQL gives an index it names: `<table>_<columns>_idx`.
pub const INDEX: &str = "idx";
/// The suffix of a unique constraint (and of its index): `<table>_<columns>_key`.
pub const UNIQUE: &str = "key";
/// The suffix of a foreign key: `<table>_<columns>_fkey`.
pub const FOREIGN_KEY: &str = "fkey";
/// The suffix of a CHECK constraint: `<table>_<columns>_check`.
pub const CHECK: &str = "check";

/// How many characters of a step id keep a cut name unique.
const ID_DIGITS: usize = 8;

/// `<table>_<columns>_<suffix>` as it is, whatever its length: the name PostgreSQL gives an
/// index or constraint it is not given a name for (when it fits).
pub fn plain_name<S: AsRef<str>>(table: &str, columns: &[S], suffix: &str) -> String {
    let mut name = table.to_owned();
    for column in columns {
        name.push('_');
        name.push_str(column.as_ref());
    }
    name.push('_');
    name.push_str(suffix);
    name
}

/// [`plain_name`], or, when that exceeds [`MAX_IDENTIFIER_BYTES`], the table and column part
/// cut and the first 8 characters of `id` (a step id) keeping the name unique:
/// `<table>_<columns, cut>_<id>_<suffix>`.
pub fn conventional_name<S: AsRef<str>>(
    table: &str,
    columns: &[S],
    suffix: &str,
    id: &str,
) -> String {
    let plain = plain_name(table, columns, suffix);
    if plain.len() <= MAX_IDENTIFIER_BYTES {
        return plain;
    }
    let mut base = plain;
    base.truncate(base.len() - suffix.len() - 1);
    cut(
        &mut base,
        MAX_IDENTIFIER_BYTES - suffix.len() - ID_DIGITS - 2,
    );
    format!("{base}_{}_{suffix}", &id[..ID_DIGITS])
}

/// The names pgevolve gives its own helper objects: `<prefix>_<table>_<column>` cut to fit, then
/// the first 8 characters of `id` (a step id), which keep the name unique when cut.
pub fn object_name(prefix: &str, table: &str, column: &str, id: &str) -> String {
    let mut base = format!("{prefix}_{table}_{column}");
    cut(&mut base, MAX_IDENTIFIER_BYTES - 1 - ID_DIGITS);
    format!("{base}_{}", &id[..ID_DIGITS])
}

/// Cuts `name` to at most `max` bytes, at a character boundary.
fn cut(name: &mut String, max: usize) {
    if name.len() <= max {
        return;
    }
    let mut end = max;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.truncate(end);
}

/// A column type name as written, in one spelling: lower case, single spaces, no space around
/// parentheses and commas, and PostgreSQL's aliases (`int4`, `character varying`, `decimal`...)
/// replaced by the names `format_type` prints. Two spellings of one type compare equal; it is
/// not a parser, and a name it does not know stays as it is.
pub fn normalized_type(name: &str) -> String {
    let words = name.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut lower = words.to_ascii_lowercase();
    for (from, to) in [
        (" (", "("),
        ("( ", "("),
        (" )", ")"),
        (" ,", ","),
        (", ", ","),
    ] {
        lower = lower.replace(from, to);
    }
    let (base, args) = match lower.find('(') {
        Some(at) => lower.split_at(at),
        None => (lower.as_str(), ""),
    };
    let base = match base {
        "int" | "int4" => "integer",
        "int8" => "bigint",
        "int2" => "smallint",
        "float8" => "double precision",
        "float4" => "real",
        "bool" => "boolean",
        "varchar" => "character varying",
        "char" | "bpchar" => "character",
        "decimal" => "numeric",
        "timestamptz" => "timestamp with time zone",
        "timestamp" => "timestamp without time zone",
        "timetz" => "time with time zone",
        "time" => "time without time zone",
        other => other,
    };
    format!("{base}{args}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_spellings_compare_equal() {
        assert_eq!(normalized_type("VARCHAR (20)"), "character varying(20)");
        assert_eq!(
            normalized_type("character  varying(20)"),
            "character varying(20)"
        );
        assert_eq!(
            normalized_type("numeric(10, 2)"),
            normalized_type("decimal(10,2)")
        );
        assert_eq!(normalized_type("int"), "integer");
        assert_eq!(normalized_type("text[]"), "text[]");
    }

    const ID: &str = "0123456789abcdef";

    #[test]
    fn conventional_names_fit_the_identifier_limit() {
        assert_eq!(
            conventional_name("users", &["email"], INDEX, ID),
            "users_email_idx"
        );
        assert_eq!(
            plain_name("orders", &["a", "b"], FOREIGN_KEY),
            "orders_a_b_fkey"
        );
        let long = "c".repeat(40);
        let name = conventional_name("users", &[&long, &long], UNIQUE, ID);
        assert_eq!(name.len(), MAX_IDENTIFIER_BYTES);
        assert!(name.ends_with("_01234567_key"), "{name}");
        assert!(name.starts_with("users_cccc"), "{name}");
    }

    #[test]
    fn names_are_cut_at_a_character_boundary() {
        let long = "é".repeat(40);
        let name = conventional_name(&long, &["a"], CHECK, ID);
        assert!(name.len() <= MAX_IDENTIFIER_BYTES, "{name}");
        assert!(name.ends_with("_01234567_check"), "{name}");
        let name = object_name("pgevolve_fill", &long, &long, ID);
        assert!(name.len() <= MAX_IDENTIFIER_BYTES, "{name}");
    }

    #[test]
    fn object_names_fit_the_identifier_limit() {
        let long = "x".repeat(80);
        let name = object_name("pgevolve_fill", &long, &long, ID);
        assert_eq!(name.len(), MAX_IDENTIFIER_BYTES);
        assert!(name.ends_with("_01234567"));
        assert_eq!(object_name("p", "t", "c", ID), "p_t_c_01234567");
    }
}
