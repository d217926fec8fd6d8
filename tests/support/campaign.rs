//! What the reliability campaigns share (`kill_campaign.rs`, `connection_cuts.rs`): a seeded
//! random source that a failure can be replayed with, the moments to strike at, which phase a
//! strike hit (read from the state store), and the checks of the end state.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pgevolve::{Phase, Plan, PlannedStep};
use sqlx::PgPool;

/// The environment variable that replays a campaign: `PGEVOLVE_SEED=<n>`.
pub const SEED_ENV: &str = "PGEVOLVE_SEED";

/// xorshift64*: small, seeded, the same sequence on every machine.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `PGEVOLVE_SEED`, else from the clock; prints the seed and how to replay it.
    pub fn from_env(test: &str) -> Rng {
        let seed = match std::env::var(SEED_ENV) {
            Ok(s) => s
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{SEED_ENV}={s:?} is not a number")),
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64,
        };
        println!("seed {seed}; replay with {SEED_ENV}={seed} cargo test --test {test}");
        Rng::new(seed)
    }

    pub fn new(seed: u64) -> Rng {
        // Never zero (xorshift would stay there), and seeds 1, 2, 3 far apart.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    // The next number of the seeded sequence; clippy asks exported types (this crate is a
    // library) to call it `Iterator::next`, which an endless source would gain nothing from.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }

    /// True once in `n` on average.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }
}

/// When to strike next: after `events` more journal entries (phases done, carried objects,
/// acknowledgements), then `delay`. Two strikes in three land just after the next phase boundary
/// (0 to 15 ms after it), so that phases of a few milliseconds are hit too; the others at a time
/// drawn in `0..=window` ms, which lands inside long phases (a backfill, a build) or
/// in a boot.
#[derive(Debug, Clone, Copy)]
pub struct Strike {
    pub events: i64,
    pub delay: Duration,
}

impl Strike {
    pub fn draw(rng: &mut Rng, window: u64) -> Strike {
        if !rng.one_in(3) {
            Strike {
                events: 1,
                delay: Duration::from_millis(rng.between(0, 15)),
            }
        } else {
            Strike {
                events: 0,
                delay: Duration::from_millis(rng.between(0, window)),
            }
        }
    }

    /// Waits for the moment, checking `gone` every 5 ms: `false` when `gone` said the work
    /// ended first (nothing to strike any more).
    pub async fn wait(&self, pool: &PgPool, mut gone: impl FnMut() -> bool) -> bool {
        let from = journal_len(pool).await;
        let deadline = Instant::now() + Duration::from_secs(120);
        while journal_len(pool).await < from + self.events {
            if gone() {
                return false;
            }
            assert!(Instant::now() < deadline, "no progress for 120 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let at = Instant::now() + self.delay;
        while Instant::now() < at {
            if gone() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2).min(self.delay)).await;
        }
        !gone()
    }
}

/// Entries in the journal (0 before the state store exists).
pub async fn journal_len(pool: &PgPool) -> i64 {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('pgevolve.journal') IS NOT NULL")
        .fetch_one(pool)
        .await
        .unwrap();
    if !exists {
        return 0;
    }
    sqlx::query_scalar("SELECT count(*) FROM pgevolve.journal")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// How far a campaign's stage goes: up to switch (what runs while the old build still writes),
/// or every phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    Validate,
    Switch,
    End,
}

impl Goal {
    /// The walks of the stage, in order: the background work walks every step to validate,
    /// then `switch()` (and `contract()`) walk every step again to the goal.
    fn caps(self) -> [Phase; 2] {
        match self {
            Goal::Validate => [Phase::Validate, Phase::Validate],
            Goal::Switch => [Phase::Validate, Phase::Switch],
            Goal::End => [Phase::Validate, Phase::Contract],
        }
    }
}

/// The last of `phases` not past `cap`.
pub fn up_to(phases: &[Phase], cap: Phase) -> Phase {
    phases
        .iter()
        .copied()
        .rfind(|p| *p <= cap)
        .unwrap_or(Phase::Pending)
}

