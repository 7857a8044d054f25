//! The session after the handshake: records, rekey and authenticated close.

use std::fmt;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::cipher::{Cipher, KEY_LEN};
use super::config::SessionConfig;
use super::error::TransportError;
use crate::envelope_stream::{EnvelopeDecoder, EnvelopeEncoder};
use crate::keys::PublicKey;
use crate::limits::{MAX_ENVELOPE, MAX_NOISE_MESSAGE, MAX_NOISE_PLAINTEXT, NOISE_TAG};

/// Record type: the body is the next bytes of the envelope stream.
pub(crate) const RECORD_DATA: u8 = 0x01;
/// Record type: the sender rekeys its sending key right after this record;
/// the receiver rekeys its receiving key right after reading it. Empty body.
pub(crate) const RECORD_REKEY: u8 = 0x02;
/// Record type: authenticated close; the body is an optional UTF-8 reason of
/// at most [`MAX_CLOSE_REASON`] bytes. Nothing may follow it.
pub(crate) const RECORD_CLOSE: u8 = 0x03;
/// Longest close reason, in bytes.
pub(crate) const MAX_CLOSE_REASON: usize = 256;

/// Largest piece of the envelope stream in one `DATA` record.
const MAX_DATA_BODY: usize = MAX_NOISE_PLAINTEXT - 1;

/// Counters for observability.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Noise messages produced (all record types).
    pub messages_sent: u64,
    /// Noise messages received and authenticated.
    pub messages_received: u64,
    /// Ciphertext bytes produced.
    pub bytes_sent: u64,
    /// Ciphertext bytes received and authenticated.
    pub bytes_received: u64,
    /// `REKEY` records sent.
    pub rekeys_sent: u64,
    /// `REKEY` records received.
    pub rekeys_received: u64,
}

/// An established Noise session: encrypts the outgoing envelope stream into
/// Noise messages and decrypts incoming ones back into envelopes.
///
/// Driving it: after [`send`](Self::send), call
/// [`poll_transmit`](Self::poll_transmit) until it returns `None` and forward
/// each message; after [`receive`](Self::receive), call
/// [`poll_envelope`](Self::poll_envelope) until it returns `None` (the
/// transport buffers whatever has not been taken).
///
/// Any error from `receive` or `poll_envelope`, and any encryption failure,
/// ends the session: every later call returns [`TransportError::Dead`].
pub struct Transport {
    send: Cipher,
    recv: Cipher,
    remote: PublicKey,
    cfg: SessionConfig,
    encoder: EnvelopeEncoder,
    decoder: EnvelopeDecoder,
    sent_since_rekey: u64,
    last_rekey: Instant,
    closed: bool,
    peer_closed: Option<String>,
    dead: bool,
    stats: TransportStats,
    /// The handshake's hash (what a session's resume secret and a resume's
    /// proof are bound to).
    handshake_hash: Vec<u8>,
    /// Envelope-stream bytes taken into DATA records so far.
    stream_sent: u64,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("remote", &self.remote.short())
            .field("suite", &self.cfg.suite)
            .field("closed", &self.closed)
            .field("peer_closed", &self.peer_closed.is_some())
            .field("dead", &self.dead)
            .field("pending", &self.encoder.pending())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// A session keyed with the handshake's split: `send` for this side's
    /// records, `recv` for the peer's.
    pub(crate) fn new(
        (send, recv): (&[u8; KEY_LEN], &[u8; KEY_LEN]),
        remote: PublicKey,
        cfg: SessionConfig,
        now: Instant,
    ) -> Result<Self, TransportError> {
        let max = cfg.max_envelope.min(MAX_ENVELOPE);
        Ok(Self {
            send: Cipher::new(cfg.suite, send)?,
            recv: Cipher::new(cfg.suite, recv)?,
            remote,
            cfg,
            encoder: EnvelopeEncoder::with_max(max),
            decoder: EnvelopeDecoder::new(max),
            sent_since_rekey: 0,
            last_rekey: now,
            closed: false,
            peer_closed: None,
            dead: false,
            stats: TransportStats::default(),
            handshake_hash: Vec::new(),
            stream_sent: 0,
        })
    }

