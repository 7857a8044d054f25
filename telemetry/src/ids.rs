//! Span ids known before their span starts.
//!
//! The exec-server has to put a child's `TRACEPARENT` (naming its
//! `process.run` span) into the child's environment before the child is
//! spawned, but `process.run` only starts once the pid is known. The
//! providers made by `setup` (feature `export`) use `PresetIdGenerator`, so
//! a span id drawn with [`new_span_id`] can be handed to the next span
//! started on this thread with [`start_with_span_id`].

use std::cell::Cell;

use opentelemetry::trace::SpanId;

thread_local! {
    static PRESET: Cell<Option<SpanId>> = const { Cell::new(None) };
}

/// Random ids, except that the next span id may be preset for this thread.
#[cfg(feature = "export")]
#[derive(Debug, Default)]
pub(crate) struct PresetIdGenerator {
    random: opentelemetry_sdk::trace::RandomIdGenerator,
}

#[cfg(feature = "export")]
impl opentelemetry_sdk::trace::IdGenerator for PresetIdGenerator {
    fn new_trace_id(&self) -> opentelemetry::trace::TraceId {
        self.random.new_trace_id()
    }

    fn new_span_id(&self) -> SpanId {
        PRESET
            .with(Cell::take)
            .unwrap_or_else(|| self.random.new_span_id())
    }
}

/// A fresh random span id (never the invalid all-zero id), to be used
/// later with [`start_with_span_id`].
pub fn new_span_id() -> SpanId {
    loop {
        let id = SpanId::from_bytes(rand::random());
        if id != SpanId::INVALID {
            return id;
        }
    }
}

/// Runs `start` (which must start exactly one span, synchronously) so that
/// the span it starts gets `id`, when the provider uses
/// `PresetIdGenerator`. Returns what `start` returns; callers compare the
/// started span's id with `id` if they must know it was honoured.
pub fn start_with_span_id<T>(id: SpanId, start: impl FnOnce() -> T) -> T {
    PRESET.with(|p| p.set(Some(id)));
    let out = start();
    // Not consumed (e.g. a provider with another generator): forget it.
    PRESET.with(|p| p.set(None));
    out
}

#[cfg(all(test, feature = "export"))]
mod tests {
    use super::*;
    use opentelemetry::trace::{Span, TraceContextExt, Tracer, TracerProvider};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    #[test]
    fn preset_id_is_used_once() {
        let provider = SdkTracerProvider::builder()
            .with_id_generator(PresetIdGenerator::default())
            .build();
        let tracer = provider.tracer("t");
        let id = new_span_id();
        let mut span = start_with_span_id(id, || tracer.start("a"));
        assert_eq!(span.span_context().span_id(), id);
        span.end();
        let other = tracer.start("b");
        assert_ne!(other.span_context().span_id(), id);
        let cx = opentelemetry::Context::current_with_span(other);
        assert!(cx.span().span_context().is_valid());
    }

    #[test]
    fn unused_preset_is_forgotten() {
        use opentelemetry_sdk::trace::IdGenerator;
        assert_ne!(new_span_id(), SpanId::INVALID);
        let id = new_span_id();
        start_with_span_id(id, || ());
        let generator = PresetIdGenerator::default();
        assert_ne!(generator.new_span_id(), id);
    }
}
