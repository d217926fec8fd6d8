//! The SQL of a validate phase's data checks: counts of the rows that must not exist, either in
//! one statement over the whole table or one key range at a time (`paced_count.rs`).

use super::table;
use crate::ident::{Ident, Literal};
use crate::spec::{ColumnSpec, ModelSpec};

/// Rows matching `condition` (a boolean SQL expression over the table's row), in one scan.
pub(crate) fn count_where(model: &ModelSpec, condition: &str) -> String {
    format!("SELECT count(*) FROM {} WHERE {condition}", table(model))
}

/// One range of a paced count, as one simple query (one implicit transaction, ACCESS SHARE
/// only): the next `limit` keys above `cursor` in key order (an index range scan), how many of
/// those rows match `condition` (`violations`), how many were read (`scanned`) and the range's
/// last key as text (`last_key`, `NULL` past the last row). Without a time bound of its own
/// (`statement_timeout = 0`: a range on a server under load may take longer than usual, and a
/// cancelled range would only be read again), in one process.
pub(crate) fn range_count(
    model: &ModelSpec,
    condition: &str,
    cursor: Option<&[String]>,
    limit: u32,
) -> String {
    let pk: Vec<&ColumnSpec> = model.primary_key().collect();
    let keys = pk
        .iter()
        .map(|c| Ident(c.name).to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let aliases: Vec<String> = (0..pk.len()).map(|i| format!("__pgevolve_k{i}")).collect();
    let select_keys = pk
        .iter()
        .zip(&aliases)
        .map(|(c, a)| format!("{} AS {a}", Ident(c.name)))
        .collect::<Vec<_>>()
        .join(", ");
    let lower = match cursor {
        Some(values) => format!(
            "WHERE ({keys}) > ({}) ",
            pk.iter()
                .zip(values)
                .map(|(c, v)| format!("{}::{}", Literal(v), c.sql_type))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => String::new(),
    };
    let last_text = aliases
        .iter()
        .map(|a| format!("{a}::text"))
        .collect::<Vec<_>>()
        .join(", ");
    let order = aliases.join(" DESC, ") + " DESC";
    format!(
        "SET LOCAL statement_timeout = 0;\n\
         SET LOCAL max_parallel_workers_per_gather = 0;\n\
         WITH range AS (\n\
         \x20 SELECT {select_keys}, ({condition}) AS __pgevolve_bad FROM {t}\n\
         \x20 {lower}ORDER BY {keys} LIMIT {limit}\n\
         )\n\
         SELECT count(*) FILTER (WHERE __pgevolve_bad) AS violations, count(*) AS scanned,\n\
         \x20      (SELECT ARRAY[{last_text}] FROM range ORDER BY {order} LIMIT 1) AS last_key\n\
         FROM range",
        t = table(model),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    static COLUMNS: [ColumnSpec; 3] = [
        ColumnSpec {
            name: "tenant",
            sql_type: "integer",
            primary_key: true,
            ..ColumnSpec::DEFAULT
        },
        ColumnSpec {
            name: "id",
            sql_type: "bigint",
            primary_key: true,
            ..ColumnSpec::DEFAULT
        },
        ColumnSpec {
            name: "full_name",
            sql_type: "text",
            ..ColumnSpec::DEFAULT
        },
    ];

    #[test]
    fn a_range_starts_above_its_cursor_in_key_order() {
        let model = ModelSpec {
            table: "people",
            columns: &COLUMNS,
            ..ModelSpec::DEFAULT
        };
        let condition = "\"full_name\" IS DISTINCT FROM \"name\"";
        let first = range_count(&model, condition, None, 500);
        assert!(!first.contains(" > ("), "{first}");
        assert!(
            first.contains("ORDER BY \"tenant\", \"id\" LIMIT 500"),
            "{first}"
        );
        let cursor = ["3".to_string(), "o'brien".to_string()];
        let next = range_count(&model, condition, Some(&cursor), 500);
        assert!(
            next.contains(
                "WHERE (\"tenant\", \"id\") > ('3'::integer, 'o''brien'::bigint) ORDER BY"
            ),
            "{next}"
        );
        assert!(next.contains(&format!("({condition}) AS __pgevolve_bad")));
        assert_eq!(
            count_where(&model, condition),
            format!("SELECT count(*) FROM \"public\".\"people\" WHERE {condition}")
        );
    }
}