    /// Records the handshake's hash.
    pub(crate) fn with_handshake_hash(mut self, hash: &[u8]) -> Self {
        self.handshake_hash = hash.to_vec();
        self
    }

    /// The hash of the handshake that made this session.
    pub(crate) fn handshake_hash(&self) -> &[u8] {
        &self.handshake_hash
    }

    /// Queues one encoded envelope. Fails if this side has closed, the
    /// session is dead, or the envelope exceeds the configured limit.
    pub fn send(&mut self, envelope: &[u8]) -> Result<(), TransportError> {
        self.check_alive()?;
        if self.closed {
            return Err(TransportError::Closed);
        }
        self.encoder.push(envelope)?;
        Ok(())
    }

    /// Queues one message, encoding it straight into the stream (no
    /// intermediate buffer). Fails like [`send`](Self::send).
    pub(crate) fn send_message(
        &mut self,
        message: &impl prost::Message,
    ) -> Result<(), TransportError> {
        self.check_alive()?;
        if self.closed {
            return Err(TransportError::Closed);
        }
        self.encoder.push_message(message)?;
        Ok(())
    }

    /// Drops everything queued and not yet sent (the session is ending and
    /// it is no longer worth sending). Returns how many bytes were dropped.
    pub(crate) fn discard_pending(&mut self) -> usize {
        self.encoder.clear()
    }

    /// The next Noise message to send, or `None` when nothing is pending.
    ///
    /// If a rekey is due (at least `rekey_after_messages` messages, or
    /// `rekey_after` of time, since the last one) and there is data to send,
    /// a `REKEY` message comes first. Otherwise up to 65,518 bytes of the
    /// pending stream go out as one `DATA` message, so small envelopes share
    /// a message and a large one spans several. Every message is at most
    /// [`MAX_NOISE_MESSAGE`] bytes.
    pub fn poll_transmit(&mut self, now: Instant) -> Result<Option<Bytes>, TransportError> {
        self.poll_transmit_until(now, None)
    }

    /// [`poll_transmit`](Self::poll_transmit), except that a `DATA` message
    /// does not run past stream offset `boundary` (when it lies ahead), so
    /// the envelope ending there is the last thing in its message. Senders
    /// use it to give a traced envelope a message (and frame) of its own.
    pub(crate) fn poll_transmit_until(
        &mut self,
        now: Instant,
        boundary: Option<u64>,
    ) -> Result<Option<Bytes>, TransportError> {
        self.check_alive()?;
        if self.closed || self.encoder.pending() == 0 {
            return Ok(None);
        }
        if self.rekey_due(now) {
            let msg = self.encrypt_record(RECORD_REKEY, &[])?;
            self.send.rekey()?;
            self.sent_since_rekey = 0;
            self.last_rekey = now;
            self.stats.rekeys_sent += 1;
            return Ok(Some(msg));
        }
        let limit = boundary
            .filter(|b| *b > self.stream_sent)
            .and_then(|b| usize::try_from(b - self.stream_sent).ok())
            .map_or(MAX_DATA_BODY, |n| n.min(MAX_DATA_BODY));
        // The body straight from the stream's pieces, its type as a
        // trailer, and room for the tag: encrypted in place, one copy of
        // the body in all.
        let n = limit.min(self.encoder.pending());
        let mut out = BytesMut::with_capacity(n + 1 + NOISE_TAG);
        self.stream_sent += self.encoder.take_into(&mut out, n) as u64;
        out.extend_from_slice(&[RECORD_DATA]);
        let msg = self.seal_record(out)?;
        self.sent_since_rekey = self.sent_since_rekey.saturating_add(1);
        Ok(Some(msg))
    }

    /// Whether [`poll_transmit`](Self::poll_transmit) has something to send.
    pub(crate) fn has_pending(&self) -> bool {
        !self.dead && !self.closed && self.encoder.pending() > 0
    }

    /// Bytes of envelope stream queued but not yet sent.
    pub(crate) fn pending_bytes(&self) -> usize {
        self.encoder.pending()
    }

