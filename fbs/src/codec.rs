//! Model <-> flatbuffers. The only module that touches generated types. (stub: being written)
use crate::model::Message;
use std::fmt;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Failed flatbuffers verification.
    Invalid(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Invalid(s) => write!(f, "invalid message: {s}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Encodes one message as an envelope.
pub fn encode(_msg: &Message) -> Vec<u8> {
    unimplemented!("codec is being written")
}

/// Decodes and verifies one envelope.
pub fn decode(_bytes: &[u8]) -> Result<Message, DecodeError> {
    Err(DecodeError::Invalid("codec is being written".into()))
}
