//! The length-delimited frame codec of the `vexil-sync/1` stream.
//!
//! Every frame on the wire is:
//!
//! ```text
//! +----------------------+-----------+--------------------------------+
//! | length: u32, BE      | flags: u8 | payload: length - 1 bytes      |
//! +----------------------+-----------+--------------------------------+
//! ```
//!
//! `length` counts the flags byte and the payload (so it is at least 1). Flag bit 0
//! ([`FLAG_ZSTD`]) means the payload is one or more zstd frames; every other bit must be 0. The
//! (decompressed) payload is one protobuf message: a `vexil.sync.v1.ClientFrame` from the sidecar,
//! a `vexil.sync.v1.ServerFrame` from control.
//!
//! Limits: [`FrameCodec::max_frame`] bounds the payload both as declared on the wire and after
//! decompression. A declared length over the limit is rejected from the 4-byte header, before
//! anything is buffered for it; decompression is streamed into an output that never grows past the
//! limit (so a "zip bomb" is refused after at most `max_frame + 1` bytes), with zstd's window
//! memory capped to match. Nothing here panics on input.
//!
//! Any error leaves the stream at an unknown position or means the peer misbehaves: close the
//! stream (control first sends `Error{code}`, see [`FrameError::error_code`]).
//!
//! Usage over any `AsyncRead`/`AsyncWrite` (quinn's streams implement tokio's traits):
//!
//! ```no_run
//! # async fn demo(recv: impl tokio::io::AsyncRead + Unpin) -> Result<(), vexil_proto::frame::FrameError> {
//! use tokio_util::codec::FramedRead;
//! use vexil_proto::frame::{FrameCodec, MessageCodec};
//! use vexil_proto::sync::v1::ServerFrame;
//!
//! let codec = FrameCodec::default();
//! // Writing: encode once, write the same bytes to every stream (e.g. quinn `write_chunk`).
//! let bytes = codec.encode_frame(&ServerFrame::default())?;
//! // Reading: a stream of decoded messages.
//! let mut frames = FramedRead::new(recv, MessageCodec::<ServerFrame>::new(codec));
//! # let _ = (&mut frames, bytes);
//! # Ok(())
//! # }
//! ```

use std::{
    fmt,
    io::{self, Read},
    marker::PhantomData,
};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use tokio_util::codec::{Decoder, Encoder};

use crate::sync::v1::ErrorCode;

/// Size of the length prefix, in bytes.
pub const LENGTH_LEN: usize = 4;
/// Size of the frame header (length prefix and flags byte), in bytes.
pub const HEADER_LEN: usize = LENGTH_LEN + 1;
/// Flags bit 0: the payload is zstd-compressed.
pub const FLAG_ZSTD: u8 = 0b0000_0001;
/// Every flag bit this version understands; a frame with any other bit set is refused.
pub const KNOWN_FLAGS: u8 = FLAG_ZSTD;

/// Default payload limit after decompression: 64 MiB, room for a whole large flag set
/// (docs/adr/0003-quic-sync-framing.md).
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024 * 1024;
/// Default size from which payloads are compressed: 64 KiB.
pub const DEFAULT_COMPRESS_THRESHOLD: usize = 64 * 1024;
/// Default zstd level for compressed frames (fast, and flag JSON compresses well).
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// A suitable limit for frames sent by sidecars (`ClientFrame`: Subscribe, Ack, Resync are
/// small). Control should decode client frames with this limit rather than
/// [`DEFAULT_MAX_FRAME`], so an unauthenticated peer cannot make it buffer 64 MiB.
pub const DEFAULT_MAX_CLIENT_FRAME: usize = 64 * 1024;

/// The largest payload the 32-bit length prefix can describe (the prefix also counts the flags
/// byte).
const WIRE_MAX_PAYLOAD: usize = u32::MAX as usize - 1;

/// Why a frame could not be encoded or decoded. Every variant is fatal for the stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The payload exceeds the limit: as declared in the header, as encoded, or after
    /// decompression. For a compressed frame without a declared content size, `len` is a lower
    /// bound (`max + 1`): decompression stops there.
    #[error("frame payload of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Payload size in bytes (declared, encoded, or decompressed so far).
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The payload is not a valid protobuf message of the expected type.
    #[error("malformed frame payload: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// The header declares length 0: there is not even a flags byte.
    #[error("malformed frame: declared length 0 (no flags byte)")]
    EmptyFrame,
    /// The flags byte has bits this version does not know.
    #[error("unknown frame flags {0:#04x}")]
    UnknownFlags(u8),
    /// The payload is marked compressed but is not valid zstd data, or needs more window memory
    /// than the limit allows.
    #[error("zstd decompression failed: {0}")]
    Decompress(#[source] io::Error),
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes of the incomplete frame that had arrived.
        buffered: usize,
    },
    /// zstd compression failed while encoding.
    #[error("zstd compression failed: {0}")]
    Compress(#[source] io::Error),
    /// protobuf encoding failed (not expected: the output buffer grows as needed).
    #[error("protobuf encoding failed: {0}")]
    Encode(#[from] prost::EncodeError),
    /// Reading or writing the underlying stream failed.
    #[error("sync stream I/O failed: {0}")]
    Io(#[from] io::Error),
}

impl FrameError {
    /// The `vexil.sync.v1.ErrorCode` to report to the peer before closing the stream.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Self::TooLarge { .. } => ErrorCode::FrameTooLarge,
            Self::Malformed(_)
            | Self::EmptyFrame
            | Self::UnknownFlags(_)
            | Self::Decompress(_)
            | Self::Truncated { .. } => ErrorCode::MalformedFrame,
            Self::Compress(_) | Self::Encode(_) | Self::Io(_) => ErrorCode::Internal,
        }
    }
}

