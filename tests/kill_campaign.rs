//! Real crashes at random points of every phase: the evolution of a model with every step kind
//! (a new table, a backfilled NOT NULL column, a rename, an index, a unique constraint, a
//! foreign key, a check, a dropped column, a removed index) runs in a child process, which is
//! killed with SIGKILL at a random moment and booted again, over and over, while the old build
//! and the new build write in this process. The random source is seeded (printed;
//! `PGEVOLVE_SEED=<n>` replays the same strikes), and which phase each kill hit is read from
//! the state store after it and printed as a table.
//!
//! Two stages, as in a deploy: up to switch while the old build still writes, then, once the
//! old build is gone, retire and contract. At the end the evolution is finished in this process
//! and the result compared with a database evolved without any crash.

use pgevolve_test_support as support;

use std::time::{Duration, Instant};

use pgevolve::__private::{Coordinator, CoordinatorOptions};
use pgevolve::Plan;
use sqlx::PgPool;
use support::campaign::{self, Goal, Rng, Strike, Tally};
use support::child::{self, ChildProcess};
use support::orders::{self, REMOVED_INDEX};

/// Rows seeded (see [`orders::evolver`] for the backfill's pace).
const ROWS: i64 = orders::ROWS;

/// The floor.
const KILLS_WANTED: u64 = 20;

/// Kills at most, per stage; then a last child runs the stage to its end.
const MAX_KILLS: [u64; 2] = [24, 12];

/// The child: boots, waits for the background work, switches, and with the scenario `end`
/// contracts; prints `DONE`, or `FAILED <error>`. Not a test in a normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_campaign_child_process() {
    let Some((scenario, url)) = child::child_spec() else {
        return;
    };
    let pool = PgPool::connect(&url).await.unwrap();
    child::report("STARTING");
    let outcome: pgevolve::Result<()> = async {
        let evolution = orders::evolver(&pool).boot().await?;
        child::report("BOOTED");
        evolution.wait().await?;
        evolution.switch().await?;
        if scenario == "end" {
            evolution.contract().await?;
        }
        Ok(())
    }
    .await;
    match outcome {
        Ok(()) => child::report("DONE"),
        Err(e) => child::report(&format!("FAILED {e}")),
    }
}

/// How a child ended.
enum Ended {
    /// Killed; the phase it hit.
    Killed(String),
    Done,
}

struct Campaign {
    url: String,
    pool: PgPool,
    plans: Vec<Plan>,
    rng: Rng,
    tally: Tally,
    /// A child printed `BOOTED`: the new build's shape exists.
    booted: bool,
}

impl Campaign {
    /// One child on `goal`'s scenario, killed at `strike` unless it finishes first (or runs to
    /// its end without one).
    async fn child(&mut self, goal: Goal, strike: Option<Strike>) -> Ended {
        let scenario = match goal {
            Goal::Validate | Goal::Switch => "switch",
            Goal::End => "end",
        };
        let mut child =
            ChildProcess::start("kill_campaign_child_process", scenario, &self.url, None);
        child.expect("STARTING");
        let mut seen: Vec<String> = Vec::new();
        let mut finished = |child: &mut ChildProcess| {
            seen.extend(child.new_lines());
            if let Some(failed) = seen.iter().find(|l| l.contains("FAILED")) {
                panic!("the child failed: {failed}");
            }
            seen.iter().any(|l| l.contains("DONE")) || child.exited().is_some()
        };
        let struck = match strike {
            Some(strike) => strike.wait(&self.pool, || finished(&mut child)).await,
            None => {
                let deadline = Instant::now() + Duration::from_secs(120);
                while !finished(&mut child) {
                    assert!(
                        Instant::now() < deadline,
                        "the stage did not end within 120 s"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                false
            }
        };
        let booted = seen.iter().any(|l| l.contains("BOOTED"));
        if !struck {
            self.booted |= booted;
            return Ended::Done;
        }
        child.kill();
        self.booted |= booted;
        child::until_no_advisory_lock(&self.pool).await;
        let hit = campaign::in_progress(&self.pool, &self.plans, goal, REMOVED_INDEX).await;
        Ended::Killed(hit)
    }

    /// Children until one reaches `goal`: each killed at a random moment, up to `max_kills`.
    async fn stage(&mut self, goal: Goal, max_kills: u64, mut after_each: impl AsyncFnMut(&Self)) {
        let mut kills = 0;
        loop {
            let strike = (kills < max_kills).then(|| Strike::draw(&mut self.rng, 500));
            let ended = self.child(goal, strike).await;
            after_each(self).await;
            match ended {
                Ended::Killed(hit) => {
                    println!("kill {}: {hit}", self.tally.total() + 1);
                    self.tally.add(hit);
                    kills += 1;
                }
                Ended::Done => return,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_random_points_of_every_phase_loses_no_row_runs_no_phase_twice_and_ends_as_planned()
 {
    if child::in_child() {
        return;
    }
    let started = Instant::now();
    let (db, pool) = support::database(20).await;
    orders::seed(&pool, ROWS).await;
    let plans = orders::evolver(&pool).plans();
    let mut campaign = Campaign {
        url: db.url().to_string(),
        pool: pool.clone(),
        plans: plans.clone(),
        rng: Rng::from_env("kill_campaign"),
        tally: Tally::default(),
        booted: false,
    };
    let log = orders::Log::default();
    let old: Vec<_> = (0..2)
        .map(|lane| orders::old_writer(&pool, lane, ROWS, log.clone()))
        .collect();

    // The new build serves from the first boot that returned: its instance follows the phases
    // (and acknowledges them) through a coordinator, as a booted instance does.
    let mut new: Vec<orders::Writer> = Vec::new();
    let mut coordinator: Option<Coordinator> = None;
    let steps = plans
        .iter()
        .flat_map(|p| p.steps.iter().map(|s| s.id.clone()))
        .collect::<Vec<_>>();
    campaign
        .stage(Goal::Switch, MAX_KILLS[0], async |c: &Campaign| {
            if c.booted && coordinator.is_none() {
                coordinator = Some(
                    Coordinator::start(
                        &pool,
                        "pgevolve",
                        "writers of the new build",
                        steps.clone(),
                        CoordinatorOptions::default(),
                    )
                    .await,
                );
                new = (2..4)
                    .map(|lane| orders::new_writer(&pool, lane, ROWS, log.clone()))
                    .collect();
            }
        })
        .await;
    assert!(coordinator.is_some(), "no child ever booted");
    // The old build is gone before retire and contract.
    let mut writes = 0;
    for (lane, writer) in old.into_iter().enumerate() {
        writes += writer.assert_no_errors(&format!("old writer {lane}")).await;
    }
    campaign.stage(Goal::End, MAX_KILLS[1], async |_| {}).await;

    // Finished here: nothing may be left to do.
    orders::evolve_to_the_end(orders::evolver(&pool)).await;
    for (lane, writer) in new.into_iter().enumerate() {
        writes += writer
            .assert_no_errors(&format!("new writer {}", lane + 2))
            .await;
    }
    if let Some(c) = coordinator {
        c.stop().await;
    }

    campaign.tally.print("kills");
    let kills = campaign.tally.total();
    assert!(
        kills >= KILLS_WANTED,
        "only {kills} kills landed before the evolution ended"
    );
    let compared = orders::assert_evolved_as_planned(&pool, &plans, &log).await;
    println!(
        "{kills} kills in {} phases survived; {compared} rows compared, 0 lost or different; \
         {writes} writes by the old and new builds; {:.1} s",
        campaign.tally.phases(),
        started.elapsed().as_secs_f64()
    );
}
