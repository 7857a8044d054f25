//! The length-prefixed envelope stream carried inside the Noise session.
//!
//! Each message is a `u32` big-endian length followed by that many bytes.
//! The stream is cut into Noise records without regard to message
//! boundaries, so several small messages share one record and a big one
//! spans several.
//!
//! [`EnvelopeEncoder`] queues messages, their large byte fields shared
//! rather than copied, and hands out the stream in pieces;
//! [`EnvelopeDecoder`] takes pieces in any chunking and yields whole messages.
//! A declared length is checked against the decoder's limit before any
//! space is reserved for it.

use bytes::{Buf, BufMut, Bytes, BytesMut};

mod pieces;

use pieces::{Pieces, SHARED_FROM};

use crate::limits::MAX_ENVELOPE;

/// Length of the big-endian length prefix.
pub const LEN_PREFIX: usize = 4;

/// Errors encoding or decoding the envelope stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeStreamError {
    /// A message is larger than the limit (on encode: the message given;
    /// on decode: the length the peer declared).
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The message's (declared) length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Queues messages, each with its length prefix, and hands out the
/// resulting byte stream in pieces.
///
/// A large byte field of a message (a command's output, a client's
/// stdin) is not copied into the stream: the stream holds the field's own
/// bytes as one of its pieces, so what a session keeps for a resume and
/// what waits to be encrypted are the same memory, and the one copy a
/// byte takes on its way out is into its encrypted record.
#[derive(Debug)]
pub struct EnvelopeEncoder {
    stream: Pieces,
    max: usize,
}

impl Default for EnvelopeEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl EnvelopeEncoder {
    /// An empty encoder accepting messages up to [`MAX_ENVELOPE`] bytes.
    pub fn new() -> Self {
        Self::with_max(MAX_ENVELOPE)
    }

    /// An empty encoder accepting messages up to `max` bytes (capped at
    /// [`MAX_ENVELOPE`]).
    pub fn with_max(max: usize) -> Self {
        Self {
            stream: Pieces::default(),
            max: max.min(MAX_ENVELOPE),
        }
    }

    /// The largest message [`push`](Self::push) accepts.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Appends `msg` with its length prefix. Fails, queuing nothing, if
    /// `msg` is larger than the limit.
    pub fn push(&mut self, msg: &[u8]) -> Result<(), EnvelopeStreamError> {
        let too_large = EnvelopeStreamError::TooLarge {
            len: msg.len(),
            max: self.max,
        };
        if msg.len() > self.max {
            return Err(too_large);
        }
        let len = u32::try_from(msg.len()).map_err(|_| too_large)?;
        let mut w = self.stream.writer(LEN_PREFIX + msg.len());
        w.put_u32(len);
        w.put_slice(msg);
        Ok(())
    }

    /// Appends `message` with its length prefix, encoded in place, its
    /// large byte fields shared rather than copied. Fails, queuing
    /// nothing, if its encoded length is larger than the limit.
    pub fn push_message(
        &mut self,
        message: &impl prost::Message,
    ) -> Result<(), EnvelopeStreamError> {
        let len = message.encoded_len();
        let too_large = EnvelopeStreamError::TooLarge { len, max: self.max };
        if len > self.max {
            return Err(too_large);
        }
        let Ok(prefix) = u32::try_from(len) else {
            return Err(too_large);
        };
        let before = self.pending();
        let mut w = self.stream.writer(LEN_PREFIX + len.min(SHARED_FROM));
        w.put_u32(prefix);
        // The writer grows as needed: encoding into it cannot fail.
        let encoded = message.encode(&mut w).is_ok();
        if !encoded || self.pending() - before != LEN_PREFIX + len {
            self.stream.truncate(before);
            return Err(too_large);
        }
        Ok(())
    }

    /// Bytes of encoded stream not yet taken.
    pub fn pending(&self) -> usize {
        self.stream.len()
    }

    /// Takes up to `max` bytes off the front of the encoded stream (without
    /// copying when they lie in one piece). Returns an empty buffer when
    /// nothing is pending.
    pub fn take(&mut self, max: usize) -> Bytes {
        self.stream.take(max)
    }

