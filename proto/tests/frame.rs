//! The sync-stream frame codec: round trips, partial input, limits and hostile input.

use std::io::Write as _;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use prost::Message;
use tokio_util::codec::{Decoder, Encoder, FramedRead, FramedWrite};
use vexil_proto::frame::{
    DEFAULT_MAX_FRAME, EncodedFrame, FLAG_ZSTD, FrameCodec, FrameError, HEADER_LEN, MessageCodec,
    decode_payload,
};
use vexil_proto::sync::v1::{
    Ack, ClientFrame, Delta, Entry, Error, ErrorCode, Full, Ping, Resync, ServerFrame, Subscribe,
    Welcome, client_frame, server_frame,
};

const MIB: usize = 1024 * 1024;

fn client_frames() -> Vec<ClientFrame> {
    [
        client_frame::Kind::Subscribe(Subscribe {
            token: "vx_sidecar_0123456789abcdef".into(),
            environment: "production".into(),
            last_revision: 41,
            client_id: "checkout-7d9f8-abcde".into(),
            version: "0.1.0".into(),
            ..Default::default()
        }),
        client_frame::Kind::Ack(Ack {
            revision: 42,
            ..Default::default()
        }),
        client_frame::Kind::Resync(Resync {
            reason: "delta from 40 does not apply on 41".into(),
        }),
    ]
    .into_iter()
    .map(|kind| ClientFrame { kind: Some(kind) })
    .collect()
}

fn server_frames() -> Vec<ServerFrame> {
    [
        server_frame::Kind::Welcome(Welcome {
            server_id: "control-0".into(),
            revision: 42,
            heartbeat_ms: 15_000,
            ..Default::default()
        }),
        server_frame::Kind::Error(Error {
            code: ErrorCode::UnknownEnvironment.into(),
            message: "no environment named staging".into(),
        }),
        server_frame::Kind::Full(Full {
            revision: 42,
            flag_set: r#"{"flags":{"checkout":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}}}"#.into(),
            ..Default::default()
        }),
        server_frame::Kind::Delta(Delta {
            from: 42,
            to: 43,
            flag_upserts: vec![Entry {
                key: "theme".into(),
                definition: r#"{"state":"ENABLED","variants":{"dark":"dark"},"defaultVariant":"dark"}"#.into(),
            }],
            flag_removals: vec!["old-flag".into()],
            evaluator_upserts: vec![Entry {
                key: "beta-users".into(),
                definition: r#"{"in":[{"var":"email"},["a@example.com"]]}"#.into(),
            }],
            evaluator_removals: vec!["gone".into()],
            metadata: Some(r#"{"flagSetId":"prod"}"#.into()),
        }),
        server_frame::Kind::Delta(Delta {
            from: 43,
            to: 44,
            metadata: Some(String::new()), // present but empty is distinct from absent
            ..Delta::default()
        }),
        server_frame::Kind::Ping(Ping { revision: 44 }),
    ]
    .into_iter()
    .map(|kind| ServerFrame { kind: Some(kind) })
    .collect()
}

/// A flagd document of `n` flags: large and very compressible, like real flag sets.
fn big_flag_set(n: usize) -> String {
    let flags: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#""flag-{i}":{{"state":"ENABLED","variants":{{"on":true,"off":false}},"defaultVariant":"off","targeting":{{"if":[{{"in":[{{"var":"email"}},["user{i}@example.com"]]}},"on","off"]}}}}"#
            )
        })
        .collect();
    format!(r#"{{"flags":{{{}}}}}"#, flags.join(","))
}

fn big_full(n: usize) -> ServerFrame {
    ServerFrame {
        kind: Some(server_frame::Kind::Full(Full {
            revision: 7,
            flag_set: big_flag_set(n),
            ..Default::default()
        })),
    }
}

fn big_delta(n: usize) -> ServerFrame {
    ServerFrame {
        kind: Some(server_frame::Kind::Delta(Delta {
            from: 7,
            to: 8,
            flag_upserts: (0..n)
                .map(|i| Entry {
                    key: format!("flag-{i}"),
                    definition: format!(
                        r#"{{"state":"ENABLED","variants":{{"v":{i}}},"defaultVariant":"v"}}"#
                    ),
                })
                .collect(),
            flag_removals: (0..n / 10).map(|i| format!("removed-{i}")).collect(),
            ..Delta::default()
        })),
    }
}

