//! The runtime a service runs on: tokio's multi-thread scheduler, with as
//! many workers as the machine has cores unless told otherwise.
//!
//! Fewer workers trade a service's share of many cores for fewer hand-offs:
//! on a 2-core machine shared with its exec-server and client, a relay
//! moving one bulk session on two workers switched threads about three
//! times as often per MiB as on one (docs/operations.md).

/// A multi-thread runtime with every driver, and `workers` workers (as a
/// service's `--worker-threads` gives it; `None` or 0: one per core, or
/// `TOKIO_WORKER_THREADS` when it is set).
pub fn build(workers: Option<u16>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers.filter(|n| *n > 0) {
        builder.worker_threads(usize::from(n));
    }
    builder.enable_all().build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runtime_has_the_workers_it_was_given() {
        for n in [1u16, 3] {
            let runtime = build(Some(n)).unwrap();
            assert_eq!(runtime.metrics().num_workers(), usize::from(n));
            assert_eq!(runtime.block_on(async { 2 + 2 }), 4);
        }
    }

    #[test]
    fn by_default_it_has_at_least_one_worker_and_runs_timers() {
        let runtime = build(None).unwrap();
        assert!(runtime.metrics().num_workers() >= 1);
        runtime.block_on(async { tokio::time::sleep(std::time::Duration::from_millis(1)).await });
    }
}