    /// Copies up to `max` bytes off the front of the encoded stream onto
    /// the end of `out` (a record being built); returns how many.
    pub fn take_into(&mut self, out: &mut BytesMut, max: usize) -> usize {
        self.stream.take_into(out, max)
    }

    /// Drops everything pending; returns how many bytes that was.
    pub fn clear(&mut self) -> usize {
        self.stream.clear()
    }
}

/// Reassembles length-prefixed messages from a byte stream fed in any
/// chunking.
#[derive(Debug)]
pub struct EnvelopeDecoder {
    buf: BytesMut,
    max: usize,
}

impl EnvelopeDecoder {
    /// An empty decoder that rejects messages longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max,
        }
    }

    /// The largest message this decoder accepts.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Appends received stream bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, `Ok(None)` if more bytes are needed, or
    /// [`EnvelopeStreamError::TooLarge`] if the next declared length exceeds the
    /// limit (the error repeats on every later call: the stream cannot be
    /// resynchronised).
    #[allow(
        clippy::should_implement_trait,
        reason = "fallible, so not an Iterator; the name is the agreed API"
    )]
    pub fn next(&mut self) -> Result<Option<Bytes>, EnvelopeStreamError> {
        let Some(prefix) = self.buf.get(..LEN_PREFIX) else {
            return Ok(None);
        };
        let mut raw = [0u8; LEN_PREFIX];
        raw.copy_from_slice(prefix);
        let declared = u32::from_be_bytes(raw);
        let len = usize::try_from(declared).unwrap_or(usize::MAX);
        if len > self.max {
            return Err(EnvelopeStreamError::TooLarge { len, max: self.max });
        }
        let needed = LEN_PREFIX.saturating_add(len);
        if self.buf.len() < needed {
            // The length is checked: make room for the rest of this message
            // once, rather than growing piecemeal as it arrives.
            self.buf.reserve(needed - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(LEN_PREFIX);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// Bytes received but not yet returned as messages.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The buffer itself, for a caller that decrypts a record in place at
    /// its end and then keeps only the record's body.
    pub(crate) fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode_all(msgs: &[Vec<u8>]) -> Vec<u8> {
        let mut enc = EnvelopeEncoder::new();
        for m in msgs {
            enc.push(m).unwrap();
        }
        let mut out = Vec::new();
        while enc.pending() > 0 {
            out.extend_from_slice(&enc.take(7));
        }
        out
    }

    #[test]
    fn round_trip_simple() {
        let msgs = vec![b"hello".to_vec(), Vec::new(), vec![0xab; 300]];
        let stream = encode_all(&msgs);
        assert_eq!(stream.len(), 3 * 4 + 5 + 300);
        let mut dec = EnvelopeDecoder::new(1000);
        dec.feed(&stream);
        for m in &msgs {
            assert_eq!(dec.next().unwrap().unwrap(), m.as_slice());
        }
        assert_eq!(dec.next().unwrap(), None);
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn encoder_rejects_oversized() {
        let mut enc = EnvelopeEncoder::new();
        let big = vec![0u8; MAX_ENVELOPE + 1];
        assert_eq!(
            enc.push(&big),
            Err(EnvelopeStreamError::TooLarge {
                len: MAX_ENVELOPE + 1,
                max: MAX_ENVELOPE
            })
        );
        assert_eq!(enc.pending(), 0);
        enc.push(&big[..MAX_ENVELOPE]).unwrap();
        assert_eq!(enc.pending(), MAX_ENVELOPE + 4);
        let mut small = EnvelopeEncoder::with_max(10);
        assert!(small.push(&[0; 11]).is_err());
        assert!(small.push(&[0; 10]).is_ok());
    }

    #[test]
    fn take_on_empty_is_empty() {
        let mut enc = EnvelopeEncoder::default();
        assert!(enc.take(100).is_empty());
        enc.push(b"ab").unwrap();
        assert_eq!(enc.take(0).len(), 0);
        assert_eq!(enc.take(100).as_ref(), &[0, 0, 0, 2, b'a', b'b']);
    }

    fn output(seq: u64, data: Bytes) -> crate::pb::session::Envelope {
        use crate::pb::session::{Envelope, TerminalEvent, envelope::Body, terminal_event::Kind};
        Envelope {
            call_id: 7,
            trace: None,
            send_time_unix_nanos: 1,
            body: Some(Body::Event(TerminalEvent {
                seq,
                kind: Some(Kind::Stdout(data)),
                timings: None,
            })),
        }
    }

    fn framed(msg: &impl prost::Message) -> Vec<u8> {
        let mut v = (msg.encoded_len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(&msg.encode_to_vec());
        v
    }

    #[test]
    fn a_large_field_is_shared_not_copied() {
        let data = Bytes::from(vec![0x5a; 40_000]);
        let mut enc = EnvelopeEncoder::new();
        enc.push(b"before").unwrap();
        enc.push_message(&output(1, data.clone())).unwrap();
        let want = [
            &[0, 0, 0, 6][..],
            b"before",
            &framed(&output(1, data.clone())),
        ]
        .concat();
        assert_eq!(enc.pending(), want.len());
        // The stream holds the field itself: what comes before it in one
        // piece, then the field's own memory.
        let head = enc.take(want.len() - data.len());
        assert_eq!(head.as_ref(), &want[..head.len()]);
        let field = enc.take(usize::MAX);
        assert_eq!(field.as_ptr(), data.as_ptr(), "the field was copied");
        assert_eq!(field.len(), data.len());
        assert_eq!(enc.pending(), 0);
        // A small field is written in place.
        enc.push_message(&output(2, Bytes::from_static(b"small")))
            .unwrap();
        assert_eq!(
            enc.take(usize::MAX).as_ref(),
            framed(&output(2, Bytes::from_static(b"small")))
        );
    }

    #[test]
    fn an_oversized_message_leaves_the_stream_as_it_was() {
        let mut enc = EnvelopeEncoder::with_max(10_000);
        enc.push(b"kept").unwrap();
        let err = enc.push_message(&output(1, Bytes::from(vec![1; 20_000])));
        assert!(matches!(
            err,
            Err(EnvelopeStreamError::TooLarge { max: 10_000, .. })
        ));
        assert_eq!(
            enc.take(usize::MAX).as_ref(),
            &[&[0, 0, 0, 4][..], b"kept"].concat()
        );
        assert_eq!(enc.clear(), 0);
    }

    /// A message that writes one byte more than it says it will.
    #[derive(Debug)]
    struct Lying(Bytes);

    impl prost::Message for Lying {
        fn encode_raw(&self, buf: &mut impl BufMut) {
            prost::encoding::bytes::encode(1, &self.0, buf);
            buf.put_u8(0);
        }
        fn merge_field(
            &mut self,
            _: u32,
            _: prost::encoding::WireType,
            _: &mut impl Buf,
            _: prost::encoding::DecodeContext,
        ) -> Result<(), prost::DecodeError> {
            Ok(())
        }
        fn encoded_len(&self) -> usize {
            prost::encoding::bytes::encoded_len(1, &self.0)
        }
        fn clear(&mut self) {}
    }

    #[test]
    fn a_message_that_writes_other_than_its_length_is_taken_back_whole() {
        for n in [10, 40_000] {
            let mut enc = EnvelopeEncoder::new();
            enc.push(b"kept").unwrap();
            let err = enc.push_message(&Lying(Bytes::from(vec![1; n])));
            assert!(matches!(err, Err(EnvelopeStreamError::TooLarge { .. })));
            // Written in place or shared, all of it is gone again.
            assert_eq!(enc.pending(), 8, "a field of {n} bytes");
            enc.push(b"next").unwrap();
            assert_eq!(
                enc.take(usize::MAX).as_ref(),
                &[&[0, 0, 0, 4][..], b"kept", &[0, 0, 0, 4], b"next"].concat()
            );
        }
    }

    #[test]
    fn oversized_length_is_rejected_before_allocation() {
        let mut dec = EnvelopeDecoder::new(16);
        dec.feed(&[0xff, 0xff, 0xff, 0xff]);
        let err = dec.next().unwrap_err();
        assert_eq!(
            err,
            EnvelopeStreamError::TooLarge {
                len: 0xffff_ffff,
                max: 16
            }
        );
        assert!(dec.buf.capacity() < 1024);
        // Sticky.
        assert!(dec.next().is_err());
    }

    #[test]
    fn partial_prefix_and_body_wait() {
        let mut dec = EnvelopeDecoder::new(16);
        dec.feed(&[0, 0]);
        assert_eq!(dec.next().unwrap(), None);
        dec.feed(&[0, 3, b'x']);
        assert_eq!(dec.next().unwrap(), None);
        dec.feed(b"yz");
        assert_eq!(dec.next().unwrap().unwrap().as_ref(), b"xyz");
    }

    proptest! {
        #[test]
        fn rechunked_stream_yields_exactly_the_messages(
            msgs in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..600), 0..20),
            cuts in prop::collection::vec(1usize..257, 1..64),
        ) {
            let stream = encode_all(&msgs);
            let mut dec = EnvelopeDecoder::new(600);
            let mut got = Vec::new();
            let mut pos = 0;
            let mut i = 0;
            while pos < stream.len() {
                let n = cuts[i % cuts.len()].min(stream.len() - pos);
                i += 1;
                dec.feed(&stream[pos..pos + n]);
                pos += n;
                while let Some(m) = dec.next().unwrap() {
                    got.push(m.to_vec());
                }
            }
            prop_assert_eq!(got, msgs);
            prop_assert_eq!(dec.buffered(), 0);
        }

        #[test]
        fn messages_with_shared_fields_come_out_whole_however_taken(
            sizes in prop::collection::vec(0usize..9000, 1..12),
            cuts in prop::collection::vec((1usize..20_000, any::<bool>()), 1..32),
        ) {
            let mut enc = EnvelopeEncoder::new();
            let mut want = Vec::new();
            for (i, n) in sizes.iter().enumerate() {
                let data = Bytes::from(vec![i as u8; *n]);
                if i % 3 == 2 {
                    enc.push(&data).unwrap();
                    want.extend_from_slice(&(*n as u32).to_be_bytes());
                    want.extend_from_slice(&data);
                } else {
                    let msg = output(i as u64, data);
                    enc.push_message(&msg).unwrap();
                    want.extend_from_slice(&framed(&msg));
                }
            }
            prop_assert_eq!(enc.pending(), want.len());
            let mut got = Vec::new();
            let mut i = 0;
            while enc.pending() > 0 {
                let (n, into) = cuts[i % cuts.len()];
                i += 1;
                let before = enc.pending();
                if into {
                    let mut out = BytesMut::from(&b"x"[..]);
                    let k = enc.take_into(&mut out, n);
                    prop_assert_eq!(k, n.min(before));
                    got.extend_from_slice(&out[1..]);
                } else {
                    let b = enc.take(n);
                    prop_assert_eq!(b.len(), n.min(before));
                    got.extend_from_slice(&b);
                }
                prop_assert_eq!(enc.pending(), before - n.min(before));
            }
            prop_assert_eq!(got, want);
        }

        #[test]
        fn truncated_stream_yields_none_not_error(
            msgs in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let stream = encode_all(&msgs);
            let cut = cut.index(stream.len());
            let mut dec = EnvelopeDecoder::new(300);
            dec.feed(&stream[..cut]);
            let mut n = 0;
            loop {
                match dec.next() {
                    Ok(Some(_)) => n += 1,
                    Ok(None) => break,
                    Err(e) => prop_assert!(false, "unexpected error {e}"),
                }
            }
            prop_assert!(n < msgs.len());
        }

        #[test]
        fn garbage_lengths_over_max_are_too_large(
            max in 0usize..100_000,
            extra in 1u32..1000,
            tail in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let declared = u32::try_from(max).unwrap().saturating_add(extra);
            let mut dec = EnvelopeDecoder::new(max);
            dec.feed(&declared.to_be_bytes());
            dec.feed(&tail);
            let err = dec.next().unwrap_err();
            prop_assert_eq!(err, EnvelopeStreamError::TooLarge { len: declared as usize, max });
            prop_assert!(dec.buf.capacity() <= 4 + tail.len() + 64);
        }
    }
}
