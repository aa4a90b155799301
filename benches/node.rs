//! Benchmarks (filled in by scripts/bench).
fn main() {}
