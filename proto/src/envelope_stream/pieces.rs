//! A byte stream held as pieces: bytes written in place at its end, and
//! large fields kept as they are, shared rather than copied.
//!
//! prost writes a `Bytes` field by handing its writer a clone of it
//! (`BufMut::put`); [`Writer`] keeps such a field of at least
//! [`SHARED_FROM`] bytes as a piece of the stream (a reference count, no
//! copy) and writes everything else in place at the stream's end.

use std::collections::VecDeque;

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The least field shared rather than copied: below it a copy costs less
/// than a piece.
pub(super) const SHARED_FROM: usize = 2048;

/// The stream.
#[derive(Debug, Default)]
pub(super) struct Pieces {
    /// The stream before `tail`, in order: written bytes and shared
    /// fields.
    pieces: VecDeque<Bytes>,
    /// Bytes in `pieces`.
    in_pieces: usize,
    /// The stream's end, written in place.
    tail: BytesMut,
}

impl Pieces {
    /// Bytes in the stream.
    pub(super) fn len(&self) -> usize {
        self.in_pieces + self.tail.len()
    }

    /// A writer at the stream's end, with room for `reserve` bytes in
    /// place.
    pub(super) fn writer(&mut self, reserve: usize) -> Writer<'_> {
        self.tail.reserve(reserve);
        Writer { stream: self }
    }

    /// Ends what is in place as a piece, and appends `shared`.
    fn push_shared(&mut self, shared: Bytes) {
        if !self.tail.is_empty() {
            let written = self.tail.split().freeze();
            self.in_pieces += written.len();
            self.pieces.push_back(written);
        }
        self.in_pieces += shared.len();
        self.pieces.push_back(shared);
    }

    /// Drops the stream's end past its first `len` bytes.
    pub(super) fn truncate(&mut self, len: usize) {
        let mut excess = self.len().saturating_sub(len);
        let t = excess.min(self.tail.len());
        self.tail.truncate(self.tail.len() - t);
        excess -= t;
        while excess > 0 {
            let Some(back) = self.pieces.back_mut() else {
                break;
            };
            let k = excess.min(back.len());
            back.truncate(back.len() - k);
            if back.is_empty() {
                self.pieces.pop_back();
            }
            self.in_pieces -= k;
            excess -= k;
        }
    }

    /// Up to `max` bytes off the stream's front, without a copy when they
    /// lie in one piece.
    pub(super) fn take(&mut self, max: usize) -> Bytes {
        let n = max.min(self.len());
        match self.pieces.front_mut() {
            None => self.tail.split_to(n).freeze(),
            Some(front) if front.len() >= n => {
                let taken = front.split_to(n);
                if front.is_empty() {
                    self.pieces.pop_front();
                }
                self.in_pieces -= n;
                taken
            }
            Some(_) => {
                let mut out = BytesMut::with_capacity(n);
                self.take_into(&mut out, n);
                out.freeze()
            }
        }
    }

    /// Copies up to `max` bytes off the stream's front onto the end of
    /// `out`; returns how many.
    pub(super) fn take_into(&mut self, out: &mut BytesMut, max: usize) -> usize {
        let n = max.min(self.len());
        let mut left = n;
        while left > 0 {
            let Some(front) = self.pieces.front_mut() else {
                out.extend_from_slice(&self.tail[..left]);
                self.tail.advance(left);
                break;
            };
            let k = left.min(front.len());
            out.extend_from_slice(&front[..k]);
            front.advance(k);
            if front.is_empty() {
                self.pieces.pop_front();
            }
            self.in_pieces -= k;
            left -= k;
        }
        n
    }

    /// Drops the whole stream; returns how many bytes it held.
    pub(super) fn clear(&mut self) -> usize {
        let n = self.len();
        self.pieces.clear();
        self.in_pieces = 0;
        self.tail.clear();
        n
    }
}

/// Writes at a stream's end.
pub(super) struct Writer<'a> {
    stream: &'a mut Pieces,
}

// SAFETY: every method that writes in place is `BytesMut`'s own, on the
// stream's tail, so the tail's contract is the writer's: `chunk_mut`
// hands out the tail's spare capacity and `advance_mut` counts as
// written what the caller initialised there. `put` (the one method that
// does not write in place) moves bytes by the safe `Buf` methods only.
#[allow(unsafe_code)]
unsafe impl BufMut for Writer<'_> {
    fn remaining_mut(&self) -> usize {
        self.stream.tail.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialised `cnt` bytes of the chunk that
        // `chunk_mut` returned, which is the tail's.
        unsafe { self.stream.tail.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.stream.tail.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        self.stream.tail.extend_from_slice(src);
    }

    fn put<T: Buf>(&mut self, mut src: T)
    where
        Self: Sized,
    {
        let n = src.remaining();
        if n < SHARED_FROM {
            self.stream.tail.put(src);
            return;
        }
        // A `Bytes` hands itself over without a copy.
        let shared = src.copy_to_bytes(n);
        self.stream.push_shared(shared);
    }
}