fn flags_of(frame: &[u8]) -> u8 {
    frame[4]
}

fn declared_len(frame: &[u8]) -> usize {
    u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize
}

#[test]
fn every_message_round_trips_small_and_uncompressed() {
    let codec = FrameCodec::default();
    for msg in client_frames() {
        let bytes = codec.encode_frame(&msg).unwrap();
        assert_eq!(flags_of(&bytes), 0);
        assert_eq!(declared_len(&bytes), bytes.len() - 4);
        assert_eq!(&bytes[HEADER_LEN..], msg.encode_to_vec().as_slice());
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(
            codec.decode_message::<ClientFrame>(&mut buf).unwrap(),
            Some(msg)
        );
        assert!(buf.is_empty());
    }
    for msg in server_frames() {
        let bytes = codec.encode_frame(&msg).unwrap();
        assert_eq!(flags_of(&bytes), 0);
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(
            codec.decode_message::<ServerFrame>(&mut buf).unwrap(),
            Some(msg)
        );
        assert!(buf.is_empty());
    }
    // A message with every field at its default encodes to an empty payload: a 5-byte frame.
    let empty = codec.encode_frame(&ServerFrame::default()).unwrap();
    assert_eq!(&empty[..], &[0, 0, 0, 1, 0]);
    let mut buf = BytesMut::from(&empty[..]);
    assert_eq!(
        codec.decode_message(&mut buf).unwrap(),
        Some(ServerFrame::default())
    );
}

#[test]
fn large_frames_are_compressed_and_round_trip() {
    let codec = FrameCodec::default();
    for msg in [big_full(20_000), big_delta(20_000)] {
        let raw_len = msg.encoded_len();
        assert!(raw_len > MIB, "test payload should be large, is {raw_len}");
        let bytes = codec.encode_frame(&msg).unwrap();
        assert_eq!(flags_of(&bytes), FLAG_ZSTD);
        assert!(bytes.len() * 5 < raw_len, "{} vs {raw_len}", bytes.len());
        let mut buf = BytesMut::from(&bytes[..]);
        let payload = codec.decode_frame(&mut buf).unwrap().unwrap();
        assert_eq!(payload.len(), raw_len);
        assert_eq!(decode_payload::<ServerFrame>(payload).unwrap(), msg);
        assert!(buf.is_empty());
    }
}

#[test]
fn compression_threshold_and_fallback() {
    // Disabled: a large payload goes out as-is.
    let plain = FrameCodec::new(DEFAULT_MAX_FRAME, usize::MAX);
    let msg = big_full(2_000);
    let bytes = plain.encode_frame(&msg).unwrap();
    assert_eq!(flags_of(&bytes), 0);
    assert_eq!(bytes.len(), HEADER_LEN + msg.encoded_len());
    // The decoder of a compressing peer reads it all the same.
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(
        FrameCodec::default().decode_message(&mut buf).unwrap(),
        Some(msg)
    );

    // Threshold 1: a tiny payload that zstd cannot shrink is sent uncompressed.
    let eager = FrameCodec::new(DEFAULT_MAX_FRAME, 1);
    let ack = ClientFrame {
        kind: Some(client_frame::Kind::Ack(Ack {
            revision: 9,
            ..Default::default()
        })),
    };
    let bytes = eager.encode_frame(&ack).unwrap();
    assert_eq!(flags_of(&bytes), 0);
    // ... while a repetitive one is compressed.
    let bytes = eager.encode_frame(&big_full(50)).unwrap();
    assert_eq!(flags_of(&bytes), FLAG_ZSTD);
}

#[test]
fn compressed_frames_decode_under_small_limits_at_every_level() {
    // The decoder caps zstd's window to the payload limit; the encoder's frames declare their
    // size, so zstd sizes the window to the content and they always fit.
    use vexil_proto::frame::DEFAULT_MAX_CLIENT_FRAME;
    let msg = big_full(150); // ~40 KiB
    assert!(msg.encoded_len() < DEFAULT_MAX_CLIENT_FRAME);
    for level in [1, 3, 9, 19, 22] {
        let mut codec = FrameCodec::new(DEFAULT_MAX_CLIENT_FRAME, 1024);
        codec.zstd_level = level;
        let bytes = codec.encode_frame(&msg).unwrap();
        assert_eq!(flags_of(&bytes), FLAG_ZSTD, "level {level}");
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(
            codec.decode_message::<ServerFrame>(&mut buf).unwrap(),
            Some(msg.clone()),
            "level {level}"
        );
    }
}

