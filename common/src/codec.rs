//! Framing and serialization: a 4-byte big-endian length prefix, then a
//! bincode 2 payload. This is the only module that knows about bincode, so
//! swapping the serializer (bincode is unmaintained, RUSTSEC-2025-0141) is a
//! one-module change.
//!
//! The maximum frame size is checked against the length prefix before any
//! buffer is reserved, and bincode decoding is capped the same way, so a
//! hostile length cannot make a node allocate.

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio_util::codec::{Decoder, FramedRead, LengthDelimitedCodec};

use crate::buffers::SEGMENTS;

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

/// Largest record the local store keeps in one piece: the block list of a
/// 256 GiB file is 64 MiB, well past a frame, and must still be saved.
pub const MAX_STORED: usize = 1 << 30;

fn stored_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_STORED>()
}

/// Serializes a record for the local store (not the wire: no frame limit).
pub fn encode_stored<T: Serialize>(msg: &T) -> Result<Bytes, CodecError> {
    bincode::serde::encode_to_vec(msg, stored_config())
        .map(|mut v| {
            // Cut to its length: the vector grew by doubling, and a cold
            // scan holds every record's encoding at once until it is saved.
            v.shrink_to_fit();
            Bytes::from(v)
        })
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Deserializes a record of the local store; trailing bytes are an error.
pub fn decode_stored<T: DeserializeOwned>(buf: &[u8]) -> Result<T, CodecError> {
    decode_whole(buf, stored_config())
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
    decode_whole(buf, config())
}

fn decode_whole<T: DeserializeOwned>(
    buf: &[u8],
    cfg: impl bincode::config::Config,
) -> Result<T, CodecError> {
    let (v, used) = bincode::serde::decode_from_slice(buf, cfg)
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

/// A message whose bulk bytes travel as one raw frame right after it
/// instead of inside its serialized form, so they are never copied in user
/// space on the way out (written straight from the sender's buffers) or in
/// (sliced out of the received frame). The fields holding the bytes are
/// skipped by serde; these methods move them.
pub trait Body {
    /// Length of the raw frame that follows this message, if one does.
    fn body_len(&self) -> Option<usize>;
    /// Moves the bulk bytes out, in order (sending side).
    fn take_body(&mut self) -> Vec<Bytes>;
    /// Puts the received raw frame back (receiving side); it is exactly
    /// `body_len()` bytes long.
    fn put_body(&mut self, body: Bytes);
}

/// A framed, typed message stream over any byte stream (TCP now; an
/// encrypted stream can be slotted in underneath without touching messages).
pub struct FrameIo<S> {
    reader: FrameReader<S>,
    writer: FrameWriter<S>,
}

impl<S: AsyncRead + AsyncWrite> FrameIo<S> {
    /// Wraps a byte stream.
    pub fn new(io: S) -> Self {
        let (r, w) = tokio::io::split(io);
        FrameIo {
            reader: FrameReader {
                stream: FramedRead::new(
                    r,
                    FrameDecoder {
                        inner: length_codec(),
                        in_frame: false,
                    },
                ),
            },
            writer: FrameWriter { sink: w },
        }
    }

    /// Sends one message.
    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), CodecError> {
        self.writer.send(msg).await
    }

    /// Sends one already-encoded payload.
    pub async fn send_raw(&mut self, payload: Bytes) -> Result<(), CodecError> {
        self.writer.write_frames(vec![payload], None).await
    }

    /// Receives one raw payload; `None` on a clean close between frames.
    pub async fn recv_raw(&mut self) -> Result<Option<bytes::BytesMut>, CodecError> {
        self.reader.recv_raw().await
    }

    /// Receives and decodes one message; `None` on a clean close.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, CodecError> {
        self.reader.recv().await
    }

    /// Receives one message and the raw frame that follows it, if any.
    pub async fn recv_msg<T: DeserializeOwned + Body>(&mut self) -> Result<Option<T>, CodecError> {
        self.reader.recv_msg().await
    }

    /// See [`FrameReader::set_max_frame`].
    pub fn set_max_frame(&mut self, n: usize) {
        self.reader.set_max_frame(n);
    }

    /// Splits into a writing half and a reading half, so one task can send
    /// while another receives.
    pub fn split(self) -> (FrameWriter<S>, FrameReader<S>) {
        (self.writer, self.reader)
    }
}

