//! `status`, `plan`, `history` and `watch`: reading the state store.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use crate::error::{CliError, Reading};
use crate::render;
use crate::store::{HealthPause, Instance, LockWait, Pause, Request, Step, Store};

/// Instances whose heartbeat is older than this are not shown as live (the runtime's default
/// heartbeat timeout).
const LIVE_SECS: f64 = 10.0;
/// Failed requests younger than this are shown among what blocks.
const RECENT_FAILURE_SECS: f64 = 3600.0;

/// Everything `status` shows.
struct Snapshot {
    steps: Vec<Step>,
    /// Rows per second of each running backfill, measured over the sample.
    rates: HashMap<String, f64>,
    pauses: Vec<Pause>,
    /// Backfills waiting for the database's health; only those of steps still backfilling
    /// (a row left by an instance that died while waiting says nothing).
    health: Vec<HealthPause>,
    leader: Option<crate::store::Leader>,
    instances: Vec<Instance>,
    waits: Vec<LockWait>,
    requests: Vec<Request>,
}

impl Snapshot {
    async fn read(store: &mut Store, sample: f64) -> Result<Snapshot, CliError> {
        store.require().await?;
        let mut steps = store.steps().await?;
        let mut rates = HashMap::new();
        if sample > 0.0 && steps.iter().any(Step::backfilling) {
            let started = Instant::now();
            tokio::time::sleep(Duration::from_secs_f64(sample)).await;
            let later = store.steps().await?;
            let secs = started.elapsed().as_secs_f64();
            for step in &later {
                if let Some(before) = steps.iter().find(|s| s.id == step.id)
                    && step.backfilling()
                {
                    rates.insert(
                        step.id.clone(),
                        (step.rows_done - before.rows_done).max(0) as f64 / secs,
                    );
                }
            }
            steps = later;
        }
        let mut tables: Vec<String> = steps
            .iter()
            .filter(|s| !s.settled())
            .map(|s| s.table.clone())
            .collect();
        tables.sort();
        tables.dedup();
        let health = store
            .health_pauses()
            .await?
            .into_iter()
            .filter(|h| steps.iter().any(|s| s.id == h.step && s.backfilling()))
            .collect();
        Ok(Snapshot {
            rates,
            health,
            pauses: store.pauses().await?,
            leader: store.leader().await?,
            instances: store.instances(LIVE_SECS).await?,
            waits: store.lock_waits(&tables).await?,
            requests: store.requests(RECENT_FAILURE_SECS).await?,
            steps,
        })
    }

    fn paused(&self, step: &str) -> bool {
        self.pauses
            .iter()
            .any(|p| p.scope == "*" || p.scope == step)
    }

    fn health_pause(&self, step: &str) -> Option<&HealthPause> {
        self.health.iter().find(|h| h.step == step)
    }

    /// What holds the work up, one line each.
    fn blocking(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.pauses {
            let mut line = format!(
                "paused: {} (by {} at {}",
                render::scope(&p.scope),
                p.requested_by,
                p.at
            );
            if let Some(reason) = &p.reason {
                line.push_str(&format!(": {reason}"));
            }
            line.push_str("); `pgevolve resume` lifts it");
            out.push(line);
        }
        for h in &self.health {
            out.push(format!(
                "health: the backfill of step {} waits ({}) for {}: {}; it goes on by itself once back within the bound",
                h.step,
                h.reason,
                render::duration(h.secs),
                h.detail
            ));
        }
        for w in &self.waits {
            out.push(format!(
                "lock: session {} ({}) has waited {} for a lock on {} ({}), held up by session {} ({}, {}{}): {}",
                w.waiting_pid,
                w.waiting_application,
                render::duration(w.waiting_secs),
                w.table,
                w.waiting_query,
                w.blocker_pid,
                w.blocker_application,
                w.blocker_state,
                w.blocker_xact_secs
                    .map(|s| format!(", transaction open for {}", render::duration(s)))
                    .unwrap_or_default(),
                w.blocker_query
            ));
        }
        for (row, done_ago) in &self.requests {
            let what = format!(
                "request #{} ({}{})",
                row.id,
                row.action,
                row.step
                    .as_ref()
                    .map(|s| format!(" {s}"))
                    .unwrap_or_default()
            );
            match (&row.outcome, &row.picked_by) {
                (Some(_), _) => out.push(format!(
                    "{what} failed {} ago: {}",
                    render::duration(done_ago.unwrap_or(0.0)),
                    row.message.as_deref().unwrap_or("")
                )),
                (None, Some(instance)) => out.push(format!(
                    "{what} is being carried out by instance {instance}"
                )),
                (None, None) => out.push(format!(
                    "{what} waits for a live instance (requested at {})",
                    row.requested_at
                )),
            }
        }
        out
    }