#[test]
fn split_delivery_one_byte_at_a_time() {
    let codec = FrameCodec::default();
    let mut msgs = server_frames();
    msgs.push(big_full(3_000)); // compressed
    msgs.push(ServerFrame::default()); // empty payload
    let mut wire = Vec::new();
    for m in &msgs {
        wire.extend_from_slice(&codec.encode_frame(m).unwrap());
    }

    let mut buf = BytesMut::new();
    let mut decoded = Vec::new();
    for &byte in &wire {
        buf.put_u8(byte);
        while let Some(m) = codec.decode_message::<ServerFrame>(&mut buf).unwrap() {
            decoded.push(m);
        }
    }
    assert_eq!(decoded, msgs);
    assert!(buf.is_empty());
}

#[test]
fn truncated_input_waits_for_more() {
    let codec = FrameCodec::default();
    let bytes = codec.encode_frame(&server_frames()[2]).unwrap();
    for cut in [0, 1, 3, 4, 5, bytes.len() / 2, bytes.len() - 1] {
        let mut buf = BytesMut::from(&bytes[..cut]);
        assert!(
            codec.decode_frame(&mut buf).unwrap().is_none(),
            "cut at {cut}"
        );
        assert_eq!(&buf[..], &bytes[..cut], "nothing consumed at {cut}");
        buf.extend_from_slice(&bytes[cut..]);
        assert!(codec.decode_frame(&mut buf).unwrap().is_some());
    }
    // At end of stream a partial frame is an error, not a silent stop.
    let mut codec_mut = codec;
    let mut buf = BytesMut::from(&bytes[..bytes.len() - 1]);
    assert!(matches!(
        codec_mut.decode_eof(&mut buf),
        Err(FrameError::Truncated { buffered }) if buffered == bytes.len() - 1
    ));
    assert!(
        codec_mut
            .decode_eof(&mut BytesMut::new())
            .unwrap()
            .is_none()
    );
}

#[test]
fn oversized_declared_length_is_rejected_before_allocating() {
    let codec = FrameCodec::default();
    // Only the 4-byte length has arrived: 1 GiB declared.
    let mut buf = BytesMut::with_capacity(8);
    buf.put_u32(1 << 30);
    let cap = buf.capacity();
    match codec.decode_frame(&mut buf) {
        Err(FrameError::TooLarge { len, max }) => {
            assert_eq!(len, (1 << 30) - 1);
            assert_eq!(max, DEFAULT_MAX_FRAME);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(buf.capacity(), cap, "no buffer growth for a refused frame");

    // The largest length the prefix can express.
    let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0][..]);
    assert!(matches!(
        codec.decode_frame(&mut buf),
        Err(FrameError::TooLarge { .. })
    ));

    // Exactly at the limit is fine (and waits for the payload); one byte over is not.
    let small = FrameCodec::new(1024, usize::MAX);
    let mut buf = BytesMut::new();
    buf.put_u32(1024 + 1);
    assert!(small.decode_frame(&mut buf).unwrap().is_none());
    let mut buf = BytesMut::new();
    buf.put_u32(1024 + 2);
    assert!(matches!(
        small.decode_frame(&mut buf),
        Err(FrameError::TooLarge {
            len: 1025,
            max: 1024
        })
    ));
}

#[test]
fn encoder_refuses_messages_over_the_limit() {
    let small = FrameCodec::new(1024, 64);
    let mut dst = BytesMut::new();
    let err = small
        .encode_frame_into(&big_full(100), &mut dst)
        .unwrap_err();
    assert!(matches!(err, FrameError::TooLarge { max: 1024, .. }));
    assert_eq!(err.error_code(), ErrorCode::FrameTooLarge);
    assert!(dst.is_empty(), "nothing written on error");
}

/// A zstd stream of `len` zero bytes without a declared content size (streamed compression).
fn streamed_zeros(len: usize) -> Vec<u8> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        enc.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    enc.finish().unwrap()
}

