//! The one query of a health check (see `crate::health`): the WAL position, the replicas'
//! replay lag, the xmin horizon and the oldest transaction, in one round trip and one row.
//!
//! Readable without superuser: `pg_stat_replication` rows are visible to every role, their
//! positions only with `pg_read_all_stats` (`state` is `NULL` otherwise, counted in `hidden`);
//! `pg_stat_activity` shows other roles' `backend_xmin` only with the same role;
//! `pg_replication_slots` and `pg_prepared_xacts` are readable by every role.

/// Columns, by name: `wal_bytes` (the WAL position as bytes since `0/0`), `replicas`, `hidden`
/// (replicas whose positions are hidden from this role), `lag_bytes` and `lag_seconds` (the
/// largest of any replica; `NULL` without one), `lagging` (the `application_name` of the replica
/// furthest behind), `xmin_age` and `xmin_holder` (the oldest snapshot or transaction id of a
/// session, slot or prepared transaction, in transactions, and what holds it), `xact_seconds`
/// and `xact_holder` (the oldest transaction holding a snapshot or id), `sees_all` (this role
/// has `pg_read_all_stats`).
///
/// This query's own session is left out (it holds a snapshot while the query runs), and so are
/// autovacuum workers and `VACUUM`s, whose snapshots vacuum ignores. A slot's `catalog_xmin` is
/// left out: it holds back the catalogs' vacuum only.
pub(crate) fn sample() -> &'static str {
    "SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), '0/0')::int8 AS wal_bytes, \
     r.replicas, r.hidden, r.lag_bytes, r.lag_seconds, r.lagging, \
     x.age AS xmin_age, x.holder AS xmin_holder, \
     t.seconds AS xact_seconds, t.holder AS xact_holder, \
     pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE') AS sees_all \
     FROM (SELECT count(*) AS replicas, \
                  count(*) FILTER (WHERE state IS NULL) AS hidden, \
                  max(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), replay_lsn))::int8 AS lag_bytes, \
                  extract(epoch FROM max(replay_lag))::float8 AS lag_seconds, \
                  (array_agg(application_name ORDER BY replay_lsn ASC NULLS LAST))[1] AS lagging \
           FROM pg_catalog.pg_stat_replication \
           WHERE state IS NULL OR state IN ('streaming', 'catchup')) r \
     LEFT JOIN LATERAL ( \
           SELECT age, holder FROM ( \
               SELECT greatest(age(backend_xmin), age(backend_xid))::int8 AS age, \
                      format('session %s (%s%s)', pid, coalesce(nullif(application_name, ''), backend_type), \
                             coalesce(', state ' || state, '')) AS holder \
               FROM pg_catalog.pg_stat_activity \
               WHERE (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL) \
                 AND pid <> pg_catalog.pg_backend_pid() \
                 AND backend_type IS DISTINCT FROM 'autovacuum worker' \
                 AND coalesce(query, '') !~* '^\\s*vacuum' \
               UNION ALL \
               SELECT age(xmin)::int8, format('replication slot %s', slot_name) \
               FROM pg_catalog.pg_replication_slots WHERE xmin IS NOT NULL \
               UNION ALL \
               SELECT age(transaction)::int8, format('prepared transaction %s', gid) \
               FROM pg_catalog.pg_prepared_xacts) h \
           ORDER BY age DESC LIMIT 1) x ON true \
     LEFT JOIN LATERAL ( \
           SELECT extract(epoch FROM clock_timestamp() - xact_start)::float8 AS seconds, \
                  format('session %s (%s%s)', pid, coalesce(nullif(application_name, ''), backend_type), \
                         coalesce(', state ' || state, '')) AS holder \
           FROM pg_catalog.pg_stat_activity \
           WHERE (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL) AND xact_start IS NOT NULL \
             AND pid <> pg_catalog.pg_backend_pid() \
             AND backend_type IS DISTINCT FROM 'autovacuum worker' \
             AND coalesce(query, '') !~* '^\\s*vacuum' \
           ORDER BY xact_start LIMIT 1) t ON true"
}
