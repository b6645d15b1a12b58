//! Frames on quinn streams, for the I/O shells (feature `stream`). The framing rules are those
//! of [`crate::frame`]: a frame over the maximum is refused from its header, before its payload
//! is read; a stream that ends inside a frame is [`FrameError::Truncated`].

use crate::frame::{self, FrameError, HEADER_LEN};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a frame could not be read from a stream.
#[derive(Debug, thiserror::Error)]
pub enum StreamReadError {
    /// The frame itself was refused (too large, truncated, not a valid message).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The stream or connection failed.
    #[error("stream read failed: {0}")]
    Read(#[from] quinn::ReadError),
}

/// Why a frame could not be written to a stream.
#[derive(Debug, thiserror::Error)]
pub enum StreamWriteError {
    /// The message could not be framed (too large, not encodable).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The stream or connection failed.
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
}

/// Reads until `buf` is full; returns how many bytes arrived before the stream ended.
async fn fill(recv: &mut quinn::RecvStream, buf: &mut [u8]) -> Result<usize, StreamReadError> {
    let mut got = 0;
    while got < buf.len() {
        match recv.read(&mut buf[got..]).await? {
            Some(n) => got += n,
            None => break,
        }
    }
    Ok(got)
}

/// Reads one frame's raw payload into `buf` (reused), e.g. a hello whose version is checked
/// before the rest is decoded. `Ok(false)` when the peer finished the stream between frames.
pub async fn read_frame_payload(
    recv: &mut quinn::RecvStream,
    max: usize,
    buf: &mut Vec<u8>,
) -> Result<bool, StreamReadError> {
    let mut header = [0u8; HEADER_LEN];
    match fill(recv, &mut header).await? {
        0 => return Ok(false),
        HEADER_LEN => {}
        got => {
            return Err(FrameError::Truncated {
                needed: HEADER_LEN,
                got,
            }
            .into());
        }
    }
    let len = frame::parse_header(header, max)?;
    buf.clear();
    buf.resize(len, 0);
    let got = fill(recv, buf).await?;
    if got < len {
        return Err(FrameError::Truncated {
            needed: HEADER_LEN + len,
            got: HEADER_LEN + got,
        }
        .into());
    }
    Ok(true)
}

/// Reads one frame into `buf` (reused) and decodes it. `Ok(None)` when the peer finished the
/// stream between frames.
pub async fn read_frame<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max: usize,
    buf: &mut Vec<u8>,
) -> Result<Option<T>, StreamReadError> {
    if !read_frame_payload(recv, max, buf).await? {
        return Ok(None);
    }
    Ok(Some(frame::decode_payload(buf, max)?))
}

/// Frames `msg` into `buf` (reused) and writes it.
pub async fn write_frame<T: Serialize>(
    send: &mut quinn::SendStream,
    msg: &T,
    max: usize,
    buf: &mut Vec<u8>,
) -> Result<(), StreamWriteError> {
    buf.clear();
    frame::encode_frame(msg, max, buf)?;
    send.write_all(buf).await?;
    Ok(())
}
