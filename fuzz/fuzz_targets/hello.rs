//! The handshake frame (`proto::decode_hello`), read as the connecting
//! side's `Hello` and as the accepting node's `HelloReply`.
//!
//! Why: it is the first frame either side decodes, before it knows whether
//! the other speaks its protocol version. Checked, beyond "never panics",
//! what the module promises:
//! - `BadMagic` exactly when the frame is shorter than 12 bytes or does not
//!   start with `MAGIC`;
//! - otherwise the version is the big-endian `u32` after the magic, and the
//!   body is decoded only when that version is ours (a foreign version's
//!   body, however malformed, is never looked at);
//! - an accepted body round-trips: `encode_hello` of it decodes to the same
//!   value with the same encoding, and a body that does not decode is a
//!   typed codec error, never anything else.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_common::proto::{self, HandshakeError, Hello, HelloReply, MAGIC, PROTOCOL_VERSION};

fuzz_target!(|data: &[u8]| {
    check::<Hello>(data);
    if let Some(reply) = check::<HelloReply>(data)
        && let HelloReply::Refused(r) = &reply
    {
        // A refusal is compared by value too (it has PartialEq).
        let frame = proto::encode_hello(&reply).expect("a decoded reply re-encodes");
        match proto::decode_hello::<HelloReply>(&frame) {
            Ok((_, Some(HelloReply::Refused(back)))) => assert_eq!(&back, r),
            other => panic!("{reply:?} came back as {other:?}"),
        }
    }
});

/// Runs `decode_hello::<T>` on `data` and checks its promises; returns the
/// body when it decoded.
fn check<T>(data: &[u8]) -> Option<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let has_magic = data.len() >= 12 && data[..8] == MAGIC;
    let result = proto::decode_hello::<T>(data);
    if !has_magic {
        assert!(
            matches!(result, Err(HandshakeError::BadMagic)),
            "no magic, yet {result:?}"
        );
        return None;
    }
    let version = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
    match result {
        Ok((v, None)) => {
            assert_eq!(v, version);
            assert_ne!(v, PROTOCOL_VERSION, "our version's body was not decoded");
            None
        }
        Ok((v, Some(body))) => {
            assert_eq!(v, PROTOCOL_VERSION, "a foreign version's body was decoded");
            // The body alone obeys the codec's round-trip rules...
            tandem_fuzz::round_trip::<T>(&data[12..]).expect("the body decodes alone");
            // ...and a hello made from it reads back the same.
            let frame = proto::encode_hello(&body).expect("a decoded body re-encodes");
            assert_eq!(&frame[..12], &data[..12]);
            let (v2, again) = proto::decode_hello::<T>(&frame).expect("a re-encoded hello decodes");
            assert_eq!(v2, PROTOCOL_VERSION);
            assert_eq!(format!("{body:?}"), format!("{:?}", again.unwrap()));
            Some(body)
        }
        Err(HandshakeError::Codec(_)) => {
            assert_eq!(
                version, PROTOCOL_VERSION,
                "a foreign version's body was decoded"
            );
            // round_trip checks the error is a typed decode error.
            assert!(tandem_fuzz::round_trip::<T>(&data[12..]).is_none());
            None
        }
        Err(e) => panic!("unexpected handshake error {e:?}"),
    }
}
