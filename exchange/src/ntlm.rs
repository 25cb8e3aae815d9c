//! NTLMv2 authentication for on-premises EWS, with channel binding (Extended Protection), as
//! an [`Authenticator`] ([`NtlmAuth`]).
//!
//! NTLM authenticates a TCP connection, not a request: the three legs (NEGOTIATE → 401 with
//! the CHALLENGE → AUTHENTICATE) must travel on one keep-alive connection, and later requests on
//! that connection go without an `Authorization` header. reqwest's pool picks connections on
//! its own, so [`NtlmAuth`] owns its connections: TCP + TLS (tokio-rustls, the same `ring`
//! provider and webpki roots reqwest uses, plus the configured extra CA) + a hyper HTTP/1.1
//! client connection each. Idle authenticated connections wait in a small pool; a response
//! hands its connection back once its body has been read to the end (a streaming response keeps
//! it for as long as it streams). A connection the server closed is skipped; a 401 on an
//! authenticated connection (the server forgot it) drops it; either way the request goes out on
//! a new connection with a fresh handshake. A 401 after the AUTHENTICATE leg is
//! [`AuthError::Rejected`], which the EWS client reports as `Denied`.
//!
//! Channel binding (MS-NLMP §3.1.5.1.2, RFC 5929): the AUTHENTICATE message's NTLMv2 response
//! carries `MsvAvChannelBindings` = MD5 of a `gss_channel_bindings_struct` whose application
//! data is `tls-server-end-point:` + the hash of the server's certificate (SHA-256 when the
//! certificate is signed with MD5 or SHA-1, else the hash of its signature algorithm). Like
//! Windows, the client also sends `MsvAvFlags` (MIC present), `MsvAvTargetName`
//! (`HTTP/<host>`) and the MIC (HMAC-MD5 over the three messages with the exported session
//! key, `NTLMSSP_NEGOTIATE_KEY_EXCH` honoured with RC4). Exchange 2019 CU14 and later (and SE)
//! turn Extended Protection on, so a missing or wrong binding is refused with 401. A TLS-
//! terminating load balancer in front of Exchange breaks the binding (the client sees the
//! balancer's certificate); the rejection message says so.
//!
//! Why hand-written instead of `sspi`: `sspi` 0.23 needs Rust 1.93 (the workspace promises
//! 1.85), pulls 56 crates we do not have (a second RustCrypto generation: `rsa` 0.10 and `picky`
//! release candidates, `der` 0.8, three NIST curves, Kerberos) — a cold debug build of its
//! tree took 36 s on two shared cores, which was not the obstacle — and it gives no server side
//! that checks a plain password, which the simulator needs anyway. NTLMv2 itself is a few
//! HMAC-MD5s over well-specified byte layouts (MS-NLMP §2.2, §3.3.2), checked here against the
//! specification's own example (§4.2.4) and against the simulated Exchange's independent
//! server side. Hashes: `md4`, `md-5`, `hmac` (RustCrypto); RC4 is ten lines below.
//!
//! User names: `DOMAIN\user` sends `user` in domain `DOMAIN`; `user@domain` (a UPN) sends the
//! whole UPN as the user name with an empty domain, as Windows does; a bare `user` sends an
//! empty domain (the server's own).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body as HttpBody, Bytes, Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use md5::{Digest as _, Md5};
use rustls::pki_types::{CertificateDer, ServerName};
use vmr_core::clock::Clock;
use vmr_core::secret::Secret;

use crate::auth::{error_chain, AuthError, Authenticator, HttpRequest};

type HmacMd5 = Hmac<Md5>;

/// `NTLMSSP\0`, the first eight bytes of every NTLM message.
pub const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";

/// Negotiate flags (MS-NLMP §2.2.2.5).
pub mod flags {
    pub const NEGOTIATE_UNICODE: u32 = 0x0000_0001;
    pub const NEGOTIATE_OEM: u32 = 0x0000_0002;
    pub const REQUEST_TARGET: u32 = 0x0000_0004;
    pub const NEGOTIATE_SIGN: u32 = 0x0000_0010;
    pub const NEGOTIATE_SEAL: u32 = 0x0000_0020;
    pub const NEGOTIATE_NTLM: u32 = 0x0000_0200;
    pub const NEGOTIATE_ALWAYS_SIGN: u32 = 0x0000_8000;
    pub const TARGET_TYPE_DOMAIN: u32 = 0x0001_0000;
    pub const TARGET_TYPE_SERVER: u32 = 0x0002_0000;
    pub const NEGOTIATE_EXTENDED_SESSIONSECURITY: u32 = 0x0008_0000;
    pub const NEGOTIATE_TARGET_INFO: u32 = 0x0080_0000;
    pub const NEGOTIATE_VERSION: u32 = 0x0200_0000;
    pub const NEGOTIATE_128: u32 = 0x2000_0000;
    pub const NEGOTIATE_KEY_EXCH: u32 = 0x4000_0000;
    pub const NEGOTIATE_56: u32 = 0x8000_0000;
}

/// `AvId`s of the target-information pairs (MS-NLMP §2.2.2.1).
pub mod av {
    pub const EOL: u16 = 0;
    pub const NB_COMPUTER_NAME: u16 = 1;
    pub const NB_DOMAIN_NAME: u16 = 2;
    pub const DNS_COMPUTER_NAME: u16 = 3;
    pub const DNS_DOMAIN_NAME: u16 = 4;
    pub const DNS_TREE_NAME: u16 = 5;
    pub const FLAGS: u16 = 6;
    pub const TIMESTAMP: u16 = 7;
    pub const SINGLE_HOST: u16 = 8;
    pub const TARGET_NAME: u16 = 9;
    pub const CHANNEL_BINDINGS: u16 = 10;
    /// `MsvAvFlags` bit: the AUTHENTICATE message carries a MIC.
    pub const FLAG_MIC_PRESENT: u32 = 0x0000_0002;
}

/// The flags this client asks for in its NEGOTIATE message (what Windows' HTTP stack asks for,
/// less sealing: EWS runs over TLS and never seals with NTLM).
pub const CLIENT_FLAGS: u32 = flags::NEGOTIATE_56
    | flags::NEGOTIATE_KEY_EXCH
    | flags::NEGOTIATE_128
    | flags::NEGOTIATE_EXTENDED_SESSIONSECURITY
    | flags::NEGOTIATE_ALWAYS_SIGN
    | flags::NEGOTIATE_NTLM
    | flags::NEGOTIATE_SIGN
    | flags::REQUEST_TARGET
    | flags::NEGOTIATE_OEM
    | flags::NEGOTIATE_UNICODE;

/// A message that is not what its type says it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed NTLM message: {0}")]
pub struct MessageError(pub String);

fn malformed(what: impl Into<String>) -> MessageError {
    MessageError(what.into())
}

