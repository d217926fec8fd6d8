//! Shared by the benchmarks (`under_load`, `boot`): the server and its databases, the live
//! workload, per-phase statistics, a round-trip counting proxy, and the reports.

pub mod db;
pub mod proxy;
pub mod report;
pub mod stats;
pub mod workload;

/// The hot table and its evolution, the very file the `hot_table` example builds on.
#[path = "../../examples/hot_table/src/model.rs"]
pub mod model;
