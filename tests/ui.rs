//! Compile-fail cases of `#[derive(Evolve)]`. One mistake per file; refresh the .stderr files
//! with `TRYBUILD=overwrite cargo test --test ui` and review the diff.
//!
//! Only compile-fail cases: with no pass case, trybuild runs `cargo check` (its dependencies
//! are checked, not built, and no binary is linked) over every case at once. Code that must
//! compile is an ordinary test: `tests/derive_pass.rs`.

#[rustversion::attr(
    not(stable(1.95)),
    ignore = "ui .stderr files are blessed on rustc 1.95"
)]
#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
}
