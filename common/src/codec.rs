//! Framing and serialization: a 4-byte big-endian length prefix, then a
//! bincode 2 payload. This is the only module that knows about bincode, so
//! swapping the serializer (bincode is unmaintained, RUSTSEC-2025-0141) is a
//! one-module change.
//!
//! The maximum frame size is checked against the length prefix before any
//! buffer is reserved, and bincode decoding is capped the same way, so a
//! hostile length cannot make a node allocate.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// Largest frame either side accepts or sends (16 MiB).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// What went wrong reading or writing a frame.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The byte stream failed, or a length prefix exceeded `MAX_FRAME`.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// A frame's payload did not decode as the expected message.
    #[error("malformed message: {0}")]
    Decode(String),
    /// A frame decoded but left bytes over.
    #[error("malformed message: {0} trailing bytes")]
    Trailing(usize),
    /// A message could not be encoded (too large, usually).
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME>()
}

/// Serializes `msg` into a payload.
pub fn encode<T: Serialize>(msg: &T) -> Result<Bytes, CodecError> {
    let v = bincode::serde::encode_to_vec(msg, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    if v.len() > MAX_FRAME {
        return Err(CodecError::Encode(format!(
            "{} bytes exceeds the {MAX_FRAME}-byte frame limit",
            v.len()
        )));
    }
    Ok(Bytes::from(v))
}

/// Deserializes a whole payload; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(buf: &[u8]) -> Result<T, CodecError> {
    let (v, used) = bincode::serde::decode_from_slice(buf, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != buf.len() {
        return Err(CodecError::Trailing(buf.len() - used));
    }
    Ok(v)
}

/// The length-delimited codec with our frame limit.
pub fn length_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

/// A framed, typed message stream over any byte stream (TCP now; an
/// encrypted stream can be slotted in underneath without touching messages).
pub struct FrameIo<S> {
    inner: Framed<S, LengthDelimitedCodec>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> FrameIo<S> {
    /// Wraps a byte stream.
    pub fn new(io: S) -> Self {
        FrameIo {
            inner: Framed::new(io, length_codec()),
        }
    }

    /// Sends one message.
    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), CodecError> {
        self.send_raw(encode(msg)?).await
    }

    /// Sends one already-encoded payload.
    pub async fn send_raw(&mut self, payload: Bytes) -> Result<(), CodecError> {
        self.inner.send(payload).await?;
        Ok(())
    }

    /// Receives one raw payload; `None` on a clean close between frames.
    pub async fn recv_raw(&mut self) -> Result<Option<bytes::BytesMut>, CodecError> {
        match self.inner.next().await {
            None => Ok(None),
            Some(Ok(b)) => Ok(Some(b)),
            Some(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(CodecError::Truncated)
            }
            Some(Err(e)) => Err(CodecError::Io(e)),
        }
    }

    /// Receives and decodes one message; `None` on a clean close.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, CodecError> {
        match self.recv_raw().await? {
            None => Ok(None),
            Some(b) => decode(&b).map(Some),
        }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }

    /// Splits into a writing half and a reading half, so one task can send
    /// while another receives.
    pub fn split(self) -> (FrameWriter<S>, FrameReader<S>) {
        let (sink, stream) = self.inner.split();
        (FrameWriter { sink }, FrameReader { stream })
    }
}

/// The sending half of a [`FrameIo`].
pub struct FrameWriter<S> {
    sink: futures::stream::SplitSink<Framed<S, LengthDelimitedCodec>, Bytes>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> FrameWriter<S> {
    /// Sends one message.
    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), CodecError> {
        self.sink.send(encode(msg)?).await?;
        Ok(())
    }
}

/// The receiving half of a [`FrameIo`].
pub struct FrameReader<S> {
    stream: futures::stream::SplitStream<Framed<S, LengthDelimitedCodec>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> FrameReader<S> {
    /// Receives and decodes one message; `None` on a clean close.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, CodecError> {
        match self.stream.next().await {
            None => Ok(None),
            Some(Ok(b)) => decode(&b).map(Some),
            Some(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(CodecError::Truncated)
            }
            Some(Err(e)) => Err(CodecError::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ClientRequest, Request};
    use bytes::BytesMut;
    use tokio_util::codec::Decoder;

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let mut codec = length_codec();
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3][..]);
        let cap_before = buf.capacity();
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(err.to_string().contains("frame size too big"), "{err}");
        assert!(
            buf.capacity() <= cap_before + 8,
            "buffer grew to {}",
            buf.capacity()
        );
    }

    #[test]
    fn truncated_frame_is_an_error_at_eof() {
        let mut codec = length_codec();
        let mut buf = BytesMut::from(&[0, 0, 0, 100, 1, 2, 3][..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(codec.decode_eof(&mut buf).is_err());
    }

    #[test]
    fn round_trip_and_trailing_bytes() {
        let msg = Request {
            id: 7,
            body: ClientRequest::List,
        };
        let bytes = encode(&msg).unwrap();
        let back: Request = decode(&bytes).unwrap();
        assert_eq!(back.id, 7);
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(matches!(
            decode::<Request>(&longer),
            Err(CodecError::Trailing(1))
        ));
    }

    #[test]
    fn hostile_vec_length_does_not_allocate() {
        // A Vec length of u64::MAX in bincode's varint encoding.
        let payload = [0xfd_u8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(decode::<Vec<u64>>(&payload).is_err());
        assert!(decode::<String>(&payload).is_err());
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = decode::<Request>(&data);
            let _ = decode::<crate::proto::NodeToClient>(&data);
            let _ = decode::<crate::proto::PeerMessage>(&data);
            let _ = crate::proto::decode_hello::<crate::proto::Hello>(&data);
            let mut codec = length_codec();
            let mut buf = BytesMut::from(&data[..]);
            let _ = codec.decode(&mut buf);
            let _ = codec.decode_eof(&mut buf);
        }
    }
}