/// Encoder and decoder of sync-stream frames (see the [module docs](self)).
///
/// As a [`Decoder`] it yields each frame's payload, decompressed; [`decode_payload`] (or
/// [`MessageCodec`]) turns it into a message. As an [`Encoder`] it writes any prost message, and
/// [`EncodedFrame`]s produced once by [`FrameCodec::encode_frame`] for fan-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameCodec {
    /// Largest payload accepted or produced, in bytes, after decompression (and also as sent).
    pub max_frame: usize,
    /// Payloads of at least this many bytes are zstd-compressed (when that makes them smaller);
    /// `usize::MAX` disables compression.
    pub compress_threshold: usize,
    /// zstd compression level.
    pub zstd_level: i32,
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME, DEFAULT_COMPRESS_THRESHOLD)
    }
}

impl FrameCodec {
    /// A codec with the given payload limit and compression threshold (zstd level
    /// [`DEFAULT_ZSTD_LEVEL`]).
    pub const fn new(max_frame: usize, compress_threshold: usize) -> Self {
        Self {
            max_frame,
            compress_threshold,
            zstd_level: DEFAULT_ZSTD_LEVEL,
        }
    }

    /// The limit actually in force: `max_frame`, capped by what the length prefix can express.
    fn limit(&self) -> usize {
        self.max_frame.min(WIRE_MAX_PAYLOAD)
    }

    /// Encodes one message as a complete frame (header included), compressing it when it is at
    /// least `compress_threshold` bytes and compression helps. The result can be written as-is
    /// to any number of streams.
    pub fn encode_frame<M: Message>(&self, msg: &M) -> Result<Bytes, FrameError> {
        let mut dst = BytesMut::new();
        self.encode_frame_into(msg, &mut dst)?;
        Ok(dst.freeze())
    }

    /// Appends one message as a complete frame to `dst` (see [`FrameCodec::encode_frame`]). On error
    /// nothing is appended.
    pub fn encode_frame_into<M: Message>(
        &self,
        msg: &M,
        dst: &mut BytesMut,
    ) -> Result<(), FrameError> {
        let len = msg.encoded_len();
        let max = self.limit();
        if len > max {
            return Err(FrameError::TooLarge { len, max });
        }
        if len > 0 && len >= self.compress_threshold {
            let raw = msg.encode_to_vec();
            let compressed =
                zstd::bulk::compress(&raw, self.zstd_level).map_err(FrameError::Compress)?;
            if compressed.len() < raw.len() {
                put_frame(dst, FLAG_ZSTD, &compressed);
            } else {
                put_frame(dst, 0, &raw);
            }
            return Ok(());
        }
        dst.reserve(HEADER_LEN + len);
        put_header(dst, 0, len);
        msg.encode(dst)?;
        Ok(())
    }

    /// Takes one complete frame off the front of `src` and returns its payload, decompressed.
    ///
    /// Returns `Ok(None)` while the frame is incomplete (nothing is consumed). The declared length
    /// and the flags are checked as soon as their bytes are there, so an oversized or unknown
    /// frame is refused before its payload is awaited or buffered.
    pub fn decode_frame(&self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let Some(prefix) = src.first_chunk::<LENGTH_LEN>() else {
            return Ok(None);
        };
        let declared = u32::from_be_bytes(*prefix) as usize;
        let Some(payload_len) = declared.checked_sub(1) else {
            return Err(FrameError::EmptyFrame);
        };
        let max = self.limit();
        if payload_len > max {
            return Err(FrameError::TooLarge {
                len: payload_len,
                max,
            });
        }
        if let Some(&flags) = src.get(LENGTH_LEN)
            && flags & !KNOWN_FLAGS != 0
        {
            return Err(FrameError::UnknownFlags(flags));
        }
        let total = HEADER_LEN + payload_len;
        if src.len() < total {
            // Bounded by the limit checked above.
            src.reserve(total - src.len());
            return Ok(None);
        }
        let flags = src[LENGTH_LEN];
        src.advance(HEADER_LEN);
        let payload = src.split_to(payload_len).freeze();
        if flags & FLAG_ZSTD != 0 {
            decompress_bounded(&payload, max).map(Some)
        } else {
            Ok(Some(payload))
        }
    }

    /// Takes one complete frame off the front of `src` and decodes it as `M`.
    pub fn decode_message<M: Message + Default>(
        &self,
        src: &mut BytesMut,
    ) -> Result<Option<M>, FrameError> {
        self.decode_frame(src)?.map(decode_payload).transpose()
    }
}

