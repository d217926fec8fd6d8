//! The SQL of a validate phase's data checks: counts of the rows that must not exist, either in
//! one statement over the whole table or one key range at a time (`paced_count.rs`).

use super::key_range::Key;
use super::table;
use crate::spec::ModelSpec;

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
    let key = Key::of(model);
    let keys = key.columns("");
    let lower = match cursor {
        Some(values) => format!("WHERE {} ", key.above("", &key.literals(values))),
        None => String::new(),
    };
    format!(
        "SET LOCAL statement_timeout = 0;\n\
         SET LOCAL max_parallel_workers_per_gather = 0;\n\
         {no_jit}\n\
         WITH range AS (\n\
         \x20 SELECT {select_keys}, ({condition}) AS __pgevolve_bad FROM {t}\n\
         \x20 {lower}ORDER BY {keys} LIMIT {limit}\n\
         )\n\
         SELECT count(*) FILTER (WHERE __pgevolve_bad) AS violations, count(*) AS scanned,\n\
         \x20      (SELECT {last_key} FROM range ORDER BY {order} LIMIT 1) AS last_key\n\
         FROM range",
        select_keys = key.select_aliased(),
        last_key = key.aliases_as_text(),
        order = key.aliases_descending(),
        t = table(model),
        no_jit = super::NO_JIT,
    )
}

#[cfg(test)]
pub(in crate::sql) mod tests {
    use super::*;
    use crate::spec::ColumnSpec;

    /// A composite key, `(tenant integer, id bigint)`, and a text column (`key_range.rs`'s
    /// tests use it too).
    pub(in crate::sql) static COLUMNS: [ColumnSpec; 3] = [
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
