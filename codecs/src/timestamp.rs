//! RFC 3161 time-stamps of manifest signatures.
//!
//! A tenant may name a time-stamp authority (TSA): at commit the server sends it the SHA-256
//! of the manifest's Ed25519 signature and keeps the token it answers with beside the
//! signature. The token is the TSA's own signed statement that this signature existed at its
//! `genTime`, so the commit time no longer rests on Quire's clock alone.
//!
//! This module is pure: the request's bytes, and the checks of an answer that need no
//! certificate (status, hash algorithm, message imprint, nonce, time, bounded sizes). Whether
//! the TSA's signature on the token is good is checked against the TSA's certificate, which
//! only the verifier can choose to trust: `openssl ts -verify` (docs/SIGNING.md).

use cms::content_info::ContentInfo;
use cms::signed_data::EncapsulatedContentInfo;
use der::asn1::{Int, OctetString};
use der::oid::db::rfc5912::ID_SHA_256;
use der::oid::ObjectIdentifier;
use der::{Any, Decode, Encode};
use x509_tsp::{MessageImprint, TimeStampReq, TimeStampResp, TspVersion, TstInfo};

/// Longest token kept in a manifest (a TSA's chain of two certificates fits with room).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Longest answer read from a TSA.
pub const MAX_RESPONSE_LEN: usize = 64 * 1024;

const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_CT_TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");

/// Why a time-stamp answer or token is not one for this signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("the time-stamp is malformed: {0}")]
    Malformed(String),
    #[error("the time-stamp authority refused the request (status {status}): {text}")]
    Refused { status: String, text: String },
    #[error("the time-stamp is over other data than this signature (message imprint differs)")]
    WrongImprint,
    #[error("the time-stamp answers another request (nonce differs)")]
    WrongNonce,
    #[error("the time-stamp is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
}

/// What a token says, once it is known to be over the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// The TSA's time, seconds since the Unix epoch.
    pub gen_time_unix: u64,
    /// The token's serial number, hex.
    pub serial: String,
    /// The TSA policy it was issued under (an OID).
    pub policy: String,
}

fn malformed(what: &str, e: impl std::fmt::Display) -> TimestampError {
    TimestampError::Malformed(format!("{what}: {e}"))
}

/// A nonce as the DER INTEGER a request carries (63 bits: never negative).
fn nonce_int(nonce: u64) -> Int {
    let bytes = (nonce & (u64::MAX >> 1)).to_be_bytes();
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(7);
    Int::new(&bytes[first..]).expect("a positive 63-bit integer encodes")
}

/// The DER `TimeStampReq` for a SHA-256 `digest`, asking for the TSA's certificate in the
/// token (`certReq`), with `nonce` to match the answer to it.
pub fn request(digest: &[u8; 32], nonce: u64) -> Vec<u8> {
    TimeStampReq {
        version: TspVersion::V1,
        message_imprint: imprint(digest),
        req_policy: None,
        nonce: Some(nonce_int(nonce)),
        cert_req: true,
        extensions: None,
    }
    .to_der()
    .expect("a request encodes")
}

fn imprint(digest: &[u8; 32]) -> MessageImprint {
    MessageImprint {
        hash_algorithm: cms::cert::x509::spki::AlgorithmIdentifier {
            oid: ID_SHA_256,
            parameters: Some(Any::null()),
        },
        hashed_message: OctetString::new(digest.as_slice()).expect("32 bytes encode"),
    }
}

/// The token of a TSA's answer to [`request`]`(digest, nonce)`, checked with [`check_token`],
/// and what it says.
pub fn token_from_response(
    response: &[u8],
    digest: &[u8; 32],
    nonce: u64,
) -> Result<(Vec<u8>, Stamp), TimestampError> {
    if response.len() > MAX_RESPONSE_LEN {
        return Err(TimestampError::TooLong);
    }
    let resp = TimeStampResp::from_der(response).map_err(|e| malformed("response", e))?;
    use cmpv2::status::PkiStatus;
    if !matches!(
        resp.status.status,
        PkiStatus::Accepted | PkiStatus::GrantedWithMods
    ) {
        let text = resp
            .status
            .status_string
            .as_ref()
            .and_then(|s| s.iter().next().map(|t| t.to_string()))
            .unwrap_or_default();
        return Err(TimestampError::Refused {
            status: format!("{:?}", resp.status.status),
            text,
        });
    }
    let token = resp
        .time_stamp_token
        .ok_or_else(|| TimestampError::Malformed("granted, but no token".into()))?
        .to_der()
        .map_err(|e| malformed("token", e))?;
    let stamp = check_token(&token, digest, Some(nonce))?;
    Ok((token, stamp))
}

