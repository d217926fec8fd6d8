//! What a backfill will cost, for plans made against a database
//! ([`Evolver::plans_for_database`](crate::Evolver::plans_for_database), `pgevolve plan`): the
//! rows to fill, how long filling them takes and how much WAL it writes. Reads only: the
//! table's statistics (`pg_class`), its index count, `full_page_writes`, and the state store's
//! record of earlier backfills (which need not exist).
//!
//! - **Rows**: `pg_class.reltuples`, the planner's estimate, as fresh as the table's last
//!   `ANALYZE` or `VACUUM` (autovacuum keeps it within about 10 % on a table that changes).
//!   A table never analyzed (`reltuples = -1`) shows as unknown.
//! - **Rate**: the last measured one, when the state store holds a finished backfill: its
//!   `rows_done` over the time from its start (the journal's `backfill fires user triggers` /
//!   `backfill skips user triggers`, written when the pass starts, else its `expand done`) to
//!   its `backfill done`, preferring a backfill of the same table. It measured the server, the
//!   load and the duty cycle of that day. Otherwise [`DEFAULT_BUSY_RATE`] rows per second of
//!   busy time, times the duty cycle.
//! - **WAL**: each filled row is written again as a new row version (a heap record of about
//!   the row's size on disk plus [`WAL_RECORD_OVERHEAD`] bytes) and, the filled column being
//!   new, not as a HOT update: one entry per index ([`WAL_INDEX_ENTRY`] bytes each). With
//!   `full_page_writes` on, the first change of each existing page after a checkpoint logs the
//!   whole page: the table's pages once more. A rough figure (within about a factor of 1.5 on
//!   the benchmark table); the benchmark measures the real one.

use std::fmt;

use sqlx::{PgConnection, Row};

use crate::ident::Qualified;

/// Rows a backfill fills per second of busy time when no rate was measured yet: the
/// benchmark's unthrottled backfill under load on a 2-core machine (BENCHMARKS.md: 37,000 to
/// 46,000 rows/s with fast settings; about 30,000 with durable ones), rounded down. Times the
/// duty cycle (10,000 rows/s at the default of 1/3).
pub const DEFAULT_BUSY_RATE: f64 = 30_000.0;

/// WAL bytes of one heap update record beyond the row itself (record and block headers).
pub const WAL_RECORD_OVERHEAD: f64 = 60.0;

/// WAL bytes of one index entry insertion.
pub const WAL_INDEX_ENTRY: f64 = 40.0;

/// Where an estimate's fill rate comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum FillRate {
    /// Measured on a finished backfill recorded in the state store.
    Measured {
        /// `schema.table` of that backfill.
        table: String,
        /// When it finished.
        finished_at: String,
    },
    /// No backfill recorded: [`DEFAULT_BUSY_RATE`] times the duty cycle.
    Default {
        /// The duty cycle applied.
        duty_cycle: f64,
    },
}

/// What one backfill will cost, estimated from the live database.
#[derive(Debug, Clone, PartialEq)]
pub struct BackfillEstimate {
    /// Rows to fill (`pg_class.reltuples`); `None` when the table was never analyzed.
    pub rows: Option<u64>,
    /// Rows per second.
    pub rate: f64,
    /// Where the rate comes from.
    pub rate_from: FillRate,
    /// Seconds the backfill phase should take (`None` with unknown rows).
    pub seconds: Option<f64>,
    /// WAL bytes it should write (`None` with unknown rows).
    pub wal_bytes: Option<u64>,
}

impl fmt::Display for BackfillEstimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = match &self.rate_from {
            FillRate::Measured { table, finished_at } => format!(
                "{:.0} rows/s, measured on the backfill of {table} that finished {finished_at}",
                self.rate
            ),
            FillRate::Default { duty_cycle } => format!(
                "{:.0} rows/s, the default rate ({DEFAULT_BUSY_RATE:.0} rows/s busy × duty cycle {duty_cycle:.2}; no backfill measured yet)",
                self.rate
            ),
        };
        match (self.rows, self.seconds, self.wal_bytes) {
            (Some(rows), Some(seconds), Some(wal)) => write!(
                f,
                "about {rows} rows to fill (pg_class.reltuples), about {} at {rate}, about {:.0} MiB of WAL",
                duration(seconds),
                wal as f64 / 1_048_576.0
            ),
            _ => write!(
                f,
                "rows to fill unknown (the table was never analyzed: ANALYZE it for an estimate); {rate}"
            ),
        }
    }
}