    fn json(&self) -> Value {
        json!({
            "leader": self.leader.as_ref().map(|l| json!({
                "instance": l.instance, "pid": l.pid, "application": l.application, "client": l.client, "since": l.since,
            })),
            "paused": self.pauses.iter().map(|p| json!({
                "scope": p.scope, "reason": p.reason, "requested_by": p.requested_by, "at": p.at,
            })).collect::<Vec<_>>(),
            "steps": self.steps.iter().map(|s| {
                let rate = self.rates.get(&s.id).copied();
                json!({
                    "id": s.id,
                    "model": s.model,
                    "table": s.table,
                    "kind": s.kind,
                    "description": s.description,
                    "phase": s.phase,
                    "next_phase": s.next_phase(),
                    "phases": s.phases,
                    "state": render::state(s, false),
                    "paused": self.paused(&s.id) && !s.settled(),
                    "health_pause": self.health_pause(&s.id).map(|h| json!({
                        "reason": h.reason, "detail": h.detail, "since": h.since, "seconds": h.secs,
                    })),
                    "settled": s.settled(),
                    "backfilling": s.backfilling(),
                    "rows_done": s.rows_done,
                    "rows_estimated": s.rows_estimated,
                    "fraction": render::fraction(s),
                    "rows_per_second": rate,
                    "eta_seconds": render::eta(s, rate),
                    "updated_at": s.updated_at,
                })
            }).collect::<Vec<_>>(),
            "instances": self.instances.iter().map(|i| json!({
                "id": i.id,
                "leads": self.leader.as_ref().is_some_and(|l| l.instance.as_ref() == Some(&i.id)),
                "started_at": i.started_at,
                "heartbeat_age_seconds": i.heartbeat_age,
                "steps": i.steps.len(),
                "behind": self.behind(i).iter().map(|(s, p)| json!({"step": s, "phase": p})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "blocking": self.blocking(),
        })
    }

    /// The steps whose recorded phase `instance` (whose build knows them) has not
    /// acknowledged yet, with that phase.
    fn behind<'a>(&'a self, instance: &Instance) -> Vec<(&'a str, &'a str)> {
        self.steps
            .iter()
            .filter(|s| instance.steps.contains(&s.id) && s.phase != "pending")
            .filter(|s| {
                !instance
                    .acks
                    .get(&s.id)
                    .is_some_and(|phases| phases.contains(&s.phase))
            })
            .map(|s| (s.id.as_str(), s.phase.as_str()))
            .collect()
    }

    fn text(&self, schema: &str) -> String {
        let mut out = format!("state store: schema \"{schema}\"\n");
        match &self.leader {
            Some(l) => out.push_str(&format!(
                "leader: {}session {} (application \"{}\"{}{}) holds the leader lock\n",
                l.instance
                    .as_ref()
                    .map(|i| format!("instance {i}, "))
                    .unwrap_or_default(),
                l.pid,
                l.application,
                l.client
                    .as_ref()
                    .map(|c| format!(", from {c}"))
                    .unwrap_or_default(),
                l.since
                    .as_ref()
                    .map(|s| format!(", connected at {s}"))
                    .unwrap_or_default(),
            )),
            None => out.push_str(
                "leader: none (no background work runs: it finished, waits for the deploy window, or no instance runs)\n",
            ),
        }
        out.push_str(&format!("\nsteps ({}):\n", self.steps.len()));
        for s in &self.steps {
            out.push_str(&format!("  {}  {}  {}\n", s.id, s.table, s.description));
            out.push_str(&format!(
                "      phase {}: {}\n",
                s.phase,
                render::state(s, self.paused(&s.id))
            ));
            if let Some(h) = self.health_pause(&s.id) {
                out.push_str(&format!(
                    "      [WAITING FOR HEALTH: {}] {} (for {})\n",
                    h.reason,
                    h.detail,
                    render::duration(h.secs)
                ));
            }
            if let Some(fraction) = render::fraction(s).filter(|_| s.backfilling()) {
                let rate = self.rates.get(&s.id).copied();
                out.push_str(&format!(
                    "      {}  {} / ~{} rows{}{}\n",
                    render::bar(fraction, 30),
                    render::count(s.rows_done),
                    render::count(s.rows_estimated.unwrap_or(0)),
                    rate.map(|r| format!("  {} rows/s", render::count(r as i64)))
                        .unwrap_or_default(),
                    render::eta(s, rate)
                        .map(|e| format!("  ETA {}", render::duration(e)))
                        .unwrap_or_default(),
                ));
            }
        }
        out.push_str(&format!("\nlive instances ({}):\n", self.instances.len()));
        if self.instances.is_empty() {
            out.push_str("  none with a heartbeat in the last 10 s: is the application running?\n");
        }
        for i in &self.instances {
            let behind = self.behind(i);
            let acks = if behind.is_empty() {
                "acknowledged the current phase of every step its build knows".to_string()
            } else {
                format!(
                    "has not acknowledged yet: {}",
                    behind
                        .iter()
                        .map(|(s, p)| format!("{s} at {p}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let leads = self
                .leader
                .as_ref()
                .is_some_and(|l| l.instance.as_ref() == Some(&i.id));
            out.push_str(&format!(
                "  {}{}  heartbeat {:.1} s ago, up since {}, knows {} step(s); {}\n",
                i.id,
                if leads { " (leads)" } else { "" },
                i.heartbeat_age,
                i.started_at,
                i.steps.len(),
                acks
            ));
        }
        let blocking = self.blocking();
        out.push_str("\nblocking:\n");
        if blocking.is_empty() {
            out.push_str("  nothing\n");
        }
        for line in blocking {
            out.push_str(&format!("  {line}\n"));
        }
        out
    }
}

pub async fn status(store: &mut Store, sample: f64, json: bool) -> Result<(), CliError> {
    let snapshot = Snapshot::read(store, sample).await?;
    if json {
        println!("{}", snapshot.json());
    } else {
        print!("{}", snapshot.text(&store.schema));
    }
    Ok(())
}

pub async fn plan(store: &mut Store, step: Option<&str>, json: bool) -> Result<(), CliError> {
    store.require_table("plan").await?;
    let only = match step {
        Some(given) => Some(store.resolve_step(given).await?),
        None => None,
    };
    let steps = store.steps().await?;
    let rows = store.plan().await?;
    let steps: Vec<&Step> = steps
        .iter()
        .filter(|s| only.as_ref().is_none_or(|o| *o == s.id))
        .collect();
    // Steps in the order of the recorded plan.
    let mut ordered: Vec<&Step> = Vec::new();
    for row in &rows {
        if let Some(s) = steps.iter().find(|s| s.id == row.step)
            && !ordered.iter().any(|o| o.id == s.id)
        {
            ordered.push(s);
        }
    }
    // What each backfill still ahead will cost, from the table's statistics and the last
    // measured fill rate (the default duty cycle: the CLI does not know the application's).
    let mut estimates = HashMap::new();
    for s in &ordered {
        let backfill_at = s.phases.iter().position(|p| p == "backfill");
        let now_at = s.phases.iter().position(|p| *p == s.phase);
        let ahead = match (backfill_at, now_at) {
            (Some(b), Some(n)) => n < b,
            (Some(_), None) => s.phase == "pending",
            _ => false,
        };
        if !ahead {
            continue;
        }
        let (schema, table) = s.table.split_once('.').unwrap_or(("public", &s.table));
        let estimate = pgevolve_runtime::estimate::backfill(
            &mut store.conn,
            schema,
            table,
            &store.schema,
            pgevolve_runtime::BackfillOptions::default().duty_cycle,
        )
        .await
        .reading("the table's statistics")?;
        if let Some(e) = estimate {
            estimates.insert(s.id.clone(), e);
        }
    }
    if json {
        let out: Vec<Value> = ordered
            .iter()
            .map(|s| {
                let mut phases: Vec<Value> = Vec::new();
                for row in rows.iter().filter(|r| r.step == s.id) {
                    let last = phases
                        .last_mut()
                        .filter(|p| p["phase"] == row.phase.as_str());
                    let statement = row.sql.as_ref().map(|sql| {
                        json!({"sql": sql, "run": if row.concurrently { "concurrently" } else { "transaction" }})
                    });
                    match last {
                        Some(p) => {
                            if let (Some(st), Some(all)) = (statement, p["statements"].as_array_mut()) {
                                all.push(st);
                            }
                        }
                        None => phases.push(json!({
                            "phase": row.phase,
                            "note": row.note,
                            "statements": statement.into_iter().collect::<Vec<_>>(),
                        })),
                    }
                }
                let estimate = estimates.get(&s.id).map(|e| {
                    json!({
                        "rows": e.rows, "rows_per_sec": e.rate, "seconds": e.seconds, "wal_bytes": e.wal_bytes,
                        "rate_measured": matches!(e.rate_from, pgevolve_runtime::FillRate::Measured { .. }),
                        "text": e.to_string(),
                    })
                });
                json!({
                    "id": s.id, "table": s.table, "kind": s.kind, "description": s.description,
                    "phase": s.phase, "phases": phases, "backfill_estimate": estimate,
                })
            })
            .collect();
        println!("{}", Value::Array(out));
        return Ok(());
    }
    if ordered.is_empty() {
        println!(
            "no plan recorded in schema \"{}\": boot the application with this pgevolve version once",
            store.schema
        );
        return Ok(());
    }
    for s in ordered {
        println!("step {}: {}", s.id, s.description);
        println!(
            "  table {}, kind {}, phase now: {}",
            s.table, s.kind, s.phase
        );
        let mut current: Option<&str> = None;
        for row in rows.iter().filter(|r| r.step == s.id) {
            if current != Some(row.phase.as_str()) {
                current = Some(&row.phase);
                println!("  {}: {}", row.phase, row.note);
                if row.phase == "backfill"
                    && let Some(e) = estimates.get(&s.id)
                {
                    println!("    -- cost: {e}");
                }
            }
            if let Some(sql) = &row.sql {
                for line in sql.lines() {
                    println!("    {line}");
                }
                if row.concurrently {
                    println!("    -- runs alone, outside any transaction (CONCURRENTLY)");
                }
            }
        }
        println!();
    }
    Ok(())
}

pub async fn history(
    store: &mut Store,
    step: Option<&str>,
    limit: i64,
    json: bool,
) -> Result<(), CliError> {
    store.require().await?;
    let step = match step {
        Some(given) => Some(store.resolve_step(given).await?),
        None => None,
    };
    let events = store.journal(step.as_deref(), limit).await?;
    if json {
        let out: Vec<Value> = events
            .iter()
            .map(|e| {
                json!({"id": e.id, "at": e.at, "step": e.step, "event": e.event, "detail": e.detail, "instance": e.instance})
            })
            .collect();
        println!("{}", Value::Array(out));
        return Ok(());
    }
    if events.is_empty() {
        println!("the journal is empty");
    }
    for e in events {
        println!(
            "{}  {}  {}  {}{}",
            e.at,
            e.instance,
            e.step.as_deref().unwrap_or("-"),
            e.event,
            e.detail.map(|d| format!(": {d}")).unwrap_or_default()
        );
    }
    Ok(())
}

/// Progress bars (or, off a terminal or with `--json`, one line or JSON object per look) until
/// every step is settled: finished, aborted, or waiting for an operator.
pub async fn watch(store: &mut Store, interval: f64, json: bool) -> Result<(), CliError> {
    store.require().await?;
    let interval = Duration::from_secs_f64(interval.max(0.1));
    let terminal = !json && std::io::stderr().is_terminal();
    let bars = MultiProgress::with_draw_target(if terminal {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style = ProgressStyle::with_template(
        "{prefix:.bold} [{bar:30}] {percent:>3}% {human_pos}/{human_len} rows {per_sec} ETA {eta} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("#>-");
    let mut shown: HashMap<String, ProgressBar> = HashMap::new();
    let mut last: HashMap<String, (i64, Instant)> = HashMap::new();
    loop {
        let steps = store.steps().await?;
        let pauses = store.pauses().await?;
        let paused = |id: &str| pauses.iter().any(|p| p.scope == "*" || p.scope == id);
        // Backfills waiting for the database's health, shown next to their state.
        let health = store.health_pauses().await?;
        let waiting = |id: &str| health.iter().find(|h| h.step == id);
        let state = |s: &Step, paused: bool| {
            let mut out = render::state(s, paused);
            if let Some(h) = waiting(&s.id).filter(|_| !s.settled()) {
                out.push_str(&format!(" [WAITING FOR HEALTH: {}] {}", h.reason, h.detail));
            }
            out
        };
        let now = Instant::now();
        let mut rates: HashMap<String, f64> = HashMap::new();
        for s in &steps {
            if let Some((rows, at)) = last.get(&s.id) {
                let secs = now.duration_since(*at).as_secs_f64().max(1e-3);
                rates.insert(s.id.clone(), (s.rows_done - rows).max(0) as f64 / secs);
            }
            last.insert(s.id.clone(), (s.rows_done, now));
        }
        let settled = steps.iter().all(Step::settled);
        if json {
            let out: Vec<Value> = steps
                .iter()
                .map(|s| {
                    json!({
                        "id": s.id, "phase": s.phase, "state": render::state(s, false),
                        "paused": paused(&s.id) && !s.settled(),
                        "health_pause": waiting(&s.id).filter(|_| !s.settled()).map(|h| json!({
                            "reason": h.reason, "detail": h.detail, "seconds": h.secs,
                        })),
                        "rows_done": s.rows_done, "rows_estimated": s.rows_estimated,
                        "rows_per_second": rates.get(&s.id),
                        "eta_seconds": render::eta(s, rates.get(&s.id).copied()),
                    })
                })
                .collect();
            println!("{}", json!({"settled": settled, "steps": out}));
        } else if terminal {
            for s in &steps {
                if !s.backfilling() && !shown.contains_key(&s.id) {
                    continue;
                }
                let bar = shown.entry(s.id.clone()).or_insert_with(|| {
                    let bar =
                        bars.add(ProgressBar::new(s.rows_estimated.unwrap_or(0).max(0) as u64));
                    bar.set_style(style.clone());
                    bar.set_prefix(format!("{} {}", short(&s.id), s.table));
                    bar
                });
                bar.set_length(s.rows_estimated.unwrap_or(0).max(s.rows_done).max(0) as u64);
                bar.set_position(s.rows_done.max(0) as u64);
                bar.set_message(state(s, paused(&s.id)));
            }
        } else {
            for s in &steps {
                let rate = rates.get(&s.id).copied();
                let rows = match s.rows_estimated {
                    Some(total) => format!(
                        "  {}/~{} rows{}",
                        render::count(s.rows_done),
                        render::count(total),
                        rate.map(|r| format!("  {} rows/s", render::count(r as i64)))
                            .unwrap_or_default()
                    ),
                    None => String::new(),
                };
                println!(
                    "{}  phase {}: {}{rows}",
                    s.id,
                    s.phase,
                    state(s, paused(&s.id)),
                );
            }
        }
        if settled {
            for bar in shown.values() {
                bar.finish();
            }
            if !json {
                println!("the background work is done:");
                for s in &steps {
                    println!("  {}  {}: {}", s.id, s.description, render::state(s, false));
                }
            }
            return Ok(());
        }
        tokio::time::sleep(interval).await;
    }
}

/// The first 12 characters of a step id.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
