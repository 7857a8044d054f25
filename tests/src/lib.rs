//! Fixtures for the cross-crate integration tests.
//!
//! Layout:
//! - [`stack`]: a relay and exec-servers in this process on `127.0.0.1:0`,
//!   with generated keys, and clients for them.
//! - [`proxy`]: a tunnel proxy that can reroute or tamper with frames, to
//!   play a malicious relay.
//! - [`binaries`]: locating (building if needed) and running the three
//!   binaries as separate processes.
//! - [`crash_records`]: the records the persistence crash test writes and
//!   checks.
//! - [`compose`]: the docker-compose stack the compose tests run against
//!   (compose commands, one-off core-client containers, health, logs).
//! - [`etcd`]: a real etcd (single member, loopback) for the fleet's
//!   directory, that can be stopped and started again.
//! - [`layout`]: the check that no two modules of a crate import each
//!   other (the module tree followed from each crate's root, imports
//!   resolved through re-exports and glob imports).
//! - [`memory`]: searching a live process's memory for a byte string.
//! - [`otlp`]: an OTLP trace receiver (gRPC and HTTP) that records
//!   exported spans and the headers they came with.
//! - [`sink`]: a stand-in for Jaeger v2 (OTLP/gRPC and OTLP/HTTP in, a bounded store,
//!   the api_v3 query API and a health endpoint out); the `trace-sink`
//!   binary serves it.
//! - [`jaeger`]: a client for Jaeger's api_v3 query API (real Jaeger or
//!   the sink).
//! - [`rfc3339`]: RFC 3339 timestamps as the query API takes them.
//! - [`trace_check`]: assertions over recorded spans (parents, nesting,
//!   coverage).
//! - [`tmux`]: a real terminal driven by keys and read from its screen.
//! - [`synthetic`]: trace files of commands with known stage times (the
//!   report's tests and its scale benchmark).
//! - [`chromium`]: a real headless browser whose every request goes to a
//!   proxy the test counts.
//! - [`bench`](mod@bench): what the benchmarks share (options, timing an exec, CPU
//!   time, statistics, the machine line, running on a runtime).
//! - [`soak`]: honest clients running mixed, checked commands for a while
//!   under faults (relay restarts, cut links, a flood), counting losses,
//!   resumes and memory.
//! - [`versus`]: the benchmarks against ssh, socat and local spawning:
//!   scenarios, targets and the report.
//! - [`required`]: a tool a test needs, present, or a skip (a failure
//!   where CI requires it).
//! - [`error`]: [`FixtureError`], what a fixture that cannot set up
//!   returns; tests unwrap it, the benchmarks report it.
//!
//! The assertion helpers ([`trace_check`], [`otlp::OtlpReceiver::wait_for`])
//! panic with a message: that is their job.

pub mod bench;
pub mod binaries;
pub mod chromium;
pub mod compose;
pub mod crash_records;
pub mod error;
pub mod etcd;
pub mod jaeger;
pub mod layout;
pub mod memory;
pub mod otlp;
pub mod proxy;
pub mod required;
pub mod rfc3339;
pub mod sink;
pub mod soak;
pub mod stack;
pub mod synthetic;
pub mod tmux;
pub mod trace_check;
pub mod versus;

pub use error::FixtureError;