/// Text as UTF-16LE bytes (NTLM's "Unicode").
pub fn utf16le(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn u16_at(bytes: &[u8], at: usize) -> Result<u16, MessageError> {
    bytes
        .get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or_else(|| malformed(format!("too short for a field at {at}")))
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, MessageError> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| malformed(format!("too short for a field at {at}")))
}

/// The payload a `(Len, MaxLen, Offset)` field at `at` points to.
fn payload_at<'a>(bytes: &'a [u8], at: usize, name: &str) -> Result<&'a [u8], MessageError> {
    let len = usize::from(u16_at(bytes, at)?);
    let offset = usize::try_from(u32_at(bytes, at + 4)?).unwrap_or(usize::MAX);
    if len == 0 {
        return Ok(&[]);
    }
    bytes
        .get(offset..offset.saturating_add(len))
        .ok_or_else(|| {
            malformed(format!(
                "{name} ({len} bytes at {offset}) lies outside the message"
            ))
        })
}

fn check_header(bytes: &[u8], message_type: u32) -> Result<(), MessageError> {
    if bytes.get(..8) != Some(SIGNATURE.as_slice()) {
        return Err(malformed("no NTLMSSP signature"));
    }
    let found = u32_at(bytes, 8)?;
    if found != message_type {
        return Err(malformed(format!(
            "message type {found}, expected {message_type}"
        )));
    }
    Ok(())
}

/// One target-information pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvPair {
    pub id: u16,
    pub value: Vec<u8>,
}

/// Reads an `AV_PAIR` list up to `MsvAvEOL` (which is not returned).
pub fn parse_av_pairs(bytes: &[u8]) -> Result<Vec<AvPair>, MessageError> {
    let mut pairs = Vec::new();
    let mut at = 0;
    loop {
        let id = u16_at(bytes, at).map_err(|_| malformed("target info ends without MsvAvEOL"))?;
        let len = usize::from(u16_at(bytes, at + 2)?);
        if id == av::EOL {
            return Ok(pairs);
        }
        let value = bytes
            .get(at + 4..at + 4 + len)
            .ok_or_else(|| malformed(format!("AV pair {id} overruns the target info")))?;
        pairs.push(AvPair {
            id,
            value: value.to_vec(),
        });
        at += 4 + len;
    }
}

/// Writes `pairs` and the closing `MsvAvEOL`.
pub fn encode_av_pairs(pairs: &[AvPair]) -> Vec<u8> {
    let mut out = Vec::new();
    for pair in pairs {
        out.extend_from_slice(&pair.id.to_le_bytes());
        out.extend_from_slice(&(pair.value.len() as u16).to_le_bytes());
        out.extend_from_slice(&pair.value);
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out
}

/// The NEGOTIATE message (type 1) with `negotiate_flags`, no domain or workstation, no version.
pub fn negotiate_message(negotiate_flags: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(40);
    out.extend_from_slice(SIGNATURE);
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&negotiate_flags.to_le_bytes());
    // DomainNameFields and WorkstationFields: empty, pointing at the end of the message.
    for _ in 0..2 {
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&40u32.to_le_bytes());
    }
    out.extend_from_slice(&[0; 8]);
    out
}

/// A CHALLENGE message (type 2) as the client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeMessage {
    pub flags: u32,
    pub server_challenge: [u8; 8],
    /// `TargetName` decoded from UTF-16.
    pub target_name: String,
    /// `TargetInfo` as sent (pairs and `MsvAvEOL`).
    pub target_info: Vec<u8>,
}

impl ChallengeMessage {
    /// Reads a CHALLENGE message.
    pub fn parse(bytes: &[u8]) -> Result<Self, MessageError> {
        check_header(bytes, 2)?;
        let name = payload_at(bytes, 12, "TargetName")?;
        let flags = u32_at(bytes, 20)?;
        let mut server_challenge = [0u8; 8];
        server_challenge.copy_from_slice(
            bytes
                .get(24..32)
                .ok_or_else(|| malformed("no ServerChallenge"))?,
        );
        let target_info = if flags & flags::NEGOTIATE_TARGET_INFO != 0 {
            payload_at(bytes, 40, "TargetInfo")?.to_vec()
        } else {
            Vec::new()
        };
        let units: Vec<u16> = name
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        Ok(ChallengeMessage {
            flags,
            server_challenge,
            target_name: String::from_utf16_lossy(&units),
            target_info,
        })
    }

    /// The target-information pairs (empty when there are none).
    pub fn av_pairs(&self) -> Result<Vec<AvPair>, MessageError> {
        if self.target_info.is_empty() {
            return Ok(Vec::new());
        }
        parse_av_pairs(&self.target_info)
    }
}

/// `NTOWFv2(Password, User, UserDom)` = HMAC-MD5(MD4(UTF-16(password)), UTF-16(UPPER(user) +
/// domain)) (MS-NLMP §3.3.2). Also `LMOWFv2`.
pub fn nt_owf_v2(password: &str, user: &str, domain: &str) -> [u8; 16] {
    let nt_hash = md4::Md4::digest(utf16le(password));
    hmac_md5(
        &nt_hash,
        &[&utf16le(&format!("{}{domain}", user.to_uppercase()))],
    )
}

/// HMAC-MD5 of the concatenated `parts`.
pub fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    let mut mac = <HmacMd5 as hmac::Mac>::new_from_slice(key).unwrap_or_else(|_| {
        // HMAC takes keys of any length; this cannot happen.
        unreachable!("HMAC accepts every key length")
    });
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The NTLMv2 `temp` blob: response version, time, client challenge and the target info the
/// client vouches for (MS-NLMP §3.3.2).
pub fn ntlmv2_blob(timestamp: u64, client_challenge: &[u8; 8], target_info: &[u8]) -> Vec<u8> {
    let mut temp = vec![1, 1, 0, 0, 0, 0, 0, 0];
    temp.extend_from_slice(&timestamp.to_le_bytes());
    temp.extend_from_slice(client_challenge);
    temp.extend_from_slice(&[0; 4]);
    temp.extend_from_slice(target_info);
    temp.extend_from_slice(&[0; 4]);
    temp
}

/// What [`ntlmv2_response`] computes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ntlmv2Response {
    /// `NtChallengeResponse` = `NTProofStr` + `temp`.
    pub nt_response: Vec<u8>,
    /// `LmChallengeResponse` (LMv2).
    pub lm_response: Vec<u8>,
    /// `SessionBaseKey` = HMAC-MD5(ResponseKeyNT, NTProofStr); also the key-exchange key.
    pub session_base_key: [u8; 16],
}

impl Ntlmv2Response {
    /// The first 16 bytes of the NT response.
    pub fn nt_proof_str(&self) -> &[u8] {
        &self.nt_response[..16]
    }
}

