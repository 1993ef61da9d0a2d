//! Benchmarks live in `core.rs`; this library is empty.