    /// The envelope-stream offset just past the last envelope queued by
    /// [`send`](Self::send). An envelope queued when this was `n` has left
    /// in a message once [`sent_offset`](Self::sent_offset) reaches `n`
    /// (senders use it to end per-message framing spans).
    pub(crate) fn queued_offset(&self) -> u64 {
        self.stream_sent + self.encoder.pending() as u64
    }

    /// Envelope-stream bytes that have left in DATA messages so far.
    pub(crate) fn sent_offset(&self) -> u64 {
        self.stream_sent
    }

    /// Produces the authenticated `CLOSE` message with `reason` (cut to
    /// [`MAX_CLOSE_REASON`] bytes at a character boundary). Afterwards
    /// [`send`](Self::send) fails with [`TransportError::Closed`] and
    /// [`poll_transmit`](Self::poll_transmit) returns `None`; anything still
    /// pending is discarded, so drain `poll_transmit` first. Receiving
    /// continues to work.
    pub fn close(&mut self, reason: &str) -> Result<Bytes, TransportError> {
        self.check_alive()?;
        if self.closed {
            return Err(TransportError::Closed);
        }
        let reason = truncate_utf8(reason, MAX_CLOSE_REASON);
        let msg = self.encrypt_record(RECORD_CLOSE, reason.as_bytes())?;
        self.closed = true;
        self.encoder.clear();
        Ok(msg)
    }

    /// Ends the session cleanly: every message still pending, then the
    /// authenticated `CLOSE` with `reason`, in the order to send them.
    pub(crate) fn flush_and_close(
        &mut self,
        reason: &str,
        now: Instant,
    ) -> Result<Vec<Bytes>, TransportError> {
        let mut out = Vec::new();
        while let Some(msg) = self.poll_transmit(now)? {
            out.push(msg);
        }
        out.push(self.close(reason)?);
        Ok(out)
    }

    /// Whether this side has closed the session.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether an earlier error ended the session.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Decrypts and processes one Noise message from the peer. Lengths are
    /// checked first (16..=65,535 bytes); a message that fails
    /// authentication, a malformed or unknown record, or any record after
    /// the peer's close ends the session.
    pub fn receive(&mut self, ciphertext: &[u8]) -> Result<(), TransportError> {
        self.check_alive()?;
        let result = self.receive_inner(ciphertext);
        if result.is_err() {
            self.dead = true;
        }
        result
    }

    fn receive_inner(&mut self, ciphertext: &[u8]) -> Result<(), TransportError> {
        if ciphertext.len() > MAX_NOISE_MESSAGE || ciphertext.len() < NOISE_TAG {
            return Err(TransportError::Malformed);
        }
        // Opened in place at the end of the envelope stream's buffer: a
        // DATA record's body is then already where it belongs.
        let buf = self.decoder.buffer_mut();
        let start = buf.len();
        buf.extend_from_slice(ciphertext);
        let opened = self.recv.open(buf.get_mut(start..).unwrap_or_default());
        let plain = match opened {
            Ok(n) => n,
            Err(e) => {
                buf.truncate(start);
                return Err(e);
            }
        };
        self.stats.messages_received += 1;
        self.stats.bytes_received += ciphertext.len() as u64;
        // The record's type is its last byte.
        let Some(body_len) = plain.checked_sub(1) else {
            buf.truncate(start);
            return Err(TransportError::Malformed);
        };
        let kind = buf.get(start + body_len).copied().unwrap_or(0);
        if self.peer_closed.is_some() {
            buf.truncate(start);
            return Err(TransportError::AfterClose);
        }
        match kind {
            RECORD_DATA => buf.truncate(start + body_len),
            RECORD_REKEY => {
                buf.truncate(start);
                if body_len != 0 {
                    return Err(TransportError::Malformed);
                }
                self.recv.rekey()?;
                self.stats.rekeys_received += 1;
            }
            RECORD_CLOSE => {
                let reason = buf
                    .get(start..start + body_len)
                    .filter(|r| r.len() <= MAX_CLOSE_REASON)
                    .and_then(|r| std::str::from_utf8(r).ok())
                    .map(str::to_owned);
                buf.truncate(start);
                self.peer_closed = Some(reason.ok_or(TransportError::Malformed)?);
            }
            other => {
                buf.truncate(start);
                return Err(TransportError::UnknownRecord(other));
            }
        }
        Ok(())
    }