/// The NTLMv2 responses for `response_key` (= [`nt_owf_v2`]) to `server_challenge`, with
/// `blob` from [`ntlmv2_blob`].
pub fn ntlmv2_response(
    response_key: &[u8; 16],
    server_challenge: &[u8; 8],
    client_challenge: &[u8; 8],
    blob: &[u8],
) -> Ntlmv2Response {
    let proof = hmac_md5(response_key, &[server_challenge, blob]);
    let mut nt_response = proof.to_vec();
    nt_response.extend_from_slice(blob);
    let mut lm_response = hmac_md5(response_key, &[server_challenge, client_challenge]).to_vec();
    lm_response.extend_from_slice(client_challenge);
    Ntlmv2Response {
        nt_response,
        lm_response,
        session_base_key: hmac_md5(response_key, &[&proof]),
    }
}

/// RC4 (used once, to send the exported session key under the key-exchange key).
pub fn rc4(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut s: [u8; 256] = std::array::from_fn(|i| i as u8);
    let mut j: u8 = 0;
    for i in 0..256 {
        j = j.wrapping_add(s[i]).wrapping_add(key[i % key.len().max(1)]);
        s.swap(i, usize::from(j));
    }
    let (mut i, mut j) = (0u8, 0u8);
    data.iter()
        .map(|byte| {
            i = i.wrapping_add(1);
            j = j.wrapping_add(s[usize::from(i)]);
            s.swap(usize::from(i), usize::from(j));
            let k = s[usize::from(s[usize::from(i)].wrapping_add(s[usize::from(j)]))];
            byte ^ k
        })
        .collect()
}

/// The fields of an AUTHENTICATE message (type 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticateFields {
    pub flags: u32,
    pub lm_response: Vec<u8>,
    pub nt_response: Vec<u8>,
    pub domain: String,
    pub user: String,
    pub workstation: String,
    pub encrypted_session_key: Vec<u8>,
    /// The 8-byte `Version` field (zeros unless `NTLMSSP_NEGOTIATE_VERSION`).
    pub version: [u8; 8],
    /// Whether the message has the 16-byte MIC field (filled later by [`set_mic`]).
    pub with_mic: bool,
}

/// Offset of the MIC in an AUTHENTICATE message that has one.
pub const MIC_OFFSET: usize = 72;

/// Encodes an AUTHENTICATE message: the fixed part, then domain, user, workstation, LM and NT
/// responses and the session key, in the order Windows writes them (MS-NLMP §4.2.4.3). The MIC
/// field, if any, is zero.
pub fn authenticate_message(fields: &AuthenticateFields) -> Vec<u8> {
    let header_len = if fields.with_mic { 88 } else { 72 };
    let unicode = |text: &str| utf16le(text);
    let payloads: [Vec<u8>; 6] = [
        unicode(&fields.domain),
        unicode(&fields.user),
        unicode(&fields.workstation),
        fields.lm_response.clone(),
        fields.nt_response.clone(),
        fields.encrypted_session_key.clone(),
    ];
    let mut offsets = [0u32; 6];
    let mut at = header_len as u32;
    for (slot, payload) in offsets.iter_mut().zip(payloads.iter()) {
        *slot = at;
        at += payload.len() as u32;
    }
    let field = |out: &mut Vec<u8>, index: usize| {
        let len = payloads[index].len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&offsets[index].to_le_bytes());
    };
    let mut out = Vec::with_capacity(at as usize);
    out.extend_from_slice(SIGNATURE);
    out.extend_from_slice(&3u32.to_le_bytes());
    // Lm, Nt, Domain, User, Workstation, EncryptedRandomSessionKey.
    for index in [3, 4, 0, 1, 2, 5] {
        field(&mut out, index);
    }
    out.extend_from_slice(&fields.flags.to_le_bytes());
    out.extend_from_slice(&fields.version);
    if fields.with_mic {
        out.extend_from_slice(&[0; 16]);
    }
    for payload in &payloads {
        out.extend_from_slice(payload);
    }
    out
}

/// `MIC = HMAC-MD5(ExportedSessionKey, NEGOTIATE + CHALLENGE + AUTHENTICATE)`, computed with
/// the MIC field zero and written into it.
pub fn set_mic(
    exported_session_key: &[u8; 16],
    negotiate: &[u8],
    challenge: &[u8],
    authenticate: &mut [u8],
) {
    let mic = hmac_md5(exported_session_key, &[negotiate, challenge, authenticate]);
    if let Some(slot) = authenticate.get_mut(MIC_OFFSET..MIC_OFFSET + 16) {
        slot.copy_from_slice(&mic);
    }
}

/// The hash the `tls-server-end-point` channel binding uses for a certificate (RFC 5929 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndPointHash {
    Sha256,
    Sha384,
    Sha512,
}

/// Which hash RFC 5929 prescribes for `cert_der`: its signature algorithm's hash, SHA-256 for
/// MD5 and SHA-1. `Err` names an algorithm without one (Ed25519, Ed448, unknown).
pub fn end_point_hash(cert_der: &[u8]) -> Result<EndPointHash, String> {
    use x509_cert::der::Decode as _;
    let cert = x509_cert::Certificate::from_der(cert_der)
        .map_err(|e| format!("the server certificate is not DER X.509: {e}"))?;
    let algorithm = &cert.signature_algorithm;
    let oid = algorithm.oid.to_string();
    let hash = match oid.as_str() {
        // md5/sha1/sha224/sha256 with RSA, ecdsa-with-SHA1/SHA224/SHA256, DSA with SHA-1/SHA-256.
        "1.2.840.113549.1.1.4"
        | "1.2.840.113549.1.1.5"
        | "1.2.840.113549.1.1.14"
        | "1.2.840.113549.1.1.11"
        | "1.2.840.10045.4.1"
        | "1.2.840.10045.4.3.1"
        | "1.2.840.10045.4.3.2"
        | "1.2.840.10040.4.3"
        | "2.16.840.1.101.3.4.3.2" => EndPointHash::Sha256,
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => EndPointHash::Sha384,
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => EndPointHash::Sha512,
        // RSASSA-PSS: the hash is in the parameters (SHA-1 when absent).
        "1.2.840.113549.1.1.10" => {
            let params = algorithm
                .parameters
                .as_ref()
                .map(|p| p.value().to_vec())
                .unwrap_or_default();
            pss_hash(&params)
        }
        other => {
            return Err(format!(
                "RFC 5929 defines no tls-server-end-point hash for signature algorithm {other}"
            ))
        }
    };
    Ok(hash)
}