/// The sending half of a [`FrameIo`]. It writes frames straight to the
/// stream (vectored), without an intermediate buffer.
pub struct FrameWriter<S> {
    sink: WriteHalf<S>,
}

impl<S: AsyncRead + AsyncWrite> FrameWriter<S> {
    /// Sends one message.
    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), CodecError> {
        self.write_frames(vec![encode(msg)?], None).await
    }

    /// Sends one message, then its bulk bytes as one raw frame (see [`Body`]).
    pub async fn send_msg<T: Serialize + Body>(&mut self, mut msg: T) -> Result<(), CodecError> {
        let body = msg.take_body();
        let head = encode(&msg)?;
        match msg.body_len() {
            Some(n) if n == body.iter().map(Bytes::len).sum::<usize>() => {
                self.write_frames(vec![head], Some(body)).await
            }
            None if body.is_empty() => self.write_frames(vec![head], None).await,
            _ => Err(CodecError::Encode(
                "a message's body does not match its stated length".into(),
            )),
        }
    }

    /// Writes each payload as a frame, then `body`'s parts as one frame.
    async fn write_frames(
        &mut self,
        payloads: Vec<Bytes>,
        body: Option<Vec<Bytes>>,
    ) -> Result<(), CodecError> {
        let mut parts = Vec::with_capacity(2 * payloads.len() + 2);
        for p in payloads {
            parts.push(frame_len(p.len())?);
            parts.push(p);
        }
        if let Some(body) = body {
            parts.push(frame_len(body.iter().map(Bytes::len).sum())?);
            parts.extend(body);
        }
        parts.retain(|p| !p.is_empty());
        write_all_vectored(&mut self.sink, parts).await?;
        self.sink.flush().await?;
        Ok(())
    }
}

/// The 4-byte length prefix of a frame of `len` bytes.
fn frame_len(len: usize) -> Result<Bytes, CodecError> {
    if len > MAX_FRAME {
        return Err(CodecError::Encode(format!(
            "{len} bytes exceeds the {MAX_FRAME}-byte frame limit"
        )));
    }
    Ok(Bytes::copy_from_slice(&(len as u32).to_be_bytes()))
}

/// Writes every part, in order, with as few (vectored) writes as the
/// stream allows.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut parts: Vec<Bytes>,
) -> std::io::Result<()> {
    use bytes::Buf;
    let mut i = 0;
    while i < parts.len() {
        let slices: Vec<std::io::IoSlice<'_>> = parts[i..]
            .iter()
            .take(64)
            .map(|p| std::io::IoSlice::new(p))
            .collect();
        let mut n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let len = parts[i].len();
            if n >= len {
                n -= len;
                i += 1;
            } else {
                parts[i].advance(n);
                n = 0;
            }
        }
    }
    Ok(())
}

/// [`length_codec`], also knowing whether the stream is inside a frame:
/// the inner codec consumes a frame's length prefix before its payload has
/// arrived, so an empty buffer alone does not mean "between frames".
struct FrameDecoder {
    inner: LengthDelimitedCodec,
    /// A length prefix was read and its payload is not complete yet.
    in_frame: bool,
}

