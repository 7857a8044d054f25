//! A call's stage timings as the final event carries them: the bytes of a
//! `CallTimings` message, decoded only when they are placed, after the
//! caller has its final event (decoding a dozen stages and their
//! attributes takes longer than the rest of the event).

use bytes::Bytes;
use prost::Message;

use crate::pb::session::CallTimings;

/// The exec-server's stage timings for one call, still encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedTimings(Bytes);

impl EncodedTimings {
    /// The timings as they travel.
    pub fn encode(timings: &CallTimings) -> Self {
        Self(Bytes::from(timings.encode_to_vec()))
    }

    /// Bytes that are a `CallTimings` message: as they came in a final
    /// event, or as a writer of the message made them.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        Self(bytes.into())
    }

    /// The timings' bytes, to send.
    pub(crate) fn into_wire(self) -> Bytes {
        self.0
    }

    /// Decodes them: an error if the peer sent bytes that are not a
    /// `CallTimings` (the call's other events stand; only its stages are
    /// lost).
    pub fn decode(&self) -> Result<CallTimings, prost::DecodeError> {
        CallTimings::decode(self.0.clone())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::pb::session::{StageAttribute, StageTiming, stage_attribute};

    #[test]
    fn timings_decode_to_what_was_encoded_and_garbage_is_an_error() {
        let timings = CallTimings {
            version: 1,
            stages: vec![StageTiming {
                name: "process.run".into(),
                span_id: 7,
                parent_span_id: 3,
                start_ns: -5,
                duration_ns: 9,
                error: false,
                attributes: vec![StageAttribute {
                    key: "process.pid".into(),
                    value: Some(stage_attribute::Value::Int(42)),
                }],
            }],
            dropped: 0,
            host: "box".into(),
        };
        let encoded = EncodedTimings::encode(&timings);
        assert_eq!(encoded.clone().into_wire(), timings.encode_to_vec());
        assert_eq!(encoded.decode().unwrap(), timings);
        let wire = EncodedTimings::from_bytes(encoded.clone().into_wire());
        assert_eq!(wire, encoded);
        assert!(
            EncodedTimings::from_bytes(Bytes::from_static(&[0x12, 0xff]))
                .decode()
                .is_err()
        );
    }
}