/// The hash of RSASSA-PSS parameters (the content of their SEQUENCE): `[0] hashAlgorithm`.
fn pss_hash(params: &[u8]) -> EndPointHash {
    // sha384 = 2.16.840.1.101.3.4.2.2, sha512 = …2.3 (DER OID content bytes).
    const SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
    const SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];
    // The first element, if tagged [0], holds the hash's AlgorithmIdentifier.
    if params.first() == Some(&0xa0) {
        let head = &params[..params.len().min(24)];
        if head.windows(SHA384.len()).any(|w| w == SHA384) {
            return EndPointHash::Sha384;
        }
        if head.windows(SHA512.len()).any(|w| w == SHA512) {
            return EndPointHash::Sha512;
        }
    }
    // SHA-1 (the default), SHA-256 and SHA-224 all bind with SHA-256.
    EndPointHash::Sha256
}

/// `tls-server-end-point:` + the certificate hash (RFC 5929 §4).
pub fn tls_server_end_point(cert_der: &[u8]) -> Result<Vec<u8>, String> {
    let hash: Vec<u8> = match end_point_hash(cert_der)? {
        EndPointHash::Sha256 => sha2::Sha256::digest(cert_der).to_vec(),
        EndPointHash::Sha384 => sha2::Sha384::digest(cert_der).to_vec(),
        EndPointHash::Sha512 => sha2::Sha512::digest(cert_der).to_vec(),
    };
    let mut data = b"tls-server-end-point:".to_vec();
    data.extend_from_slice(&hash);
    Ok(data)
}

/// `MsvAvChannelBindings`: MD5 of the flattened `gss_channel_bindings_struct` with no
/// addresses and `application_data` (MS-NLMP §3.1.5.1.2, RFC 2744 §3.11).
pub fn channel_binding_hash(application_data: &[u8]) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update([0u8; 16]);
    md5.update((application_data.len() as u32).to_le_bytes());
    md5.update(application_data);
    md5.finalize().into()
}

/// A user name split as NTLM sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NtlmUser {
    /// `UserName` (the UPN for `user@domain`).
    pub user: String,
    /// `DomainName` (empty for a UPN or a bare name).
    pub domain: String,
}

impl NtlmUser {
    /// `DOMAIN\user`, `user@domain` or `user`.
    pub fn parse(username: &str) -> Self {
        match username.split_once('\\') {
            Some((domain, user)) => NtlmUser {
                user: user.to_owned(),
                domain: domain.to_owned(),
            },
            None => NtlmUser {
                user: username.to_owned(),
                domain: String::new(),
            },
        }
    }
}

/// What the client computes from one challenge.
#[derive(Debug, Clone)]
pub struct ClientAuthenticate {
    /// The AUTHENTICATE message, MIC set.
    pub message: Vec<u8>,
    /// Whether `MsvAvChannelBindings` was sent.
    pub bound: bool,
}

/// Inputs of [`client_authenticate`] that a test pins and the client draws at random.
#[derive(Debug, Clone)]
pub struct ClientRandom {
    pub client_challenge: [u8; 8],
    pub exported_session_key: [u8; 16],
}

impl ClientRandom {
    /// Fresh random values.
    pub fn generate() -> Self {
        ClientRandom {
            client_challenge: rand::random(),
            exported_session_key: rand::random(),
        }
    }
}

/// One handshake as far as the client got: the messages so far and what binds it.
#[derive(Debug, Clone)]
pub struct Handshake<'a> {
    /// The NEGOTIATE message sent.
    pub negotiate: &'a [u8],
    /// The CHALLENGE message received.
    pub challenge: &'a [u8],
    /// The `MsvAvChannelBindings` value ([`channel_binding_hash`]), if any.
    pub binding: Option<[u8; 16]>,
    /// `MsvAvTargetName`: `HTTP/<host>`.
    pub spn: &'a str,
    /// The client's time (FILETIME), used when the server sends no `MsvAvTimestamp`.
    pub now_filetime: u64,
    pub random: &'a ClientRandom,
}

/// Computes the AUTHENTICATE message answering `handshake`'s challenge as `user` with
/// `password`. The NTLMv2 time is the server's `MsvAvTimestamp` when it sent one.
pub fn client_authenticate(
    user: &NtlmUser,
    password: &str,
    handshake: &Handshake<'_>,
) -> Result<ClientAuthenticate, MessageError> {
    let Handshake {
        negotiate,
        challenge: challenge_bytes,
        binding,
        spn,
        now_filetime,
        random,
    } = *handshake;
    let challenge = ChallengeMessage::parse(challenge_bytes)?;
    if challenge.flags & flags::NEGOTIATE_UNICODE == 0 {
        return Err(malformed("the server does not negotiate Unicode"));
    }
    let server_pairs = challenge.av_pairs()?;
    let server_time = server_pairs
        .iter()
        .find(|p| p.id == av::TIMESTAMP && p.value.len() == 8)
        .map(|p| u64::from_le_bytes(p.value[..8].try_into().unwrap_or([0; 8])));
    let mut pairs: Vec<AvPair> = server_pairs
        .into_iter()
        .filter(|p| !matches!(p.id, av::FLAGS | av::CHANNEL_BINDINGS | av::TARGET_NAME))
        .collect();
    pairs.push(AvPair {
        id: av::FLAGS,
        value: av::FLAG_MIC_PRESENT.to_le_bytes().to_vec(),
    });
    if let Some(hash) = binding {
        pairs.push(AvPair {
            id: av::CHANNEL_BINDINGS,
            value: hash.to_vec(),
        });
    }
    pairs.push(AvPair {
        id: av::TARGET_NAME,
        value: utf16le(spn),
    });
    let response_key = nt_owf_v2(password, &user.user, &user.domain);
    let blob = ntlmv2_blob(
        server_time.unwrap_or(now_filetime),
        &random.client_challenge,
        &encode_av_pairs(&pairs),
    );
    let mut response = ntlmv2_response(
        &response_key,
        &challenge.server_challenge,
        &random.client_challenge,
        &blob,
    );
    if server_time.is_some() {
        // MS-NLMP §3.1.5.1.2: with a server timestamp the LM response is Z(24).
        response.lm_response = vec![0; 24];
    }
    let negotiated = challenge.flags & CLIENT_FLAGS & !flags::NEGOTIATE_OEM;
    let (exported, encrypted) = if negotiated & flags::NEGOTIATE_KEY_EXCH != 0 {
        (
            random.exported_session_key,
            rc4(&response.session_base_key, &random.exported_session_key),
        )
    } else {
        (response.session_base_key, Vec::new())
    };
    let mut message = authenticate_message(&AuthenticateFields {
        flags: negotiated,
        lm_response: response.lm_response,
        nt_response: response.nt_response,
        domain: user.domain.clone(),
        user: user.user.clone(),
        workstation: String::new(),
        encrypted_session_key: encrypted,
        version: [0; 8],
        with_mic: true,
    });
    set_mic(&exported, negotiate, challenge_bytes, &mut message);
    Ok(ClientAuthenticate {
        message,
        bound: binding.is_some(),
    })
}

