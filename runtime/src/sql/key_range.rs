//! A walk over a table's primary key (possibly composite), as the SQL of its batches names it:
//! the quoted key columns, their aliases (`__pgevolve_k0..`), a bound as typed values, the last
//! key as text and the key order reversed. The backfill pass (`backfill.rs`), the Rust-computed
//! walk (`computed.rs`) and the paced count (`verify.rs`) build their batches from these, so a
//! key reads and compares the same way in all three.

use crate::ident::{Ident, Literal};
use crate::spec::{ColumnSpec, ModelSpec};

/// The alias of the `i`th key column in a batch's result, which the engine reads by name.
pub(crate) fn alias(i: usize) -> String {
    format!("__pgevolve_k{i}")
}

/// The primary key of a model, in declaration order.
pub(crate) struct Key<'a> {
    columns: Vec<&'a ColumnSpec>,
}

impl<'a> Key<'a> {
    pub(crate) fn of(model: &'a ModelSpec) -> Key<'a> {
        Key {
            columns: model.primary_key().collect(),
        }
    }

    /// How many columns the key has.
    pub(crate) fn len(&self) -> usize {
        self.columns.len()
    }

    /// `"a", "b"`, each after `prefix` (`""`, or a table alias and a dot).
    pub(crate) fn columns(&self, prefix: &str) -> String {
        self.join(|_, c| format!("{prefix}{}", Ident(c.name)))
    }

    /// `__pgevolve_k0, __pgevolve_k1`.
    pub(crate) fn aliases(&self) -> Vec<String> {
        (0..self.len()).map(alias).collect()
    }

    /// `"a" AS __pgevolve_k0, "b" AS __pgevolve_k1`.
    pub(crate) fn select_aliased(&self) -> String {
        self.join(|i, c| format!("{} AS {}", Ident(c.name), alias(i)))
    }

    /// `"a"::text AS __pgevolve_k0, ...`: the keys read as text, as the engine binds them back.
    pub(crate) fn select_text(&self) -> String {
        self.join(|i, c| format!("{}::text AS {}", Ident(c.name), alias(i)))
    }

    /// A key given as text (a checkpoint, a bound), as typed literals: `'3'::integer, ...`.
    pub(crate) fn literals(&self, values: &[String]) -> String {
        self.join(|i, c| format!("{}::{}", Literal(&values[i]), c.sql_type))
    }

    /// A key as typed parameters from `$from` on, as plans show it: `$1::integer, ...`.
    pub(crate) fn placeholders(&self, from: usize) -> String {
        self.join(|i, c| format!("${}::{}", from + i, c.sql_type))
    }

    /// `("a", "b") > (values)`: the rows after a key, in key order (an index range scan).
    pub(crate) fn above(&self, prefix: &str, values: &str) -> String {
        format!("({}) > ({values})", self.columns(prefix))
    }

    /// `("a", "b") <= (values)`: the rows up to a key.
    pub(crate) fn at_most(&self, prefix: &str, values: &str) -> String {
        format!("({}) <= ({values})", self.columns(prefix))
    }

    /// `ARRAY[__pgevolve_k0::text, ...]`: a batch's key as the text array a checkpoint holds.
    pub(crate) fn aliases_as_text(&self) -> String {
        format!("ARRAY[{}]", self.join(|i, _| format!("{}::text", alias(i))))
    }

    /// `__pgevolve_k0 DESC, ...`: the last key of a batch first.
    pub(crate) fn aliases_descending(&self) -> String {
        self.join(|i, _| format!("{} DESC", alias(i)))
    }

    fn join(&self, each: impl Fn(usize, &ColumnSpec) -> String) -> String {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, c)| each(i, c))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::verify::tests::COLUMNS;

    #[test]
    fn a_composite_key_is_quoted_typed_and_aliased_in_order() {
        let model = ModelSpec {
            table: "people",
            columns: &COLUMNS,
            ..ModelSpec::DEFAULT
        };
        let key = Key::of(&model);
        assert_eq!(key.len(), 2);
        assert_eq!(key.columns("t."), "t.\"tenant\", t.\"id\"");
        assert_eq!(
            key.select_aliased(),
            "\"tenant\" AS __pgevolve_k0, \"id\" AS __pgevolve_k1"
        );
        assert_eq!(
            key.select_text(),
            "\"tenant\"::text AS __pgevolve_k0, \"id\"::text AS __pgevolve_k1"
        );
        let values = key.literals(&["3".into(), "o'brien".into()]);
        assert_eq!(values, "'3'::integer, 'o''brien'::bigint");
        assert_eq!(
            key.above("", &values),
            "(\"tenant\", \"id\") > ('3'::integer, 'o''brien'::bigint)"
        );
        assert_eq!(
            key.at_most("", &key.placeholders(3)),
            "(\"tenant\", \"id\") <= ($3::integer, $4::bigint)"
        );
        assert_eq!(
            key.aliases_as_text(),
            "ARRAY[__pgevolve_k0::text, __pgevolve_k1::text]"
        );
        assert_eq!(
            key.aliases_descending(),
            "__pgevolve_k0 DESC, __pgevolve_k1 DESC"
        );
    }
}
