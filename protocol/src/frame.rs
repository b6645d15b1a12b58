//! Stream framing: each message on a QUIC stream is a big-endian `u32` length followed by that
//! many bytes of codec payload.
//!
//! A frame longer than the configured maximum is refused from its header alone, before any of
//! its payload is buffered; a stream that ends inside a frame is [`FrameError::Truncated`].

use crate::codec::{self, CodecError};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;
/// Default maximum payload of one frame (64 KiB).
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024;

/// Why a frame could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The header announces a payload larger than the maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Announced (or, when writing, actual) payload length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The input ended before the frame did.
    #[error("truncated frame: {needed} bytes needed, {got} available")]
    Truncated {
        /// Bytes the frame needs, header included.
        needed: usize,
        /// Bytes that were there.
        got: usize,
    },
    /// The payload is not a valid message.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Reads a frame header and checks the announced length against `max`.
pub fn parse_header(header: [u8; HEADER_LEN], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Appends one frame holding `msg` to `out`. Fails, leaving `out` as it was, when the payload
/// would exceed `max`.
pub fn encode_frame<T: Serialize>(
    msg: &T,
    max: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    if let Err(e) = codec::encode_into(msg, out) {
        out.truncate(start);
        return Err(e.into());
    }
    let len = out.len() - start - HEADER_LEN;
    if len > max || u32::try_from(len).is_err() {
        out.truncate(start);
        return Err(FrameError::TooLarge { len, max });
    }
    let len = u32::try_from(len).expect("invariant: checked above");
    out[start..start + HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Decodes the payload of a frame whose header has been read already.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8], max: usize) -> Result<T, FrameError> {
    if payload.len() > max {
        return Err(FrameError::TooLarge {
            len: payload.len(),
            max,
        });
    }
    Ok(codec::decode(payload, max)?)
}

/// Decodes the first frame in `buf` if it is complete: `Ok(Some((msg, consumed)))`, or
/// `Ok(None)` when more bytes are needed. An oversized header fails at once.
pub fn try_decode_frame<T: DeserializeOwned>(
    buf: &[u8],
    max: usize,
) -> Result<Option<(T, usize)>, FrameError> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = parse_header(*header, max)?;
    let Some(payload) = buf[HEADER_LEN..].get(..len) else {
        return Ok(None);
    };
    Ok(Some((decode_payload(payload, max)?, HEADER_LEN + len)))
}

/// Decodes the first frame of `buf`, which must hold it whole (for a stream that has ended).
pub fn decode_frame<T: DeserializeOwned>(buf: &[u8], max: usize) -> Result<(T, usize), FrameError> {
    match try_decode_frame(buf, max)? {
        Some(done) => Ok(done),
        None => {
            let needed = match buf.first_chunk::<HEADER_LEN>() {
                Some(h) => HEADER_LEN + u32::from_be_bytes(*h) as usize,
                None => HEADER_LEN,
            };
            Err(FrameError::Truncated {
                needed,
                got: buf.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_partial() {
        let mut buf = Vec::new();
        encode_frame(&"hello".to_owned(), 64, &mut buf).expect("encode");
        encode_frame(&42u64, 64, &mut buf).expect("encode");
        let (s, used) = decode_frame::<String>(&buf, 64).expect("first");
        assert_eq!(s, "hello");
        let (n, used2) = decode_frame::<u64>(&buf[used..], 64).expect("second");
        assert_eq!((n, used + used2), (42, buf.len()));
        assert!(
            try_decode_frame::<String>(&buf[..used - 1], 64)
                .expect("partial")
                .is_none()
        );
    }

    #[test]
    fn oversized_header_is_refused_without_payload() {
        let header = (1_000_000u32).to_be_bytes();
        assert!(matches!(
            try_decode_frame::<String>(&header, DEFAULT_MAX_FRAME),
            Err(FrameError::TooLarge {
                len: 1_000_000,
                max: DEFAULT_MAX_FRAME
            })
        ));
    }

    #[test]
    fn oversized_message_is_not_written() {
        let mut buf = vec![9];
        let err = encode_frame(&"x".repeat(100), 64, &mut buf).expect_err("too large");
        assert!(
            matches!(err, FrameError::TooLarge { len: 101, max: 64 }),
            "{err}"
        );
        assert_eq!(buf, vec![9]);
    }

    #[test]
    fn truncated_frame_names_sizes() {
        let mut buf = Vec::new();
        encode_frame(&"hello".to_owned(), 64, &mut buf).expect("encode");
        let err = decode_frame::<String>(&buf[..5], 64).expect_err("truncated");
        assert!(
            matches!(err, FrameError::Truncated { needed: 10, got: 5 }),
            "{err}"
        );
        let err = decode_frame::<String>(&buf[..2], 64).expect_err("truncated header");
        assert!(
            matches!(err, FrameError::Truncated { needed: 4, got: 2 }),
            "{err}"
        );
    }
}