/// Decodes a frame payload (as returned by [`FrameCodec::decode_frame`]) into a message.
pub fn decode_payload<M: Message + Default>(payload: Bytes) -> Result<M, FrameError> {
    Ok(M::decode(payload)?)
}

fn put_header(dst: &mut BytesMut, flags: u8, payload_len: usize) {
    // Callers checked payload_len <= WIRE_MAX_PAYLOAD, so the sum fits a u32.
    let declared = u32::try_from(payload_len + 1).unwrap_or(u32::MAX);
    dst.put_u32(declared);
    dst.put_u8(flags);
}

fn put_frame(dst: &mut BytesMut, flags: u8, payload: &[u8]) {
    dst.reserve(HEADER_LEN + payload.len());
    put_header(dst, flags, payload.len());
    dst.put_slice(payload);
}

/// Decompresses `data` (one or more zstd frames) into at most `max` bytes.
fn decompress_bounded(data: &[u8], max: usize) -> Result<Bytes, FrameError> {
    // A declared content size over the limit is refused at once; a smaller one sizes the output.
    let declared = match zstd::zstd_safe::get_frame_content_size(data) {
        Ok(Some(size)) => {
            if size > max as u64 {
                return Err(FrameError::TooLarge {
                    len: usize::try_from(size).unwrap_or(usize::MAX),
                    max,
                });
            }
            usize::try_from(size).unwrap_or(0)
        }
        // Unknown size (streamed), or not a zstd header: the decoder reports the latter.
        Ok(None) | Err(_) => 0,
    };
    let mut decoder =
        zstd::stream::read::Decoder::with_buffer(data).map_err(FrameError::Decompress)?;
    // The window a frame may ask for never needs to exceed the payload limit.
    decoder
        .window_log_max(window_log_for(max))
        .map_err(FrameError::Decompress)?;
    let mut out = Vec::with_capacity(declared);
    let cap = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    decoder
        .take(cap)
        .read_to_end(&mut out)
        .map_err(FrameError::Decompress)?;
    if out.len() > max {
        return Err(FrameError::TooLarge {
            len: out.len(),
            max,
        });
    }
    Ok(Bytes::from(out))
}

/// Smallest zstd window log that covers `max` bytes, within zstd's bounds [10, 31].
fn window_log_for(max: usize) -> u32 {
    let bits = usize::BITS - max.saturating_sub(1).leading_zeros();
    bits.clamp(10, 31)
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        self.decode_frame(src)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        match self.decode_frame(src)? {
            Some(payload) => Ok(Some(payload)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated {
                buffered: src.len(),
            }),
        }
    }
}

impl<M: Message> Encoder<M> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, msg: M, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode_frame_into(&msg, dst)
    }
}

/// A complete frame (header included) produced by [`FrameCodec::encode_frame`], written as-is by the
/// codecs' [`Encoder`]s: encode a `ServerFrame` once, send it to every subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame(pub Bytes);

impl Encoder<EncodedFrame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: EncodedFrame, dst: &mut BytesMut) -> Result<(), FrameError> {
        dst.extend_from_slice(&frame.0);
        Ok(())
    }
}

/// A [`FrameCodec`] that decodes every payload as an `M`: for `FramedRead`/`Framed` over a sync
/// stream (`MessageCodec<ServerFrame>` in the sidecar, `MessageCodec<ClientFrame>` in control).
/// It encodes any prost message and [`EncodedFrame`]s.
pub struct MessageCodec<M> {
    frames: FrameCodec,
    _message: PhantomData<fn() -> M>,
}

impl<M> MessageCodec<M> {
    /// Wraps a frame codec.
    pub const fn new(frames: FrameCodec) -> Self {
        Self {
            frames,
            _message: PhantomData,
        }
    }

    /// The underlying frame codec.
    pub const fn frame_codec(&self) -> &FrameCodec {
        &self.frames
    }
}

impl<M> Default for MessageCodec<M> {
    fn default() -> Self {
        Self::new(FrameCodec::default())
    }
}

impl<M> Clone for MessageCodec<M> {
    fn clone(&self) -> Self {
        Self::new(self.frames)
    }
}

impl<M> fmt::Debug for MessageCodec<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageCodec")
            .field("frames", &self.frames)
            .field("message", &std::any::type_name::<M>())
            .finish()
    }
}

impl<M: Message + Default> Decoder for MessageCodec<M> {
    type Item = M;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<M>, FrameError> {
        self.frames.decode_message(src)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<M>, FrameError> {
        Decoder::decode_eof(&mut self.frames, src)?
            .map(decode_payload)
            .transpose()
    }
}

impl<M, T: Message> Encoder<T> for MessageCodec<M> {
    type Error = FrameError;

    fn encode(&mut self, msg: T, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.frames.encode_frame_into(&msg, dst)
    }
}

impl<M> Encoder<EncodedFrame> for MessageCodec<M> {
    type Error = FrameError;

    fn encode(&mut self, frame: EncodedFrame, dst: &mut BytesMut) -> Result<(), FrameError> {
        Encoder::<EncodedFrame>::encode(&mut self.frames, frame, dst)
    }
}