/// Unix ms as a Windows FILETIME (100 ns since 1601-01-01).
pub fn filetime_from_unix_ms(unix_ms: i64) -> u64 {
    const EPOCH_DIFFERENCE_MS: i64 = 11_644_473_600_000;
    u64::try_from(unix_ms.saturating_add(EPOCH_DIFFERENCE_MS)).unwrap_or(0) * 10_000
}

// ---------------------------------------------------------------------------------------------
// The HTTP side.
// ---------------------------------------------------------------------------------------------

/// Where the client takes its channel binding from. Anything but the default is for tests and
/// diagnosis.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ChannelBinding {
    /// From the certificate the server presented on the connection (what Windows does).
    #[default]
    ServerCertificate,
    /// Send no `MsvAvChannelBindings` (what clients without Extended Protection do).
    Omit,
    /// Hash this DER certificate instead of the server's: a client behind a TLS-intercepting
    /// proxy would compute this.
    Certificate(Vec<u8>),
}

/// How [`NtlmAuth`] makes TLS connections.
#[derive(Clone)]
pub struct NtlmTls {
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for NtlmTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NtlmTls").finish_non_exhaustive()
    }
}

impl NtlmTls {
    /// The web PKI roots reqwest trusts, plus every certificate in `extra_ca_pem` (PEM, may be
    /// empty); `accept_invalid_certs` trusts any certificate (the demo's switch, as
    /// reqwest's `danger_accept_invalid_certs`). HTTP/1.1 only: Windows authentication does not
    /// run over HTTP/2.
    pub fn new(extra_ca_pem: &[u8], accept_invalid_certs: bool) -> Result<Self, AuthError> {
        use rustls::pki_types::pem::PemObject as _;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| AuthError::Credential(format!("TLS setup failed: {e}")))?;
        let mut config = if accept_invalid_certs {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
                .with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            if !extra_ca_pem.is_empty() {
                let mut any = false;
                for cert in CertificateDer::pem_slice_iter(extra_ca_pem) {
                    let cert = cert.map_err(|e| {
                        AuthError::Credential(format!("the extra CA file is not PEM: {e}"))
                    })?;
                    roots.add(cert).map_err(|e| {
                        AuthError::Credential(format!("the extra CA certificate is unusable: {e}"))
                    })?;
                    any = true;
                }
                if !any {
                    return Err(AuthError::Credential(
                        "the extra CA file holds no PEM certificate".to_owned(),
                    ));
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(NtlmTls {
            config: Arc::new(config),
        })
    }
}

/// The verifier behind `accept_invalid_certs`: any certificate, signatures still checked.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What [`NtlmAuth`] did, for tests and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NtlmStats {
    /// TCP+TLS connections opened.
    pub connections: u64,
    /// Handshakes that ended authenticated.
    pub authenticated: u64,
    /// Requests sent on an already authenticated connection.
    pub reused: u64,
    /// Authenticated connections found closed or answering 401, and replaced.
    pub renegotiated: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    authenticated: AtomicU64,
    reused: AtomicU64,
    renegotiated: AtomicU64,
}

/// An authenticated connection.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

type Pool = Arc<Mutex<Vec<Connection>>>;

/// NTLMv2 over HTTP/1.1 connections this authenticator owns (see the module docs).
pub struct NtlmAuth {
    username: String,
    user: NtlmUser,
    password: Secret,
    tls: NtlmTls,
    binding: ChannelBinding,
    clock: Arc<dyn Clock>,
    idle: Pool,
    counters: Counters,
}

impl std::fmt::Debug for NtlmAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NtlmAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("binding", &self.binding)
            .finish_non_exhaustive()
    }
}

/// The most idle authenticated connections kept.
const MAX_IDLE: usize = 8;

impl NtlmAuth {
    /// NTLMv2 for `username` (`DOMAIN\user`, `user@domain` or `user`) over `tls`, binding to the
    /// server's certificate. `clock` gives the NTLMv2 time when the server sends none.
    pub fn new(
        username: impl Into<String>,
        password: Secret,
        tls: NtlmTls,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let username = username.into();
        NtlmAuth {
            user: NtlmUser::parse(&username),
            username,
            password,
            tls,
            binding: ChannelBinding::default(),
            clock,
            idle: Arc::new(Mutex::new(Vec::new())),
            counters: Counters::default(),
        }
    }

    /// The same with the channel binding taken from elsewhere (tests, diagnosis).
    pub fn with_channel_binding(mut self, binding: ChannelBinding) -> Self {
        self.binding = binding;
        self
    }

    /// What it did so far.
    pub fn stats(&self) -> NtlmStats {
        NtlmStats {
            connections: self.counters.connections.load(Ordering::Relaxed),
            authenticated: self.counters.authenticated.load(Ordering::Relaxed),
            reused: self.counters.reused.load(Ordering::Relaxed),
            renegotiated: self.counters.renegotiated.load(Ordering::Relaxed),
        }
    }

    fn take_idle(&self) -> Option<Connection> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// The `MsvAvChannelBindings` value for a connection to a server that showed `server_cert`,
    /// or why there is none.
    fn binding_for(&self, server_cert: Option<&[u8]>) -> Result<[u8; 16], String> {
        let cert = match &self.binding {
            ChannelBinding::Omit => return Err("channel binding is switched off".to_owned()),
            ChannelBinding::Certificate(der) => der.as_slice(),
            ChannelBinding::ServerCertificate => {
                server_cert.ok_or_else(|| "the server presented no certificate".to_owned())?
            }
        };
        tls_server_end_point(cert).map(|data| channel_binding_hash(&data))
    }

    /// TCP + TLS + HTTP/1.1 to `target`; the connection task runs in the background.
    async fn connect(
        &self,
        target: &Target,
    ) -> Result<(SendRequest<Full<Bytes>>, Option<Vec<u8>>), AuthError> {
        let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| target.connection_error(format!("connecting: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(target.host.clone())
            .map_err(|e| target.connection_error(format!("bad host name: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| target.connection_error(format!("TLS handshake: {}", error_chain(&e))))?;
        let server_cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(|cert| cert.as_ref().to_vec());
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| target.connection_error(format!("HTTP/1.1: {}", error_chain(&e))))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %error_chain(&error), "NTLM connection ended");
            }
        });
        self.counters.connections.fetch_add(1, Ordering::Relaxed);
        Ok((sender, server_cert))
    }

