//! Trace analysis: reading traces, placing their spans, statistics, gates,
//! A/B and the renderers, for `core-client trace show` and `core-client
//! report` (and `probe`, which ends with a report).

// Tests may unwrap; the library may not (the workspace lints deny it).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod aggregate;
pub mod command;
pub mod compare;
pub mod fall;
pub mod format;
pub mod gate;
pub mod histogram;
pub mod html;
pub mod jaeger;
pub mod layout;
pub mod model;
pub mod names;
pub mod report;
pub mod scan;
pub mod show;
pub mod source;
pub mod stats;
pub mod table;
pub mod text;
pub mod time;
pub mod trace_file;

pub use names::{Names, NoNames};
