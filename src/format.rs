//! The node file's byte layout: header slots, the frame log, and the tar journal inside.
//!
//! This is the only code that knows byte offsets; docs/FORMAT.md describes the same thing
//! in prose, field by field.

pub mod header;
pub mod journal;
pub mod log;