/// `1 h 02 min`, `3 min 20 s`, `12.5 s`.
fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{} min {:02} s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{} h {:02} min",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    }
}

/// Estimates the backfill of `schema.table`, with the state store in `state_schema` (which
/// may not exist) and the backfill's `duty_cycle` for the default rate. `None` when the table
/// does not exist (yet).
pub async fn backfill(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
    state_schema: &str,
    duty_cycle: f64,
) -> sqlx::Result<Option<BackfillEstimate>> {
    let Some(stats) = sqlx::query(
        "SELECT c.reltuples::float8 AS reltuples, c.relpages::int8 AS relpages, \
                (SELECT count(*) FROM pg_index i WHERE i.indrelid = c.oid)::int8 AS indexes, \
                current_setting('full_page_writes') = 'on' AS fpw \
           FROM pg_class c WHERE c.oid = to_regclass($1)",
    )
    .bind(Qualified(schema, table).to_string())
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let reltuples: f64 = stats.try_get("reltuples")?;
    let relpages: i64 = stats.try_get("relpages")?;
    let indexes: i64 = stats.try_get("indexes")?;
    let fpw: bool = stats.try_get("fpw")?;

    let measured = measured_rate(conn, schema, table, state_schema).await?;
    let (rate, rate_from) = match measured {
        Some((rate, table, finished_at)) => (rate, FillRate::Measured { table, finished_at }),
        None => {
            let duty_cycle = duty_cycle.clamp(0.01, 1.0);
            (
                DEFAULT_BUSY_RATE * duty_cycle,
                FillRate::Default { duty_cycle },
            )
        }
    };
    let rows = (reltuples >= 0.0).then_some(reltuples.round() as u64);
    let wal_bytes = rows.map(|rows| {
        let page_bytes = relpages.max(0) as f64 * 8192.0;
        let row_bytes = if rows > 0 {
            page_bytes / rows as f64
        } else {
            0.0
        };
        let per_row = row_bytes + WAL_RECORD_OVERHEAD + WAL_INDEX_ENTRY * indexes as f64;
        let images = if fpw { page_bytes } else { 0.0 };
        (rows as f64 * per_row + images).round() as u64
    });
    Ok(Some(BackfillEstimate {
        rows,
        rate,
        rate_from,
        seconds: rows.map(|r| r as f64 / rate.max(1.0)),
        wal_bytes,
    }))
}

/// The rate of the last finished backfill the state store recorded (the same table's first):
/// rows per second, its table, when it finished.
async fn measured_rate(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
    state_schema: &str,
) -> sqlx::Result<Option<(f64, String, String)>> {
    let steps = Qualified(state_schema, "steps").to_string();
    let journal = Qualified(state_schema, "journal").to_string();
    let present: bool =
        sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL")
            .bind(&steps)
            .bind(&journal)
            .fetch_one(&mut *conn)
            .await?;
    if !present {
        return Ok(None);
    }
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT s.table_schema || '.' || s.table_name AS tbl, \
                s.rows_done::float8 / extract(epoch FROM d.at - b.at)::float8 AS rate, \
                d.at::text AS finished_at \
           FROM {steps} s \
           JOIN LATERAL (SELECT j.id, j.at FROM {journal} j WHERE j.step_id = s.id AND j.event = 'backfill done' \
                         ORDER BY j.id DESC LIMIT 1) d ON true \
           JOIN LATERAL (SELECT j.at FROM {journal} j WHERE j.step_id = s.id AND j.id < d.id \
                           AND j.event IN ('expand done', 'backfill fires user triggers', 'backfill skips user triggers') \
                         ORDER BY j.id DESC LIMIT 1) b ON true \
          WHERE s.rows_done > 0 AND d.at > b.at \
          ORDER BY (s.table_schema = $1 AND s.table_name = $2) DESC, d.at DESC \
          LIMIT 1"
    )))
    .bind(schema)
    .bind(table)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| {
        Ok((
            r.try_get::<f64, _>("rate")?,
            r.try_get::<String, _>("tbl")?,
            r.try_get::<String, _>("finished_at")?,
        ))
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration(12.46), "12.5 s");
        assert_eq!(duration(200.0), "3 min 20 s");
        assert_eq!(duration(3720.0), "1 h 02 min");
    }
}