/// The content a token's `SignedData` signs. Read field by field up to it: what follows (the
/// certificates, which some TSAs list twice, and the signer infos) is the signature's business,
/// checked with the TSA's certificate (module docs).
fn encapsulated(signed_data: &Any) -> der::Result<EncapsulatedContentInfo> {
    use der::Reader;
    if der::Tagged::tag(signed_data) != der::Tag::Sequence {
        return Err(der::Tag::Sequence.value_error());
    }
    let mut r = der::SliceReader::new(signed_data.value())?;
    let _version: Any = r.decode()?;
    let _digest_algorithms: Any = r.decode()?;
    r.decode()
}

/// Checks that `token` (a DER `TimeStampToken`) time-stamps `digest` with SHA-256, and if
/// `nonce` is given that it answers the request that carried it; returns what it says. The
/// TSA's signature is not checked here (see the module docs).
pub fn check_token(
    token: &[u8],
    digest: &[u8; 32],
    nonce: Option<u64>,
) -> Result<Stamp, TimestampError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TimestampError::TooLong);
    }
    let info = ContentInfo::from_der(token).map_err(|e| malformed("token", e))?;
    if info.content_type != ID_SIGNED_DATA {
        return Err(TimestampError::Malformed(
            "the token is not signed data".into(),
        ));
    }
    let encap = encapsulated(&info.content).map_err(|e| malformed("signed data", e))?;
    if encap.econtent_type != ID_CT_TST_INFO {
        return Err(TimestampError::Malformed(
            "the token holds no TSTInfo".into(),
        ));
    }
    let content = encap
        .econtent
        .as_ref()
        .ok_or_else(|| TimestampError::Malformed("the token's TSTInfo is empty".into()))?;
    let tst = TstInfo::from_der(content.value()).map_err(|e| malformed("TSTInfo", e))?;
    let mi = &tst.message_imprint;
    if mi.hash_algorithm.oid != ID_SHA_256 || mi.hashed_message.as_bytes() != digest.as_slice() {
        return Err(TimestampError::WrongImprint);
    }
    if let Some(n) = nonce {
        if tst.nonce.as_ref().map(Int::as_bytes) != Some(nonce_int(n).as_bytes()) {
            return Err(TimestampError::WrongNonce);
        }
    }
    Ok(Stamp {
        gen_time_unix: tst.gen_time.to_unix_duration().as_secs(),
        serial: hex::encode(tst.serial_number.as_bytes()),
        policy: tst.policy.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_carries_the_digest_and_the_nonce() {
        let digest = [7u8; 32];
        let der = request(&digest, 0x8000_0000_0000_1234);
        let req = TimeStampReq::from_der(&der).unwrap();
        assert_eq!(req.message_imprint.hash_algorithm.oid, ID_SHA_256);
        assert_eq!(req.message_imprint.hashed_message.as_bytes(), digest);
        assert_eq!(req.nonce.unwrap().as_bytes(), [0x12, 0x34]);
        assert!(req.cert_req);
    }

    /// An answer of `openssl ts -reply` (OpenSSL 3.0, an ECDSA P-256 TSA) to a request for
    /// the digest 07…07 with nonce 0x4BE2B077D0AD765A.
    const GRANTED: &[u8] = include_bytes!("../vectors/tsa-granted.tsr");
    const NONCE: u64 = 0x4BE2_B077_D0AD_765A;

    #[test]
    fn an_openssl_answer_is_read_and_bound_to_its_digest_and_nonce() {
        let digest = [7u8; 32];
        let (token, stamp) = token_from_response(GRANTED, &digest, NONCE).unwrap();
        assert_eq!(check_token(&token, &digest, None).unwrap(), stamp);
        assert_eq!(stamp.gen_time_unix, 1_796_141_987); // 2026-12-01 16:19:47 UTC
        assert_eq!(
            (stamp.serial.as_str(), stamp.policy.as_str()),
            ("02", "1.2.3.4.1")
        );
        assert_eq!(
            token_from_response(GRANTED, &[8u8; 32], NONCE).map(|(_, s)| s),
            Err(TimestampError::WrongImprint)
        );
        assert_eq!(
            token_from_response(GRANTED, &digest, NONCE + 1).map(|(_, s)| s),
            Err(TimestampError::WrongNonce)
        );
        assert_eq!(
            check_token(&token, &[8u8; 32], None),
            Err(TimestampError::WrongImprint)
        );
    }

    #[test]
    fn garbage_is_malformed_never_a_panic() {
        let digest = [1u8; 32];
        for bad in [&b""[..], b"\x30\x03\x02\x01", b"\x30\x80", &[0x30; 40]] {
            assert!(matches!(
                check_token(bad, &digest, None),
                Err(TimestampError::Malformed(_))
            ));
            assert!(token_from_response(bad, &digest, 1).is_err());
        }
        let long = vec![0u8; MAX_TOKEN_LEN + 1];
        assert_eq!(
            check_token(&long, &digest, None),
            Err(TimestampError::TooLong)
        );
    }
}