    /// A new connection, the three legs on it, and the response to `request` (not a 401).
    async fn negotiate(
        &self,
        target: &Target,
        request: &HttpRequest,
    ) -> Result<(Connection, hyper::Response<Incoming>), AuthError> {
        let (mut sender, server_cert) = self.connect(target).await?;
        let negotiate = negotiate_message(CLIENT_FLAGS);
        let first = send(
            &mut sender,
            target,
            request,
            Some(format!("NTLM {}", B64.encode(&negotiate))),
            false,
        )
        .await?;
        if first.status() != hyper::StatusCode::UNAUTHORIZED {
            // The endpoint lets anyone in: nothing to authenticate.
            return Ok((Connection { sender }, first));
        }
        let offered = www_authenticate(first.headers());
        drain(first).await;
        let challenge = offered
            .iter()
            .find_map(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("NTLM").then(|| token.trim())
            })
            .ok_or_else(|| {
                let rejected = if offered.iter().any(|v| v.eq_ignore_ascii_case("NTLM")) {
                    "the server answered the NEGOTIATE message with a bare `NTLM` challenge \
                     (no CHALLENGE message): it refused the negotiation"
                        .to_owned()
                } else {
                    format!(
                        "the server does not offer NTLM (WWW-Authenticate: {})",
                        offered.join(", ")
                    )
                };
                target.rejected(rejected)
            })?;
        let challenge = B64
            .decode(challenge)
            .map_err(|e| target.rejected(format!("the NTLM challenge is not base64: {e}")))?;
        let binding = self.binding_for(server_cert.as_deref());
        if let Err(why) = &binding {
            tracing::warn!(url = %request.url, reason = %why, "NTLM without channel binding");
        }
        let authenticate = client_authenticate(
            &self.user,
            self.password.expose(),
            &Handshake {
                negotiate: &negotiate,
                challenge: &challenge,
                binding: binding.as_ref().ok().copied(),
                spn: &format!("HTTP/{}", target.host),
                now_filetime: filetime_from_unix_ms(self.clock.now_unix_ms()),
                random: &ClientRandom::generate(),
            },
        )
        .map_err(|e| target.rejected(e.to_string()))?;
        let response = send(
            &mut sender,
            target,
            request,
            Some(format!("NTLM {}", B64.encode(&authenticate.message))),
            true,
        )
        .await?;
        if response.status() == hyper::StatusCode::UNAUTHORIZED {
            drain(response).await;
            let bound = match (&binding, server_cert.as_deref()) {
                (Ok(_), Some(cert)) => format!(
                    "sent channel binding tls-server-end-point {} (the certificate this client \
                     saw; a TLS-terminating load balancer or proxy in front of Exchange makes it \
                     differ from Exchange's own)",
                    hex_prefix(&tls_server_end_point(cert).unwrap_or_default()[21..])
                ),
                (Ok(_), None) => "sent a channel binding for a configured certificate".to_owned(),
                (Err(why), _) => format!("sent no channel binding ({why})"),
            };
            return Err(target.rejected(format!(
                "the server refused the NTLMv2 response for {}: the password is wrong, the \
                 account is locked or disabled, or Extended Protection rejected the channel \
                 binding; {bound}",
                self.username
            )));
        }
        self.counters.authenticated.fetch_add(1, Ordering::Relaxed);
        Ok((Connection { sender }, response))
    }

    async fn send_request(&self, request: &HttpRequest) -> Result<reqwest::Response, AuthError> {
        let target = Target::parse(&request.url)?;
        let deadline = tokio::time::Instant::now() + request.timeout;
        let exchange = async {
            while let Some(mut connection) = self.take_idle() {
                if connection.sender.is_closed() || connection.sender.ready().await.is_err() {
                    self.counters.renegotiated.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                match send(&mut connection.sender, &target, request, None, true).await {
                    Ok(response) if response.status() == hyper::StatusCode::UNAUTHORIZED => {
                        // The server no longer knows this connection: negotiate afresh.
                        drain(response).await;
                        self.counters.renegotiated.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(response) => {
                        self.counters.reused.fetch_add(1, Ordering::Relaxed);
                        return Ok((connection, response));
                    }
                    Err(_) if connection.sender.is_closed() => {
                        // Closed under us before the request went out (a keep-alive timeout).
                        self.counters.renegotiated.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => return Err(error),
                }
            }
            self.negotiate(&target, request).await
        };
        let (connection, response) =
            tokio::time::timeout_at(deadline, exchange)
                .await
                .map_err(|_| AuthError::Connection {
                    url: request.url.clone(),
                    timed_out: true,
                    detail: format!("no response within {:?}", request.timeout),
                })??;
        let (parts, body) = response.into_parts();
        let body = PooledBody {
            inner: body,
            connection: Some(connection),
            pool: self.idle.clone(),
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
        };
        let response = hyper::Response::from_parts(parts, reqwest::Body::wrap(body));
        Ok(reqwest::Response::from(response))
    }
}

#[async_trait]
impl Authenticator for NtlmAuth {
    async fn send(
        &self,
        _http: &reqwest::Client,
        request: HttpRequest,
    ) -> Result<reqwest::Response, AuthError> {
        self.send_request(&request).await
    }

    fn invalidate(&self) {
        // A 401 that reached the client means the handshake itself was refused (reported as
        // Rejected before it gets here) or the server dropped the authentication: start over.
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn scheme(&self) -> &'static str {
        "ntlm"
    }
}

/// The first bytes of a hash as hex, for messages.
fn hex_prefix(bytes: &[u8]) -> String {
    let text: String = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{text}…")
}

/// Where requests go.
struct Target {
    url: String,
    host: String,
    port: u16,
    /// `Host` header value.
    authority: String,
    /// Path and query (origin-form request target).
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self, AuthError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| AuthError::Credential(format!("the EWS URL {url:?} is invalid: {e}")))?;
        if parsed.scheme() != "https" {
            return Err(AuthError::Credential(format!(
                "NTLM needs https (it binds to the TLS certificate), the EWS URL is {url}"
            )));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| AuthError::Credential(format!("the EWS URL {url} has no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = parsed.port_or_known_default().unwrap_or(443);
        let authority = match parsed.port() {
            Some(port) => format!("{}:{port}", parsed.host_str().unwrap_or(&host)),
            None => parsed.host_str().unwrap_or(&host).to_owned(),
        };
        let mut path = parsed.path().to_owned();
        if let Some(query) = parsed.query() {
            path.push('?');
            path.push_str(query);
        }
        Ok(Target {
            url: url.to_owned(),
            host,
            port,
            authority,
            path,
        })
    }

    fn connection_error(&self, detail: String) -> AuthError {
        AuthError::Connection {
            url: self.url.clone(),
            timed_out: false,
            detail,
        }
    }

    fn rejected(&self, reason: String) -> AuthError {
        AuthError::Rejected {
            url: self.url.clone(),
            scheme: "ntlm",
            reason,
        }
    }
}

/// Every `WWW-Authenticate` value.
fn www_authenticate(headers: &hyper::HeaderMap) -> Vec<String> {
    headers
        .get_all(hyper::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .collect()
}

/// Reads and drops a body so the connection can carry the next request.
async fn drain(response: hyper::Response<Incoming>) {
    let _ = response.into_body().collect().await;
}

/// Sends `request` on `sender`, with the body (`with_body`) or empty (the NEGOTIATE leg, as
/// curl does: the server answers it with 401 whatever it holds).
async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    target: &Target,
    request: &HttpRequest,
    authorization: Option<String>,
    with_body: bool,
) -> Result<hyper::Response<Incoming>, AuthError> {
    let body = if with_body {
        Bytes::from(request.body.clone())
    } else {
        Bytes::new()
    };
    let mut builder = hyper::Request::post(&target.path)
        .header(hyper::header::HOST, &target.authority)
        .header(hyper::header::CONTENT_LENGTH, body.len());
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    if let Some(value) = authorization {
        let mut value = hyper::header::HeaderValue::try_from(value)
            .map_err(|e| AuthError::Credential(format!("bad Authorization header: {e}")))?;
        value.set_sensitive(true);
        builder = builder.header(hyper::header::AUTHORIZATION, value);
    }
    let built = builder
        .body(Full::new(body))
        .map_err(|e| AuthError::Credential(format!("cannot build the request: {e}")))?;
    sender
        .ready()
        .await
        .map_err(|e| target.connection_error(format!("connection closed: {}", error_chain(&e))))?;
    sender
        .send_request(built)
        .await
        .map_err(|e| target.connection_error(format!("sending: {}", error_chain(&e))))
}

/// A response body that gives its connection back to the pool once read to the end, and
/// fails with a timeout at the request's deadline.
struct PooledBody {
    inner: Incoming,
    connection: Option<Connection>,
    pool: Pool,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl PooledBody {
    fn give_back(&mut self) {
        if let Some(connection) = self.connection.take() {
            let mut idle = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE && !connection.sender.is_closed() {
                idle.push(connection);
            }
        }
    }
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.connection = None;
            return Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the response body did not arrive in time",
            ))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.give_back();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) => {
                this.connection = None;
                Poll::Ready(Some(Err(std::io::Error::other(error))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if this.inner.is_end_stream() {
                    this.give_back();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        let clean: String = text.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..clean.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&clean[i..i + 2], 16).unwrap())
            .collect()
    }

    fn to_hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// MS-NLMP §4.2.4.3: the CHALLENGE message of the NTLMv2 example.
    const SPEC_CHALLENGE: &str = "4e544c4d53535000020000000c000c003800000033828ae20123456789abcdef\
        00000000000000002400240044000000060070170000000f53006500720076006500720002000c0044006f00\
        6d00610069006e0001000c0053006500720076006500720000000000";

    /// MS-NLMP §4.2.4.3: the AUTHENTICATE message of the NTLMv2 example.
    const SPEC_AUTHENTICATE: &str =
        "4e544c4d535350000300000018001800 6c00000054005400840000000c000c00\
        48000000080008005400000010001000 5c00000010001000d8000000358288e2\
        0501280a0000000f44006f006d006100 69006e00550073006500720043004f00\
        4d005000550054004500520086c35097 ac9cec102554764a57cccc19aaaaaaaa\
        aaaaaaaa68cd0ab851e51c96aabc927b ebef6a1c010100000000000000000000\
        00000000aaaaaaaaaaaaaaaa00000000 02000c0044006f006d00610069006e00\
        01000c00530065007200760065007200 0000000000000000c5dad2544fc97990\
        94ce1ce90bc9d03e";

    #[test]
    fn ntowfv2_matches_ms_nlmp_4_2_4_1_1() {
        assert_eq!(
            to_hex(&nt_owf_v2("Password", "User", "Domain")),
            "0c868a403bfd7a93a3001ef22ef02e3f"
        );
        // The user name is upper-cased, the domain is not.
        assert_eq!(
            nt_owf_v2("Password", "user", "Domain"),
            nt_owf_v2("Password", "User", "Domain")
        );
        assert_ne!(
            nt_owf_v2("Password", "User", "domain"),
            nt_owf_v2("Password", "User", "Domain")
        );
    }

    #[test]
    fn ntlmv2_responses_and_keys_match_ms_nlmp_4_2_4_2() {
        let challenge = ChallengeMessage::parse(&hex(SPEC_CHALLENGE)).unwrap();
        assert_eq!(challenge.flags, 0xe28a_8233);
        assert_eq!(to_hex(&challenge.server_challenge), "0123456789abcdef");
        assert_eq!(challenge.target_name, "Server");
        let pairs = challenge.av_pairs().unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0].id, av::NB_DOMAIN_NAME);
        assert_eq!(pairs[0].value, utf16le("Domain"));
        assert_eq!(pairs[1].id, av::NB_COMPUTER_NAME);

        let key = nt_owf_v2("Password", "User", "Domain");
        let blob = ntlmv2_blob(0, &[0xaa; 8], &challenge.target_info);
        let response = ntlmv2_response(&key, &challenge.server_challenge, &[0xaa; 8], &blob);
        assert_eq!(
            to_hex(response.nt_proof_str()),
            "68cd0ab851e51c96aabc927bebef6a1c"
        );
        assert_eq!(
            to_hex(&response.lm_response),
            "86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa"
        );
        assert_eq!(
            to_hex(&response.session_base_key),
            "8de40ccadbc14a82f15cb0ad0de95ca3"
        );
        assert_eq!(
            to_hex(&response.nt_response),
            "68cd0ab851e51c96aabc927bebef6a1c01010000000000000000000000000000aaaaaaaaaaaaaaaa00000000\
             02000c0044006f006d00610069006e0001000c005300650072007600650072000000000000000000"
                .replace(' ', "")
        );
        assert_eq!(
            to_hex(&rc4(&response.session_base_key, &[0x55; 16])),
            "c5dad2544fc9799094ce1ce90bc9d03e",
            "EncryptedRandomSessionKey (§4.2.4.2.3)"
        );
    }

    #[test]
    fn authenticate_message_is_byte_for_byte_ms_nlmp_4_2_4_3() {
        let challenge = ChallengeMessage::parse(&hex(SPEC_CHALLENGE)).unwrap();
        let key = nt_owf_v2("Password", "User", "Domain");
        let blob = ntlmv2_blob(0, &[0xaa; 8], &challenge.target_info);
        let response = ntlmv2_response(&key, &challenge.server_challenge, &[0xaa; 8], &blob);
        let message = authenticate_message(&AuthenticateFields {
            flags: 0xe288_8235,
            lm_response: response.lm_response.clone(),
            nt_response: response.nt_response.clone(),
            domain: "Domain".into(),
            user: "User".into(),
            workstation: "COMPUTER".into(),
            encrypted_session_key: rc4(&response.session_base_key, &[0x55; 16]),
            version: [0x05, 0x01, 0x28, 0x0a, 0, 0, 0, 0x0f],
            with_mic: false,
        });
        assert_eq!(to_hex(&message), to_hex(&hex(SPEC_AUTHENTICATE)));
    }

    #[test]
    fn client_authenticate_carries_binding_flags_target_name_and_a_valid_mic() {
        // A Windows-like challenge with a timestamp.
        let mut pairs = vec![
            AvPair {
                id: av::NB_DOMAIN_NAME,
                value: utf16le("CONTOSO"),
            },
            AvPair {
                id: av::TIMESTAMP,
                value: 0x01d9_0000_0000_0000u64.to_le_bytes().to_vec(),
            },
        ];
        let info = encode_av_pairs(&pairs);
        let mut challenge = hex(SPEC_CHALLENGE)[..56].to_vec();
        challenge[40..42].copy_from_slice(&(info.len() as u16).to_le_bytes());
        challenge[42..44].copy_from_slice(&(info.len() as u16).to_le_bytes());
        challenge[44..48].copy_from_slice(&56u32.to_le_bytes());
        challenge[12..16].copy_from_slice(&[0; 4]);
        challenge.extend_from_slice(&info);
        let negotiate = negotiate_message(CLIENT_FLAGS);
        let random = ClientRandom {
            client_challenge: [7; 8],
            exported_session_key: [9; 16],
        };
        let binding = channel_binding_hash(b"tls-server-end-point:abc");
        let user = NtlmUser::parse("CONTOSO\\svc-vmr");
        let out = client_authenticate(
            &user,
            "pw",
            &Handshake {
                negotiate: &negotiate,
                challenge: &challenge,
                binding: Some(binding),
                spn: "HTTP/mail.contoso.com",
                now_filetime: 1,
                random: &random,
            },
        )
        .unwrap();
        let m = &out.message;
        assert!(out.bound);
        let nt = payload_at(m, 20, "nt").unwrap();
        let lm = payload_at(m, 12, "lm").unwrap();
        assert_eq!(lm, &[0u8; 24], "Z(24) LM response with a server timestamp");
        assert_eq!(payload_at(m, 28, "domain").unwrap(), utf16le("CONTOSO"));
        assert_eq!(payload_at(m, 36, "user").unwrap(), utf16le("svc-vmr"));
        // The blob: server time, client challenge, and the client's pairs.
        assert_eq!(&nt[24..32], &0x01d9_0000_0000_0000u64.to_le_bytes());
        assert_eq!(&nt[32..40], &[7; 8]);
        let sent = parse_av_pairs(&nt[44..]).unwrap();
        let get = |id| sent.iter().find(|p| p.id == id).map(|p| p.value.clone());
        assert_eq!(get(av::CHANNEL_BINDINGS), Some(binding.to_vec()));
        assert_eq!(get(av::FLAGS), Some(vec![2, 0, 0, 0]));
        assert_eq!(get(av::TARGET_NAME), Some(utf16le("HTTP/mail.contoso.com")));
        pairs.truncate(1);
        assert_eq!(get(av::NB_DOMAIN_NAME), Some(pairs[0].value.clone()));
        // The proof verifies with the password, and the MIC with the exported key.
        let key = nt_owf_v2("pw", "svc-vmr", "CONTOSO");
        assert_eq!(
            hmac_md5(&key, &[&hex("0123456789abcdef"), &nt[16..]]),
            nt[..16]
        );
        let base = hmac_md5(&key, &[&nt[..16]]);
        let encrypted = payload_at(m, 52, "key").unwrap();
        assert_eq!(rc4(&base, encrypted), [9; 16]);
        let mut zeroed = m.clone();
        zeroed[MIC_OFFSET..MIC_OFFSET + 16].fill(0);
        assert_eq!(
            hmac_md5(&[9; 16], &[&negotiate, &challenge, &zeroed]),
            m[MIC_OFFSET..MIC_OFFSET + 16]
        );
        assert_eq!(
            u32_at(m, 60).unwrap() & flags::NEGOTIATE_KEY_EXCH,
            flags::NEGOTIATE_KEY_EXCH
        );
    }

    #[test]
    fn user_name_forms() {
        assert_eq!(
            NtlmUser::parse("CONTOSO\\svc-vmr"),
            NtlmUser {
                user: "svc-vmr".into(),
                domain: "CONTOSO".into()
            }
        );
        assert_eq!(
            NtlmUser::parse("svc-vmr@contoso.com"),
            NtlmUser {
                user: "svc-vmr@contoso.com".into(),
                domain: String::new()
            }
        );
    }

    #[test]
    fn rc4_matches_the_classic_test_vector() {
        // "Key" / "Plaintext" → bbf316e8d940af0ad3 (Wikipedia, from the original posting).
        assert_eq!(to_hex(&rc4(b"Key", b"Plaintext")), "bbf316e8d940af0ad3");
    }

    #[test]
    fn end_point_hash_follows_the_signature_algorithm() {
        let der = |alg: &'static rcgen::SignatureAlgorithm| {
            let key = rcgen::KeyPair::generate_for(alg).unwrap();
            let params = rcgen::CertificateParams::new(vec!["x.test".to_owned()]).unwrap();
            params.self_signed(&key).unwrap().der().to_vec()
        };
        let p256 = der(&rcgen::PKCS_ECDSA_P256_SHA256);
        let p384 = der(&rcgen::PKCS_ECDSA_P384_SHA384);
        assert_eq!(end_point_hash(&p256), Ok(EndPointHash::Sha256));
        assert_eq!(end_point_hash(&p384), Ok(EndPointHash::Sha384));
        let data = tls_server_end_point(&p256).unwrap();
        assert_eq!(&data[..21], b"tls-server-end-point:");
        assert_eq!(&data[21..], sha2::Sha256::digest(&p256).as_slice());
        assert!(end_point_hash(&der(&rcgen::PKCS_ED25519))
            .unwrap_err()
            .contains("1.3.101.112"));
        // The binding is MD5 over 16 zero bytes, the length and the data.
        let mut flat = vec![0u8; 16];
        flat.extend_from_slice(&(data.len() as u32).to_le_bytes());
        flat.extend_from_slice(&data);
        assert_eq!(
            channel_binding_hash(&data),
            <[u8; 16]>::from(Md5::digest(&flat))
        );
    }

    #[test]
    fn debug_output_holds_no_password() {
        let auth = NtlmAuth::new(
            "CONTOSO\\svc",
            Secret::new("hunter2hunter2"),
            NtlmTls::new(b"", false).unwrap(),
            vmr_core::clock::system(),
        );
        let text = format!("{auth:?}");
        assert!(!text.contains("hunter2hunter2"), "{text}");
    }
}