impl Decoder for FrameDecoder {
    type Item = bytes::BytesMut;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut bytes::BytesMut) -> std::io::Result<Option<Self::Item>> {
        let before = buf.len();
        let frame = self.inner.decode(buf)?;
        self.in_frame = frame.is_none() && (self.in_frame || buf.len() < before);
        Ok(frame)
    }

    /// A stream that ends inside a frame (or its length prefix) is an
    /// `UnexpectedEof`, like a TLS stream cut without its close_notify;
    /// [`FrameReader::recv_raw`] reports it as [`CodecError::Truncated`].
    fn decode_eof(&mut self, buf: &mut bytes::BytesMut) -> std::io::Result<Option<Self::Item>> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.is_empty() && !self.in_frame => Ok(None),
            None => Err(std::io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

/// The receiving half of a [`FrameIo`].
pub struct FrameReader<S> {
    stream: FramedRead<ReadHalf<S>, FrameDecoder>,
}

impl<S: AsyncRead + AsyncWrite> FrameReader<S> {
    /// Lowers (or restores) the largest frame accepted from now on, so a
    /// side that is not trusted yet cannot make this one buffer much.
    pub fn set_max_frame(&mut self, n: usize) {
        self.stream
            .decoder_mut()
            .inner
            .set_max_frame_length(n.min(MAX_FRAME));
    }

    /// Receives one raw payload; `None` on a clean close between frames.
    pub async fn recv_raw(&mut self) -> Result<Option<bytes::BytesMut>, CodecError> {
        match self.stream.next().await {
            None => Ok(None),
            Some(Ok(b)) => Ok(Some(b)),
            // TLS reports a close without its close_notify as an
            // unexpected end; between frames that is a close like any other
            // (processes exit without saying goodbye).
            Some(Err(e))
                if e.kind() == std::io::ErrorKind::UnexpectedEof
                    && self.stream.read_buffer().is_empty()
                    && !self.stream.decoder().in_frame =>
            {
                Ok(None)
            }
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

    /// Receives one message and, when it says one follows, its raw body
    /// frame (see [`Body`]). Not cancel-safe, and an error may leave the
    /// stream inside a frame: after either, the connection is closed.
    pub async fn recv_msg<T: DeserializeOwned + Body>(&mut self) -> Result<Option<T>, CodecError> {
        let Some(mut msg) = self.recv::<T>().await? else {
            return Ok(None);
        };
        if let Some(n) = msg.body_len() {
            let body = self.recv_body(n).await?;
            msg.put_body(body);
        }
        Ok(Some(msg))
    }

    /// Receives a body frame that must be `n` bytes long. One of a length
    /// [`SEGMENTS`] keeps is read straight into a kept buffer (see
    /// [`crate::buffers`] for why); others through the frame decoder.
    async fn recv_body(&mut self, n: usize) -> Result<Bytes, CodecError> {
        let wrong = |len: usize| {
            CodecError::Decode(format!(
                "body of {len} bytes where the message announced {n}"
            ))
        };
        if !SEGMENTS.keeps(n) {
            let body = self.recv_raw().await?.ok_or(CodecError::Truncated)?;
            if body.len() != n {
                return Err(wrong(body.len()));
            }
            return Ok(body.freeze());
        }
        let mut prefix = [0u8; 4];
        self.read_exact_raw(&mut prefix).await?;
        let len = u32::from_be_bytes(prefix) as usize;
        if len != n {
            return Err(wrong(len));
        }
        let max = self.stream.decoder().inner.max_frame_length();
        if len > max {
            return Err(CodecError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a frame of {len} bytes exceeds the {max}-byte limit"),
            )));
        }
        let mut buf = SEGMENTS.take(len);
        match self.read_exact_raw(&mut buf).await {
            Ok(()) => Ok(SEGMENTS.freeze(buf)),
            Err(e) => {
                SEGMENTS.give_back(buf);
                Err(e)
            }
        }
    }

    /// Fills `out` with the next bytes of the stream: first those the
    /// frame decoder has read ahead, then straight from the stream. Only
    /// between frames (the decoder holds no part of one).
    async fn read_exact_raw(&mut self, out: &mut [u8]) -> Result<(), CodecError> {
        use bytes::Buf;
        use tokio::io::AsyncReadExt;
        let ahead = self.stream.read_buffer_mut();
        let k = ahead.len().min(out.len());
        out[..k].copy_from_slice(&ahead[..k]);
        ahead.advance(k);
        if k < out.len() {
            self.stream
                .get_mut()
                .read_exact(&mut out[k..])
                .await
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => CodecError::Truncated,
                    _ => CodecError::Io(e),
                })?;
        }
        Ok(())
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

    /// Reads `stream` (then its end) with the frame reader: the payloads
    /// received and how it ended.
    async fn read_all(stream: &[u8]) -> (Vec<Vec<u8>>, Result<(), CodecError>) {
        let (mut a, b) = tokio::io::duplex(1 << 16);
        a.write_all(stream).await.unwrap();
        drop(a);
        let mut r = FrameIo::new(b);
        let mut frames = Vec::new();
        loop {
            match r.recv_raw().await {
                Ok(Some(f)) => frames.push(f.to_vec()),
                Ok(None) => return (frames, Ok(())),
                Err(e) => return (frames, Err(e)),
            }
        }
    }

    // Found by the `frame` fuzz target: a stream cut right after a length
    // prefix read as a clean close, and one cut inside a frame or a prefix
    // as an I/O error ("bytes remaining on stream") instead of `Truncated`.
    #[tokio::test]
    async fn a_stream_cut_inside_a_frame_is_truncated() {
        let whole = [0, 0, 0, 2, b'h', b'i'];
        for cut in [0, 6] {
            let (frames, end) = read_all(&whole[..cut]).await;
            assert_eq!(frames.len(), cut / 6);
            assert!(end.is_ok(), "cut at {cut}: {end:?}");
        }
        for cut in [1, 3, 4, 5] {
            let (frames, end) = read_all(&whole[..cut]).await;
            assert!(frames.is_empty());
            assert!(
                matches!(end, Err(CodecError::Truncated)),
                "cut at {cut}: {end:?}"
            );
        }
        // The same after a whole frame.
        let (frames, end) = read_all(&[0, 0, 0, 1, b'x', 0, 0, 0, 9]).await;
        assert_eq!(frames, vec![b"x".to_vec()]);
        assert!(matches!(end, Err(CodecError::Truncated)), "{end:?}");
    }

    /// A TLS stream closed without its close_notify: its bytes, then an
    /// `UnexpectedEof` error.
    struct CutTls(Vec<u8>);

    impl AsyncRead for CutTls {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if self.0.is_empty() {
                return std::task::Poll::Ready(Err(std::io::ErrorKind::UnexpectedEof.into()));
            }
            let n = self.0.len().min(buf.remaining());
            buf.put_slice(&self.0[..n]);
            self.0.drain(..n);
            std::task::Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for CutTls {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            b: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_tls_stream_cut_after_a_length_prefix_is_truncated() {
        let mut r = FrameIo::new(CutTls(vec![0, 0, 0, 1, b'x']));
        assert_eq!(&r.recv_raw().await.unwrap().unwrap()[..], b"x");
        assert!(r.recv_raw().await.unwrap().is_none(), "between frames");
        let mut r = FrameIo::new(CutTls(vec![0, 0, 0, 9]));
        let end = r.recv_raw().await;
        assert!(matches!(end, Err(CodecError::Truncated)), "{end:?}");
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

    #[tokio::test]
    async fn bodies_travel_as_raw_frames_and_are_checked() {
        use crate::proto::{BlockData, PeerMessage};
        let (a, b) = tokio::io::duplex(1 << 20);
        let (mut w, _) = FrameIo::new(a).split();
        let mut r = FrameIo::new(b);
        let whole = Bytes::from((0..=255u8).cycle().take(3000).collect::<Vec<u8>>());
        let blocks = vec![
            BlockData::new(4, whole.slice(..1000)),
            BlockData::new(5, whole.slice(1000..)),
        ];
        w.send_msg(PeerMessage::Blocks {
            req: 9,
            data: Ok(blocks),
        })
        .await
        .unwrap();
        w.send(&PeerMessage::Resume { since: 3 }).await.unwrap();
        match r.recv_msg::<PeerMessage>().await.unwrap() {
            Some(PeerMessage::Blocks {
                req: 9,
                data: Ok(b),
            }) => {
                assert_eq!(b.len(), 2);
                assert_eq!((b[0].index, &b[0].bytes[..]), (4, &whole[..1000]));
                assert_eq!((b[1].index, &b[1].bytes[..]), (5, &whole[1000..]));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            r.recv_msg::<PeerMessage>().await.unwrap(),
            Some(PeerMessage::Resume { since: 3 })
        ));

        // A header announcing 1000 bytes followed by a 10-byte frame.
        let mut header = PeerMessage::Blocks {
            req: 1,
            data: Ok(vec![BlockData::new(0, Bytes::from(vec![1u8; 1000]))]),
        };
        let _ = Body::take_body(&mut header);
        w.write_frames(
            vec![encode(&header).unwrap()],
            Some(vec![Bytes::from(vec![0u8; 10])]),
        )
        .await
        .unwrap();
        let err = r.recv_msg::<PeerMessage>().await.unwrap_err();
        assert!(err.to_string().contains("announced 1000"), "{err}");
    }

    /// A message whose body is a segment: read into a kept buffer of
    /// [`SEGMENTS`], whatever the pieces it arrives in; what follows it is
    /// read as before; a cut, a wrong length or one above the frame limit
    /// is refused.
    #[tokio::test]
    async fn segment_bodies_are_read_into_kept_buffers() {
        use crate::proto::{BlockData, PeerMessage};
        let seg = crate::buffers::SEGMENT_MAX;
        let whole = Bytes::from((0..seg).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        let blocks = |n: usize| {
            vec![
                BlockData::new(0, whole.slice(..n / 2)),
                BlockData::new(1, whole.slice(n / 2..n)),
            ]
        };
        let message = |n: usize| PeerMessage::Blocks {
            req: 1,
            data: Ok(blocks(n)),
        };
        // Two messages and a plain one, as bytes, fed in odd pieces.
        let mut stream = Vec::new();
        {
            let (a, mut b) = tokio::io::duplex(4 << 20);
            let (mut w, _) = FrameIo::new(a).split();
            w.send_msg(message(seg)).await.unwrap();
            w.send_msg(message(seg * 3 / 4)).await.unwrap();
            w.send(&PeerMessage::Resume { since: 5 }).await.unwrap();
            drop(w);
            tokio::io::AsyncReadExt::read_to_end(&mut b, &mut stream)
                .await
                .unwrap();
        }
        let (mut a, b) = tokio::io::duplex(1 << 10);
        let sending = stream.clone();
        let feeder = tokio::spawn(async move {
            for piece in sending.chunks(4093) {
                a.write_all(piece).await.unwrap();
            }
        });
        let mut r = FrameIo::new(b);
        for n in [seg, seg * 3 / 4] {
            match r.recv_msg::<PeerMessage>().await.unwrap() {
                Some(PeerMessage::Blocks { data: Ok(b), .. }) => {
                    assert_eq!(&b[0].bytes[..], &whole[..n / 2]);
                    assert_eq!(&b[1].bytes[..], &whole[n / 2..n]);
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            r.recv_msg::<PeerMessage>().await.unwrap(),
            Some(PeerMessage::Resume { since: 5 })
        ));
        feeder.await.unwrap();
        // Given back once the blocks were dropped.
        assert!(SEGMENTS.kept() > 0);

        // Cut inside the first body.
        let mut r = FrameIo::new(CutTls(stream[..seg / 2].to_vec()));
        let end = r.recv_msg::<PeerMessage>().await;
        assert!(matches!(end, Err(CodecError::Truncated)), "{end:?}");

        // A header announcing a segment, then a frame one byte short.
        let (a, b) = tokio::io::duplex(4 << 20);
        let (mut w, _) = FrameIo::new(a).split();
        let mut r = FrameIo::new(b);
        let mut header = message(seg);
        let _ = Body::take_body(&mut header);
        w.write_frames(
            vec![encode(&header).unwrap()],
            Some(vec![whole.slice(..seg - 1)]),
        )
        .await
        .unwrap();
        let err = r.recv_msg::<PeerMessage>().await.unwrap_err();
        assert!(
            err.to_string().contains(&format!("announced {seg}")),
            "{err}"
        );

        // Above a lowered frame limit: refused before it is read.
        let (a, b) = tokio::io::duplex(4 << 20);
        let (mut w, _) = FrameIo::new(a).split();
        let mut r = FrameIo::new(b);
        r.set_max_frame(64 << 10);
        w.send_msg(message(seg)).await.unwrap();
        let err = r.recv_msg::<PeerMessage>().await.unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
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