    /// The next complete envelope received, or `None` if more messages are
    /// needed. An envelope declared longer than the configured limit ends
    /// the session.
    pub fn poll_envelope(&mut self) -> Result<Option<Bytes>, TransportError> {
        self.check_alive()?;
        match self.decoder.next() {
            Ok(env) => Ok(env),
            Err(e) => {
                self.dead = true;
                Err(e.into())
            }
        }
    }

    /// The peer's reason, once its authenticated close has been received.
    pub fn peer_closed(&self) -> Option<&str> {
        self.peer_closed.as_deref()
    }

    /// The peer's authenticated static key.
    #[cfg(test)]
    pub(crate) fn remote_static(&self) -> PublicKey {
        self.remote
    }

    /// The session's configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// Counters for observability.
    pub fn stats(&self) -> TransportStats {
        self.stats
    }

    fn check_alive(&self) -> Result<(), TransportError> {
        if self.dead {
            return Err(TransportError::Dead);
        }
        Ok(())
    }

    fn rekey_due(&self, now: Instant) -> bool {
        if self.sent_since_rekey == 0 {
            // The current key has not been used: nothing to refresh.
            return false;
        }
        self.sent_since_rekey >= self.cfg.rekey_after_messages
            || now.saturating_duration_since(self.last_rekey) >= self.cfg.rekey_after
    }

    /// Encrypts one record. Any failure ends the session.
    pub(super) fn encrypt_record(
        &mut self,
        kind: u8,
        body: &[u8],
    ) -> Result<Bytes, TransportError> {
        let result = self.encrypt_record_inner(kind, body);
        if result.is_err() {
            self.dead = true;
        }
        result
    }

    fn encrypt_record_inner(&mut self, kind: u8, body: &[u8]) -> Result<Bytes, TransportError> {
        if body.len() > MAX_DATA_BODY {
            return Err(TransportError::Noise("record too long".into()));
        }
        // The body, its type as a trailer, and room for the tag: encrypted
        // in place, one copy of the body in all.
        let mut out = BytesMut::with_capacity(body.len() + 1 + NOISE_TAG);
        out.extend_from_slice(body);
        out.extend_from_slice(&[kind]);
        self.seal_record(out)
    }

    /// Encrypts a record's body and type trailer (`out`) in place. Any
    /// failure ends the session.
    fn seal_record(&mut self, mut out: BytesMut) -> Result<Bytes, TransportError> {
        if let Err(e) = self.send.seal(&mut out) {
            self.dead = true;
            return Err(e);
        }
        let n = out.len();
        self.stats.messages_sent += 1;
        self.stats.bytes_sent += n as u64;
        Ok(out.freeze())
    }
}

#[cfg(any(test, feature = "fuzzing"))]
impl Transport {
    /// Encrypts an arbitrary plaintext, bypassing the record layer.
    #[doc(hidden)]
    pub fn encrypt_raw(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, TransportError> {
        let mut out = BytesMut::from(plaintext);
        self.send.seal(&mut out)?;
        Ok(out.to_vec())
    }
}

#[cfg(feature = "fuzzing")]
impl Transport {
    /// Two ends of one session keyed with fixed keys, with no handshake:
    /// for the record layer's fuzz target only (what the first sends, the
    /// second receives). Never built outside the `fuzzing` feature.
    #[doc(hidden)]
    pub fn fuzzing_pair(
        remote: PublicKey,
        cfg: SessionConfig,
        now: Instant,
    ) -> Result<(Transport, Transport), TransportError> {
        let (a, b) = ([1u8; KEY_LEN], [2u8; KEY_LEN]);
        Ok((
            Transport::new((&a, &b), remote, cfg, now)?,
            Transport::new((&b, &a), remote, cfg, now)?,
        ))
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}
