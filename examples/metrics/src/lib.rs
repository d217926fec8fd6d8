//! The evolution the metrics example runs and its test checks: a backfilled NOT NULL column
//! added to a seeded `users` table. The recorder is the caller's business (see `main.rs`).

use pgevolve::{DeployWindow, Evolution, Evolve, Evolver};
use sqlx::PgPool;

/// The struct as the new build declares it: `email_normalized` is new.
#[derive(Evolve)]
#[evolve(table = "users")]
#[allow(dead_code)]
pub struct User {
    #[evolve(primary_key, generated)]
    pub id: i64,
    pub name: String,
    pub email: String,
    #[evolve(backfill = "lower(email)")]
    pub email_normalized: String,
}

/// Creates `users` as the old build has it, with `rows` rows.
pub async fn seed(pool: &PgPool, rows: i64) -> sqlx::Result<()> {
    sqlx::raw_sql(
        "CREATE TABLE users (
             id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             name text NOT NULL,
             email text NOT NULL
         )",
    )
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO users (name, email)
         SELECT 'user ' || g, 'User' || g || '@Example.COM' FROM generate_series(1, $1) g",
    )
    .bind(rows)
    .execute(pool)
    .await?;
    sqlx::raw_sql("ANALYZE users").execute(pool).await?;
    Ok(())
}

/// Boots the evolution and waits until the backfill and validation are done.
pub async fn evolve(pool: &PgPool) -> pgevolve::Result<Evolution> {
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<User>()
        .boot()
        .await?;
    evolution.wait().await?;
    Ok(evolution)
}