fn raw_frame(flags: u8, payload: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_u32(u32::try_from(payload.len() + 1).unwrap());
    buf.put_u8(flags);
    buf.put_slice(payload);
    buf
}

#[test]
fn zip_bomb_with_declared_size_is_refused() {
    let codec = FrameCodec::new(MIB, 64 * 1024);
    let bomb = zstd::bulk::compress(&vec![0u8; 16 * MIB], 1).unwrap();
    assert!(
        bomb.len() < 4096,
        "bomb is small on the wire: {}",
        bomb.len()
    );
    let mut buf = raw_frame(FLAG_ZSTD, &bomb);
    match codec.decode_frame(&mut buf) {
        Err(FrameError::TooLarge { len, max }) => {
            assert_eq!(len, 16 * MIB);
            assert_eq!(max, MIB);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn zip_bomb_without_declared_size_stops_at_the_limit() {
    let codec = FrameCodec::new(MIB, 64 * 1024);
    let bomb = streamed_zeros(32 * MIB);
    assert_eq!(
        zstd::zstd_safe::get_frame_content_size(&bomb).unwrap(),
        None,
        "the streamed bomb must not declare its size"
    );
    let mut buf = raw_frame(FLAG_ZSTD, &bomb);
    match codec.decode_frame(&mut buf) {
        Err(FrameError::TooLarge { len, max }) => {
            assert_eq!(max, MIB);
            assert_eq!(len, MIB + 1, "decompression stops one byte past the limit");
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }

    // The same kind of stream within the limit decodes.
    let ok = streamed_zeros(MIB);
    let mut buf = raw_frame(FLAG_ZSTD, &ok);
    assert_eq!(codec.decode_frame(&mut buf).unwrap().unwrap().len(), MIB);
}

#[test]
fn unknown_flags_are_rejected_as_soon_as_seen() {
    let codec = FrameCodec::default();
    for flags in [0b10, 0x80, 0xff] {
        // Only the header has arrived.
        let mut buf = BytesMut::new();
        buf.put_u32(100);
        buf.put_u8(flags);
        assert!(
            matches!(codec.decode_frame(&mut buf), Err(FrameError::UnknownFlags(f)) if f == flags)
        );
        // A complete frame.
        let mut buf = raw_frame(flags, b"\x08\x01");
        let err = codec.decode_frame(&mut buf).unwrap_err();
        assert!(matches!(err, FrameError::UnknownFlags(f) if f == flags));
        assert_eq!(err.error_code(), ErrorCode::MalformedFrame);
    }
}

#[test]
fn garbage_gives_typed_errors() {
    let codec = FrameCodec::default();

    // Declared length 0: no flags byte.
    let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
    assert!(matches!(
        codec.decode_frame(&mut buf),
        Err(FrameError::EmptyFrame)
    ));

    // Not protobuf: an invalid wire type / truncated varint.
    for garbage in [&b"\xff\xff\xff"[..], b"\x0a\x10abc", b"\x07"] {
        let mut buf = raw_frame(0, garbage);
        let err = codec.decode_message::<ServerFrame>(&mut buf).unwrap_err();
        assert!(matches!(err, FrameError::Malformed(_)), "{err:?}");
        assert_eq!(err.error_code(), ErrorCode::MalformedFrame);
        assert!(buf.is_empty(), "the bad frame was consumed");
    }

    // Marked compressed but not zstd.
    let mut buf = raw_frame(FLAG_ZSTD, b"definitely not zstd");
    let err = codec.decode_frame(&mut buf).unwrap_err();
    assert!(matches!(err, FrameError::Decompress(_)), "{err:?}");

    // Valid zstd followed by trailing garbage.
    let mut payload = zstd::bulk::compress(b"hello", 3).unwrap();
    payload.extend_from_slice(b"junk");
    let mut buf = raw_frame(FLAG_ZSTD, &payload);
    assert!(matches!(
        codec.decode_frame(&mut buf),
        Err(FrameError::Decompress(_))
    ));

    // Truncated zstd.
    let full = zstd::bulk::compress(&[7u8; 10_000], 3).unwrap();
    let mut buf = raw_frame(FLAG_ZSTD, &full[..full.len() - 3]);
    assert!(matches!(
        codec.decode_frame(&mut buf),
        Err(FrameError::Decompress(_))
    ));
}

#[test]
fn pseudo_random_input_never_panics() {
    // xorshift: deterministic noise, framed with plausible and implausible headers.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let codec = FrameCodec::new(4096, 64);
    for _ in 0..2_000 {
        let len = (next() % 64) as usize;
        let body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let flags = (next() % 3) as u8;
        for mut buf in [raw_frame(flags, &body), BytesMut::from(&body[..])] {
            let _ = codec.decode_message::<ServerFrame>(&mut buf);
            let _ = codec.decode_message::<ClientFrame>(&mut buf);
        }
    }
}

#[test]
fn shared_encoded_frame_is_written_verbatim() {
    let codec = FrameCodec::default();
    let msg = server_frames().remove(3);
    let bytes = codec.encode_frame(&msg).unwrap();
    let mut out = BytesMut::new();
    let mut typed = MessageCodec::<ClientFrame>::new(codec);
    typed.encode(EncodedFrame(bytes.clone()), &mut out).unwrap();
    let mut plain = codec;
    plain.encode(EncodedFrame(bytes.clone()), &mut out).unwrap();
    plain.encode(msg.clone(), &mut out).unwrap();
    assert_eq!(&out[..bytes.len()], &bytes[..]);
    assert_eq!(&out[bytes.len()..2 * bytes.len()], &bytes[..]);
    assert_eq!(&out[2 * bytes.len()..], &bytes[..]);
}

#[test]
fn error_codes_for_the_peer() {
    assert_eq!(
        FrameError::TooLarge { len: 2, max: 1 }.error_code(),
        ErrorCode::FrameTooLarge
    );
    assert_eq!(
        FrameError::EmptyFrame.error_code(),
        ErrorCode::MalformedFrame
    );
    assert_eq!(
        FrameError::Truncated { buffered: 3 }.error_code(),
        ErrorCode::MalformedFrame
    );
    assert_eq!(
        FrameError::Io(std::io::Error::other("x")).error_code(),
        ErrorCode::Internal
    );
}

#[tokio::test]
async fn framed_over_async_io() {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let (server_read, server_write) = tokio::io::split(server_io);
    let (client_read, client_write) = tokio::io::split(client_io);

    let mut server_tx = FramedWrite::new(server_write, MessageCodec::<ClientFrame>::default());
    let mut server_rx = FramedRead::new(server_read, MessageCodec::<ClientFrame>::default());
    let mut client_tx = FramedWrite::new(client_write, MessageCodec::<ServerFrame>::default());
    let mut client_rx = FramedRead::new(client_read, MessageCodec::<ServerFrame>::default());

    // Sidecar → control.
    let subscribe = client_frames().remove(0);
    client_tx.send(subscribe.clone()).await.unwrap();
    assert_eq!(server_rx.next().await.unwrap().unwrap(), subscribe);

    // Control → sidecar: messages, a shared pre-encoded frame, a large compressed one. The
    // duplex buffer is smaller than the big frame, so reading and writing must interleave.
    let mut expected = server_frames();
    expected.push(big_full(10_000));
    let shared = FrameCodec::default().encode_frame(&expected[0]).unwrap();
    let to_send = expected.clone();
    let writer = tokio::spawn(async move {
        server_tx.send(EncodedFrame(shared)).await.unwrap();
        for m in to_send.into_iter().skip(1) {
            server_tx.send(m).await.unwrap();
        }
        SinkExt::<ServerFrame>::close(&mut server_tx).await.unwrap();
    });
    let mut got = Vec::new();
    for _ in 0..expected.len() {
        got.push(client_rx.next().await.unwrap().unwrap());
    }
    writer.await.unwrap();
    assert_eq!(got, expected);
    // The writer shut its half down: a clean end of stream.
    assert!(client_rx.next().await.is_none());
}

#[tokio::test]
async fn stream_ending_mid_frame_is_truncated() {
    let frame = FrameCodec::default()
        .encode_frame(&server_frames()[0])
        .unwrap();
    let cut = Bytes::copy_from_slice(&frame[..frame.len() - 2]);
    let mut rx = FramedRead::new(&cut[..], MessageCodec::<ServerFrame>::default());
    assert!(matches!(
        rx.next().await,
        Some(Err(FrameError::Truncated { .. }))
    ));
}
