//! The codec: every message is serde + bincode 2 (`bincode::serde`, standard configuration:
//! little endian, variable-length integers).
//!
//! Decoding never trusts a length read from the wire:
//! - strings and byte buffers are claimed against a byte limit before they are allocated (the
//!   caller's limit, rounded down to a power of two, never above the input's own maximum);
//! - sequences are [`BoundedVec`]s, which refuse more than their declared maximum of elements and
//!   pre-allocate no more than that.
//!
//! So decoding arbitrary bytes returns a value or a [`CodecError`], never panics, and never
//! allocates more than the limit it was given (the property tests measure it).

use serde::de::{DeserializeOwned, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

/// The smallest decode limit honoured; smaller limits are raised to it.
pub const MIN_DECODE_LIMIT: usize = 1024;
/// The largest decode limit honoured; larger limits are lowered to it.
pub const MAX_DECODE_LIMIT: usize = 16 * 1024 * 1024;

/// Why a message could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The bytes are not a valid encoding of the expected message.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// The message type that was expected.
        what: &'static str,
        /// What the decoder found wrong.
        detail: String,
    },
    /// The bytes hold a valid message followed by extra bytes.
    #[error("malformed {what}: {extra} trailing bytes after the message")]
    TrailingBytes {
        /// The message type that was expected.
        what: &'static str,
        /// How many bytes were left over.
        extra: usize,
    },
    /// The message could not be encoded (a value the format cannot hold).
    #[error("cannot encode {what}: {detail}")]
    Encode {
        /// The message type being encoded.
        what: &'static str,
        /// What the encoder reported.
        detail: String,
    },
    /// The encoded message is larger than the room it must fit in.
    #[error("{what} is {len} bytes encoded; at most {max} fit")]
    TooLarge {
        /// The message type being encoded.
        what: &'static str,
        /// Its encoded size.
        len: usize,
        /// The room available.
        max: usize,
    },
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn short_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

/// Encodes `msg`, appending to `out`. `out` keeps its capacity across calls, so a caller that
/// reuses one buffer does not allocate per message.
pub fn encode_into<T: Serialize>(msg: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    bincode::serde::encode_into_std_write(msg, out, config())
        .map(|_| ())
        .map_err(|e| CodecError::Encode {
            what: short_name::<T>(),
            detail: e.to_string(),
        })
}

/// Encodes `msg` into a new buffer.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    encode_into(msg, &mut out)?;
    Ok(out)
}

/// Decodes one whole message from `bytes`; trailing bytes are an error. Nothing it allocates
/// exceeds `limit` bytes (clamped to [`MIN_DECODE_LIMIT`]..=[`MAX_DECODE_LIMIT`]).
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, CodecError> {
    let (msg, used) = decode_prefix::<T>(bytes, limit)?;
    if used != bytes.len() {
        return Err(CodecError::TrailingBytes {
            what: short_name::<T>(),
            extra: bytes.len() - used,
        });
    }
    Ok(msg)
}

/// Decodes one message from the start of `bytes` and says how many bytes it used.
pub fn decode_prefix<T: DeserializeOwned>(
    bytes: &[u8],
    limit: usize,
) -> Result<(T, usize), CodecError> {
    // bincode's limit is a const generic: pick the largest power of two not above `limit`.
    let limit = limit.clamp(MIN_DECODE_LIMIT, MAX_DECODE_LIMIT);
    let exp = usize::BITS - 1 - limit.leading_zeros();
    macro_rules! with_limit {
        ($($e:literal),*) => {
            match exp {
                $($e => bincode::serde::decode_from_slice(bytes, config().with_limit::<{ 1usize << $e }>()),)*
                _ => bincode::serde::decode_from_slice(bytes, config().with_limit::<MAX_DECODE_LIMIT>()),
            }
        };
    }
    let res: Result<(T, usize), _> =
        with_limit!(10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23);
    res.map_err(|e| CodecError::Malformed {
        what: short_name::<T>(),
        detail: e.to_string(),
    })
}

/// A sequence of at most `N` elements.
///
/// Encoded exactly like a `Vec<T>`; decoding refuses a longer sequence and never reserves room
/// for more than `N` elements, whatever length the input claims.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BoundedVec<T, const N: usize>(Vec<T>);

/// A [`BoundedVec`] was given more elements than it may hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{len} elements given; at most {max} allowed")]
pub struct TooManyElements {
    /// How many were given.
    pub len: usize,
    /// The bound.
    pub max: usize,
}

impl<T, const N: usize> BoundedVec<T, N> {
    /// The bound.
    pub const MAX: usize = N;

    /// An empty sequence.
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    /// Wraps `items` if there are at most `N` of them.
    pub fn try_from_vec(items: Vec<T>) -> Result<Self, TooManyElements> {
        if items.len() > N {
            return Err(TooManyElements {
                len: items.len(),
                max: N,
            });
        }
        Ok(Self(items))
    }

    /// Appends `item`, or gives it back when the sequence is full.
    pub fn try_push(&mut self, item: T) -> Result<(), T> {
        if self.0.len() >= N {
            return Err(item);
        }
        self.0.push(item);
        Ok(())
    }

    /// Empties the sequence, keeping its capacity.
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// The elements, by value.
    pub fn into_vec(self) -> Vec<T> {
        self.0
    }
}

impl<T, const N: usize> Default for BoundedVec<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> Deref for BoundedVec<T, N> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T, const N: usize> TryFrom<Vec<T>> for BoundedVec<T, N> {
    type Error = TooManyElements;
    fn try_from(items: Vec<T>) -> Result<Self, TooManyElements> {
        Self::try_from_vec(items)
    }
}

impl<T: Serialize, const N: usize> Serialize for BoundedVec<T, N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for BoundedVec<T, N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BoundedVisitor<T, const N: usize>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for BoundedVisitor<T, N> {
            type Value = BoundedVec<T, N>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a sequence of at most {N} elements")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let claimed = seq.size_hint().unwrap_or(0);
                if claimed > N {
                    return Err(serde::de::Error::invalid_length(claimed, &self));
                }
                let mut items = Vec::with_capacity(claimed);
                while let Some(item) = seq.next_element()? {
                    if items.len() == N {
                        return Err(serde::de::Error::invalid_length(N + 1, &self));
                    }
                    items.push(item);
                }
                Ok(BoundedVec(items))
            }
        }

        deserializer.deserialize_seq(BoundedVisitor::<T, N>(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_vec_refuses_too_many() {
        let v: Vec<u16> = (0..5).collect();
        let bytes = encode(&v).expect("encode");
        assert!(decode::<BoundedVec<u16, 5>>(&bytes, 1024).is_ok());
        let err = decode::<BoundedVec<u16, 4>>(&bytes, 1024).expect_err("5 > 4");
        assert!(err.to_string().contains("at most 4"), "{err}");
        assert!(BoundedVec::<u8, 2>::try_from_vec(vec![1, 2, 3]).is_err());
    }

    #[test]
    fn string_claim_over_limit_is_refused_before_allocation() {
        // A string claiming 1 GiB: varint tag 0xFC then u32 length.
        let mut bytes = vec![0xFC];
        bytes.extend_from_slice(&(1u32 << 30).to_le_bytes());
        let err = decode::<String>(&bytes, 4096).expect_err("over limit");
        assert!(matches!(err, CodecError::Malformed { .. }), "{err}");
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut bytes = encode(&7u32).expect("encode");
        bytes.push(0);
        assert!(matches!(
            decode::<u32>(&bytes, 1024),
            Err(CodecError::TrailingBytes { extra: 1, .. })
        ));
    }
}
