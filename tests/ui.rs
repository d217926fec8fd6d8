//! Compile-fail and must-compile cases of `#[derive(Evolve)]`. One mistake per file; refresh the
//! .stderr files with `TRYBUILD=overwrite cargo test --test ui` and review the diff.

#[rustversion::attr(
    not(stable(1.95)),
    ignore = "ui .stderr files are blessed on rustc 1.95"
)]
#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