/// The phase the work was in, from the state store: `"<kind> <phase>"` of the first step that
/// has not reached `goal` (boot expands every step first, the background work walks them in plan
/// order to validate, then switch and contract walk them again);
/// `"state store bootstrap"` before the state store exists; `"drop_index contract"` while an
/// index `removed` names is still there at the end, else `"after the last phase"`.
pub async fn in_progress(pool: &PgPool, plans: &[Plan], goal: Goal, removed: &str) -> String {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('pgevolve.steps') IS NOT NULL")
        .fetch_one(pool)
        .await
        .unwrap();
    if !exists {
        return "state store bootstrap".into();
    }
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, phase FROM pgevolve.steps")
        .fetch_all(pool)
        .await
        .unwrap();
    let recorded: BTreeMap<String, Phase> = rows
        .into_iter()
        .map(|(id, phase)| (id, Phase::parse(&phase).unwrap()))
        .collect();
    let steps: Vec<_> = plans.iter().flat_map(|p| &p.steps).collect();
    let phase = |id: &str| recorded.get(id).copied().unwrap_or(Phase::Pending);
    if let Some(step) = steps
        .iter()
        .find(|s| s.kind.expands_at_boot() && phase(s.id.as_str()) < Phase::Expand)
    {
        return format!("{} expand", step.kind.name());
    }
    for cap in goal.caps() {
        for step in &steps {
            let done = phase(step.id.as_str());
            if done < up_to(step.kind.phases(), cap)
                && let Some(next) = step.kind.next_phase(done)
            {
                return format!("{} {next}", step.kind.name());
            }
        }
    }
    if goal == Goal::End {
        let left: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(removed)
            .fetch_one(pool)
            .await
            .unwrap();
        if left {
            return "drop_index contract".into();
        }
    }
    "after the last phase".into()
}

/// Strikes counted by the phase they hit, printed as a table.
#[derive(Default)]
pub struct Tally(BTreeMap<String, u64>);

impl Tally {
    pub fn add(&mut self, phase: String) {
        *self.0.entry(phase).or_default() += 1;
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Distinct phases hit.
    pub fn phases(&self) -> usize {
        self.0.len()
    }

    pub fn print(&self, what: &str) {
        println!("| phase hit | {what} |\n|---|---|");
        for (phase, n) in &self.0 {
            println!("| {phase} | {n} |");
        }
        println!("| total | {} |", self.total());
    }
}

/// Every phase up to `up_to` of every planned step (but those `existed`: steps the catalog
/// satisfied before the evolution, which run nothing) is recorded done exactly once in the
/// journal, and no step (the removed index's included) has any phase done twice.
pub async fn assert_each_phase_done_once(
    pool: &PgPool,
    plans: &[Plan],
    up_to: Phase,
    existed: impl Fn(&PlannedStep) -> bool,
) {
    let twice: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT step_id, event, count(*) FROM pgevolve.journal WHERE event LIKE '% done' \
         GROUP BY 1, 2 HAVING count(*) > 1 ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(twice.is_empty(), "phases done more than once: {twice:?}");
    let done: Vec<(String, String)> = sqlx::query_as(
        "SELECT step_id, event FROM pgevolve.journal WHERE event LIKE '% done' AND step_id IS NOT NULL",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for step in plans.iter().flat_map(|p| &p.steps).filter(|s| !existed(s)) {
        for phase in step.kind.phases().iter().filter(|p| **p <= up_to) {
            let event = format!("{phase} done");
            assert!(
                done.iter()
                    .any(|(id, e)| id == step.id.as_str() && *e == event),
                "no {event:?} in the journal for {}",
                step.describe()
            );
        }
    }
}

/// No index of the database is INVALID (`pg_index.indisvalid = false`).
pub async fn assert_no_invalid_index(pool: &PgPool) {
    let invalid: Vec<String> = sqlx::query_scalar(
        "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(invalid.is_empty(), "INVALID indexes left: {invalid:?}");
}

/// Every step of `plans` recorded at its last phase.
pub async fn assert_every_step_at_its_last_phase(pool: &PgPool, plans: &[Plan]) {
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, phase FROM pgevolve.steps")
        .fetch_all(pool)
        .await
        .unwrap();
    for step in plans.iter().flat_map(|p| &p.steps) {
        let phase = rows
            .iter()
            .find(|(id, _)| id == step.id.as_str())
            .map(|(_, p)| p.as_str());
        assert_eq!(
            phase,
            Some(step.kind.last_phase().as_str()),
            "{}",
            step.describe()
        );
    }
}

/// The catalog of `tables` as a fresh database evolved without any failure ends: `seed` then
/// `evolve` on a database of its own.
pub async fn reference_catalog(
    tables: &[&str],
    seed: impl AsyncFnOnce(&PgPool),
    evolve: impl AsyncFnOnce(&PgPool),
) -> Vec<String> {
    let (_db, pool) = super::database(10).await;
    seed(&pool).await;
    evolve(&pool).await;
    catalog_of(&pool, tables).await
}

/// [`super::catalog_snapshot`] of each table, in order.
pub async fn catalog_of(pool: &PgPool, tables: &[&str]) -> Vec<String> {
    let mut all = Vec::new();
    for table in tables {
        all.push(format!("table {table}"));
        all.extend(super::catalog_snapshot(pool, table).await);
    }
    all
}
