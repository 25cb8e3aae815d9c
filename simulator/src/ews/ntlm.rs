//! The server side of NTLMv2 for the simulated EWS endpoint, as IIS does Windows
//! Authentication with Extended Protection.
//!
//! NTLM authenticates the TCP connection: the client sends `Authorization: NTLM <NEGOTIATE>`,
//! IIS answers 401 with `WWW-Authenticate: NTLM <CHALLENGE>` on the same connection, the client
//! sends `Authorization: NTLM <AUTHENTICATE>` with its request, and from then on requests on
//! that connection need no header. Each connection is told apart by a [`ConnectionTag`] that
//! the listener attaches ([`crate::start_with`] serves with
//! `into_make_service_with_connect_info::<ConnectionTag>()`); state of closed connections is
//! dropped.
//!
//! Checked on the AUTHENTICATE message (MS-NLMP §3.2.5.1.2, implemented here independently of
//! the client in `vmr-exchange`): the account (`DOMAIN\user` with the NetBIOS or DNS domain of
//! the account's UPN, or the UPN with an empty domain), the NTProofStr against the account's
//! password (NTLMv1 is refused, as Exchange's `LmCompatibilityLevel` 5 does), the MIC when
//! `MsvAvFlags` says there is one, and the channel binding: `MsvAvChannelBindings` must be MD5
//! of the `gss_channel_bindings_struct` for `tls-server-end-point:` + SHA-256 of the listener's
//! certificate (its ECDSA P-256/SHA-256 signature makes RFC 5929 pick SHA-256). With
//! [`ExtendedProtection::Required`] (the default: what Exchange 2019 CU14+ enforces) a
//! missing or wrong binding is refused; with `Accept` only a wrong one; with `Off` it is not
//! looked at. A refusal is a plain 401 with the usual challenge, as IIS gives no reason; the
//! reason goes to the [`NtlmRecord`] log for tests (`GET /sim/exchange/ntlm`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use hmac::{Hmac, Mac as _};
use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};

use super::ServiceAccount;

type HmacMd5 = Hmac<Md5>;

const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";

const NEGOTIATE_UNICODE: u32 = 0x0000_0001;
const REQUEST_TARGET: u32 = 0x0000_0004;
const NEGOTIATE_SIGN: u32 = 0x0000_0010;
const NEGOTIATE_SEAL: u32 = 0x0000_0020;
const NEGOTIATE_NTLM: u32 = 0x0000_0200;
const NEGOTIATE_ALWAYS_SIGN: u32 = 0x0000_8000;
const TARGET_TYPE_DOMAIN: u32 = 0x0001_0000;
const NEGOTIATE_EXTENDED_SESSIONSECURITY: u32 = 0x0008_0000;
const NEGOTIATE_TARGET_INFO: u32 = 0x0080_0000;
const NEGOTIATE_VERSION: u32 = 0x0200_0000;
const NEGOTIATE_128: u32 = 0x2000_0000;
const NEGOTIATE_KEY_EXCH: u32 = 0x4000_0000;
const NEGOTIATE_56: u32 = 0x8000_0000;

const AV_EOL: u16 = 0;
const AV_NB_COMPUTER_NAME: u16 = 1;
const AV_NB_DOMAIN_NAME: u16 = 2;
const AV_DNS_COMPUTER_NAME: u16 = 3;
const AV_DNS_DOMAIN_NAME: u16 = 4;
const AV_DNS_TREE_NAME: u16 = 5;
const AV_FLAGS: u16 = 6;
const AV_TIMESTAMP: u16 = 7;
const AV_CHANNEL_BINDINGS: u16 = 10;

/// The simulated Exchange server's host name (NetBIOS; the DNS name adds the domain).
pub const COMPUTER_NAME: &str = "EXCH01";

/// IIS's Extended Protection setting (`extendedProtection tokenChecking`) for the EWS
/// virtual directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtendedProtection {
    /// `None`: channel bindings are ignored.
    #[serde(alias = "none")]
    Off,
    /// `Allow`: a binding, if sent, must match; clients that send none get in.
    #[serde(alias = "allow")]
    Accept,
    /// `Require`: every client must send the matching binding.
    #[default]
    #[serde(alias = "require")]
    Required,
}

/// Who a request came in on: a number per accepted TCP connection and the peer address.
/// Attached by the listener as `ConnectInfo<ConnectionTag>`.
#[derive(Debug, Clone)]
pub struct ConnectionTag {
    /// Unique per connection in this process.
    pub id: u64,
    pub peer: SocketAddr,
    /// Held by the connection's service (and its requests): gone when the connection is.
    alive: Arc<()>,
}

static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

impl axum::extract::connect_info::Connected<SocketAddr> for ConnectionTag {
    fn connect_info(peer: SocketAddr) -> Self {
        ConnectionTag {
            id: NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed),
            peer,
            alive: Arc::new(()),
        }
    }
}

/// One NTLM event, for tests and the control API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NtlmRecord {
    /// The [`ConnectionTag::id`].
    pub connection: u64,
    pub step: NtlmStep,
    /// The account, once known.
    pub account: Option<String>,
    /// Why a handshake was refused.
    pub reason: Option<String>,
}

/// What happened on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NtlmStep {
    /// A NEGOTIATE message came in and the CHALLENGE went out (legs 1 and 2).
    Challenged,
    /// An AUTHENTICATE message was accepted (leg 3).
    Authenticated,
    /// An AUTHENTICATE message was refused.
    Refused,
    /// A request without `Authorization` was let in because its connection is authenticated.
    Reused,
}

/// Where a connection stands.
enum ConnectionState {
    Challenged {
        negotiate: Vec<u8>,
        challenge: Vec<u8>,
        server_challenge: [u8; 8],
    },
    Authenticated {
        account: String,
    },
}

struct Tracked {
    state: ConnectionState,
    alive: Weak<()>,
}

struct State {
    extended_protection: ExtendedProtection,
    basic: bool,
    /// The `MsvAvChannelBindings` value clients must send, once the listener's certificate is
    /// known.
    expected_binding: Option<[u8; 16]>,
    connections: HashMap<u64, Tracked>,
    log: Vec<NtlmRecord>,
}

/// What the endpoint should do with a request, as far as NTLM goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NtlmOutcome {
    /// No NTLM header and the connection is not authenticated: other schemes may apply.
    NotNtlm,
    /// Answer 401 with `WWW-Authenticate: NTLM <this, base64>`.
    Challenge(Vec<u8>),
    /// The request runs as this account (its `username`).
    Authenticated(String),
    /// Answer 401 with the plain challenge.
    Refused,
}

/// The NTLM acceptor of one simulated Exchange server.
pub struct NtlmServer {
    state: Mutex<State>,
    close_next: AtomicBool,
}

impl std::fmt::Debug for NtlmServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NtlmServer").finish_non_exhaustive()
    }
}

impl Default for NtlmServer {
    fn default() -> Self {
        NtlmServer {
            state: Mutex::new(State {
                extended_protection: ExtendedProtection::default(),
                basic: true,
                expected_binding: None,
                connections: HashMap::new(),
                log: Vec::new(),
            }),
            close_next: AtomicBool::new(false),
        }
    }
}

/// The Windows authentication switches of the control API (`PUT /sim/exchange/windows-auth`);
/// a missing field keeps its value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowsAuthSettings {
    #[serde(default)]
    pub extended_protection: Option<ExtendedProtection>,
    /// Whether Basic authentication is enabled on the virtual directory.
    #[serde(default)]
    pub basic: Option<bool>,
}

impl NtlmServer {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets Extended Protection.
    pub fn set_extended_protection(&self, setting: ExtendedProtection) {
        self.lock().extended_protection = setting;
    }

    /// The Extended Protection setting.
    pub fn extended_protection(&self) -> ExtendedProtection {
        self.lock().extended_protection
    }

    /// Turns Basic authentication on or off (on by default).
    pub fn set_basic(&self, enabled: bool) {
        self.lock().basic = enabled;
    }

    /// Whether Basic authentication is on.
    pub fn basic(&self) -> bool {
        self.lock().basic
    }

    /// Applies the switches that are set.
    pub fn apply(&self, settings: &WindowsAuthSettings) {
        let mut state = self.lock();
        if let Some(setting) = settings.extended_protection {
            state.extended_protection = setting;
        }
        if let Some(basic) = settings.basic {
            state.basic = basic;
        }
    }

    /// The listener's certificate (DER): channel bindings are checked against it. Its signature
    /// hash must be SHA-256 (as [`crate::tls::TlsIdentity`]'s is).
    pub fn set_certificate(&self, cert_der: &[u8]) {
        let mut data = b"tls-server-end-point:".to_vec();
        data.extend_from_slice(&sha2::Sha256::digest(cert_der));
        self.lock().expected_binding = Some(channel_binding_hash(&data));
    }

    /// Every NTLM event so far.
    pub fn records(&self) -> Vec<NtlmRecord> {
        self.lock().log.clone()
    }

    /// Forgets every connection's authentication, as an application-pool recycle does: the
    /// next request on each gets 401.
    pub fn forget_connections(&self) {
        self.lock().connections.clear();
    }

    /// Makes the next NTLM-authenticated response close its connection (`Connection: close`).
    pub fn close_after_next_response(&self) {
        self.close_next.store(true, Ordering::SeqCst);
    }

    /// Whether this response should close its connection (consumes the switch).
    pub fn take_close(&self) -> bool {
        self.close_next.swap(false, Ordering::SeqCst)
    }

    /// Decides on a request that came in on `connection` with `authorization`.
    pub fn handle(
        &self,
        connection: Option<&ConnectionTag>,
        authorization: Option<&str>,
        accounts: &[ServiceAccount],
        now_filetime: u64,
    ) -> NtlmOutcome {
        let token = authorization.and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            (scheme.eq_ignore_ascii_case("NTLM") || scheme.eq_ignore_ascii_case("Negotiate"))
                .then(|| token.trim())
        });
        let Some(connection) = connection else {
            // Without a connection identity (an in-process router) NTLM cannot work.
            return if token.is_some() {
                NtlmOutcome::Refused
            } else {
                NtlmOutcome::NotNtlm
            };
        };
        let mut state = self.lock();
        state.connections.retain(|_, t| t.alive.strong_count() > 0);
        let Some(token) = token else {
            if authorization.is_some() {
                return NtlmOutcome::NotNtlm;
            }
            return match state.connections.get(&connection.id) {
                Some(Tracked {
                    state: ConnectionState::Authenticated { account },
                    ..
                }) => {
                    let account = account.clone();
                    state.log.push(NtlmRecord {
                        connection: connection.id,
                        step: NtlmStep::Reused,
                        account: Some(account.clone()),
                        reason: None,
                    });
                    NtlmOutcome::Authenticated(account)
                }
                _ => NtlmOutcome::NotNtlm,
            };
        };
        use base64::Engine as _;
        let Ok(message) = base64::engine::general_purpose::STANDARD.decode(token) else {
            return NtlmOutcome::Refused;
        };
        match message_type(&message) {
            Some(1) => {
                let client_flags = u32_at(&message, 12).unwrap_or(0);
                let server_challenge: [u8; 8] = rand::random();
                let domain = dns_domain(accounts);
                let challenge =
                    challenge_message(client_flags, server_challenge, &domain, now_filetime);
                state.connections.insert(
                    connection.id,
                    Tracked {
                        state: ConnectionState::Challenged {
                            negotiate: message,
                            challenge: challenge.clone(),
                            server_challenge,
                        },
                        alive: Arc::downgrade(&connection.alive),
                    },
                );
                state.log.push(NtlmRecord {
                    connection: connection.id,
                    step: NtlmStep::Challenged,
                    account: None,
                    reason: None,
                });
                NtlmOutcome::Challenge(challenge)
            }
            Some(3) => {
                let tracked = state.connections.remove(&connection.id);
                let verdict = match tracked {
                    Some(Tracked {
                        state:
                            ConnectionState::Challenged {
                                negotiate,
                                challenge,
                                server_challenge,
                            },
                        ..
                    }) => verify(
                        &message,
                        &negotiate,
                        &challenge,
                        &server_challenge,
                        accounts,
                        state.extended_protection,
                        state.expected_binding,
                    ),
                    _ => Err((
                        None,
                        "AUTHENTICATE without a CHALLENGE on this connection".to_owned(),
                    )),
                };
                match verdict {
                    Ok(account) => {
                        state.connections.insert(
                            connection.id,
                            Tracked {
                                state: ConnectionState::Authenticated {
                                    account: account.clone(),
                                },
                                alive: Arc::downgrade(&connection.alive),
                            },
                        );
                        state.log.push(NtlmRecord {
                            connection: connection.id,
                            step: NtlmStep::Authenticated,
                            account: Some(account.clone()),
                            reason: None,
                        });
                        NtlmOutcome::Authenticated(account)
                    }
                    Err((account, reason)) => {
                        tracing::info!(connection = connection.id, %reason, "NTLM refused");
                        state.log.push(NtlmRecord {
                            connection: connection.id,
                            step: NtlmStep::Refused,
                            account,
                            reason: Some(reason),
                        });
                        NtlmOutcome::Refused
                    }
                }
            }
            _ => NtlmOutcome::Refused,
        }
    }
}

fn message_type(message: &[u8]) -> Option<u32> {
    if message.get(..8)? != SIGNATURE {
        return None;
    }
    u32_at(message, 8)
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// The bytes a security-buffer field at `at` points to.
fn field(bytes: &[u8], at: usize) -> Option<&[u8]> {
    let len = usize::from(u16_at(bytes, at)?);
    let offset = usize::try_from(u32_at(bytes, at + 4)?).ok()?;
    if len == 0 {
        return Some(&[]);
    }
    bytes.get(offset..offset.checked_add(len)?)
}

fn utf16le(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn from_utf16le(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    let Ok(mut mac) = <HmacMd5 as hmac::Mac>::new_from_slice(key) else {
        return [0; 16];
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn rc4(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut s: Vec<u8> = (0..=255).collect();
    let mut j = 0usize;
    for i in 0..256 {
        j = (j + usize::from(s[i]) + usize::from(key[i % key.len().max(1)])) % 256;
        s.swap(i, j);
    }
    let (mut i, mut j) = (0usize, 0usize);
    let mut out = Vec::with_capacity(data.len());
    for byte in data {
        i = (i + 1) % 256;
        j = (j + usize::from(s[i])) % 256;
        s.swap(i, j);
        out.push(byte ^ s[(usize::from(s[i]) + usize::from(s[j])) % 256]);
    }
    out
}

/// MD5 over the `gss_channel_bindings_struct` with no addresses and `application_data`.
pub fn channel_binding_hash(application_data: &[u8]) -> [u8; 16] {
    let mut flat = vec![0u8; 16];
    flat.extend_from_slice(&(application_data.len() as u32).to_le_bytes());
    flat.extend_from_slice(application_data);
    Md5::digest(&flat).into()
}

/// The organisation's DNS domain, from the first account's UPN (`contoso.com`).
fn dns_domain(accounts: &[ServiceAccount]) -> String {
    accounts
        .iter()
        .find_map(|a| {
            a.username
                .split_once('@')
                .map(|(_, d)| d.to_ascii_lowercase())
        })
        .unwrap_or_else(|| "contoso.com".to_owned())
}

/// The NetBIOS name of a DNS domain (`contoso.com` → `CONTOSO`).
fn netbios(dns_domain: &str) -> String {
    dns_domain
        .split('.')
        .next()
        .unwrap_or(dns_domain)
        .to_ascii_uppercase()
}

/// The CHALLENGE message IIS on Windows Server 2019 sends.
fn challenge_message(
    client_flags: u32,
    server_challenge: [u8; 8],
    domain: &str,
    now: u64,
) -> Vec<u8> {
    let flags = NEGOTIATE_UNICODE
        | REQUEST_TARGET
        | NEGOTIATE_NTLM
        | NEGOTIATE_ALWAYS_SIGN
        | TARGET_TYPE_DOMAIN
        | NEGOTIATE_EXTENDED_SESSIONSECURITY
        | NEGOTIATE_TARGET_INFO
        | NEGOTIATE_VERSION
        | (client_flags
            & (NEGOTIATE_SIGN
                | NEGOTIATE_SEAL
                | NEGOTIATE_128
                | NEGOTIATE_56
                | NEGOTIATE_KEY_EXCH));
    let nb_domain = netbios(domain);
    let computer = format!("{}.{domain}", COMPUTER_NAME.to_ascii_lowercase());
    let mut info = Vec::new();
    let mut pair = |id: u16, value: &[u8]| {
        info.extend_from_slice(&id.to_le_bytes());
        info.extend_from_slice(&(value.len() as u16).to_le_bytes());
        info.extend_from_slice(value);
    };
    pair(AV_NB_DOMAIN_NAME, &utf16le(&nb_domain));
    pair(AV_NB_COMPUTER_NAME, &utf16le(COMPUTER_NAME));
    pair(AV_DNS_DOMAIN_NAME, &utf16le(domain));
    pair(AV_DNS_COMPUTER_NAME, &utf16le(&computer));
    pair(AV_DNS_TREE_NAME, &utf16le(domain));
    pair(AV_TIMESTAMP, &now.to_le_bytes());
    pair(AV_EOL, &[]);
    let name = utf16le(&nb_domain);
    let mut out = Vec::new();
    out.extend_from_slice(SIGNATURE);
    out.extend_from_slice(&2u32.to_le_bytes());
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(&56u32.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&server_challenge);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&(info.len() as u16).to_le_bytes());
    out.extend_from_slice(&(info.len() as u16).to_le_bytes());
    out.extend_from_slice(&((56 + name.len()) as u32).to_le_bytes());
    // Windows 10.0 build 17763 (Server 2019), NTLM revision 15.
    out.extend_from_slice(&[10, 0, 0x63, 0x45, 0, 0, 0, 0x0f]);
    out.extend_from_slice(&name);
    out.extend_from_slice(&info);
    out
}

/// The account `user` in `domain` names, if any.
fn find_account<'a>(
    accounts: &'a [ServiceAccount],
    user: &str,
    domain: &str,
) -> Option<&'a ServiceAccount> {
    let user = user.to_ascii_lowercase();
    let domain = domain.to_ascii_lowercase();
    accounts.iter().find(|account| {
        let name = account.username.to_ascii_lowercase();
        let (short, dns) = name.split_once('@').unwrap_or((&name, ""));
        if domain.is_empty() {
            // A UPN, or a bare name in the server's own domain.
            user == name || user == short
        } else {
            user == short
                && (domain == dns
                    || (!dns.is_empty() && domain == netbios(dns).to_ascii_lowercase()))
        }
    })
}

/// Checks an AUTHENTICATE message; the account's user name, or (the account if known, why not).
fn verify(
    message: &[u8],
    negotiate: &[u8],
    challenge: &[u8],
    server_challenge: &[u8; 8],
    accounts: &[ServiceAccount],
    protection: ExtendedProtection,
    expected_binding: Option<[u8; 16]>,
) -> Result<String, (Option<String>, String)> {
    let bad = |why: &str| (None, format!("malformed AUTHENTICATE message: {why}"));
    let flags = u32_at(message, 60).ok_or_else(|| bad("no flags"))?;
    let nt = field(message, 20).ok_or_else(|| bad("NtChallengeResponse"))?;
    let domain_bytes = field(message, 28).ok_or_else(|| bad("DomainName"))?;
    let user_bytes = field(message, 36).ok_or_else(|| bad("UserName"))?;
    let encrypted_key = field(message, 52).ok_or_else(|| bad("EncryptedRandomSessionKey"))?;
    if flags & NEGOTIATE_UNICODE == 0 {
        return Err(bad("not Unicode"));
    }
    let (user, domain) = (from_utf16le(user_bytes), from_utf16le(domain_bytes));
    let Some(account) = find_account(accounts, &user, &domain) else {
        return Err((None, format!("unknown user {domain}\\{user}")));
    };
    let name = Some(account.username.clone());
    if nt.len() <= 24 {
        return Err((name, "NTLMv1 response refused (NTLMv2 only)".to_owned()));
    }
    let nt_hash = md4::Md4::digest(utf16le(&account.password));
    let response_key = hmac_md5(
        &nt_hash,
        &[&utf16le(&format!("{}{domain}", user.to_uppercase()))],
    );
    let (proof, blob) = nt.split_at(16);
    if hmac_md5(&response_key, &[server_challenge, blob]) != proof {
        return Err((
            name,
            "wrong password (NTProofStr does not verify)".to_owned(),
        ));
    }
    if blob.len() < 28 || blob[0] != 1 || blob[1] != 1 {
        return Err((name, "not an NTLMv2 response blob".to_owned()));
    }
    // The client's target info, up to MsvAvEOL.
    let mut pairs: HashMap<u16, &[u8]> = HashMap::new();
    let mut at = 28;
    loop {
        let (Some(id), Some(len)) = (u16_at(blob, at), u16_at(blob, at + 2)) else {
            return Err((name, "target info without MsvAvEOL".to_owned()));
        };
        if id == AV_EOL {
            break;
        }
        let Some(value) = blob.get(at + 4..at + 4 + usize::from(len)) else {
            return Err((name, "target info overruns the response".to_owned()));
        };
        pairs.insert(id, value);
        at += 4 + usize::from(len);
    }
    // MIC, when the client says it sent one.
    let av_flags = pairs.get(&AV_FLAGS).and_then(|v| u32_at(v, 0)).unwrap_or(0);
    if av_flags & 0x2 != 0 {
        let base = hmac_md5(&response_key, &[proof]);
        let exported: Vec<u8> = if flags & NEGOTIATE_KEY_EXCH != 0 && encrypted_key.len() == 16 {
            rc4(&base, encrypted_key)
        } else {
            base.to_vec()
        };
        let Some(mic) = message.get(72..88) else {
            return Err((
                name,
                "MsvAvFlags announce a MIC the message lacks".to_owned(),
            ));
        };
        let mut zeroed = message.to_vec();
        zeroed[72..88].fill(0);
        if hmac_md5(&exported, &[negotiate, challenge, &zeroed]) != mic {
            return Err((name, "the MIC does not verify".to_owned()));
        }
    }
    // Channel binding.
    let sent = pairs
        .get(&AV_CHANNEL_BINDINGS)
        .copied()
        .filter(|v| v.iter().any(|b| *b != 0));
    match (protection, sent, expected_binding) {
        (ExtendedProtection::Off, _, _) | (_, _, None) => {}
        (ExtendedProtection::Required, None, Some(_)) => {
            return Err((
                name,
                "no channel binding token (Extended Protection is Required)".to_owned(),
            ))
        }
        (ExtendedProtection::Accept, None, Some(_)) => {}
        (_, Some(sent), Some(expected)) => {
            if sent != expected {
                return Err((
                    name,
                    "the channel binding token does not match this server's certificate".to_owned(),
                ));
            }
        }
    }
    Ok(account.username.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> ServiceAccount {
        ServiceAccount {
            username: "svc-vmr@contoso.com".into(),
            password: "Simulated-Passw0rd".into(),
            mailbox: None,
            impersonate: vec![],
            full_access: vec![],
        }
    }

    #[test]
    fn finds_accounts_by_every_user_name_form() {
        let accounts = [account()];
        assert!(find_account(&accounts, "svc-vmr", "CONTOSO").is_some());
        assert!(find_account(&accounts, "SVC-VMR", "contoso.com").is_some());
        assert!(find_account(&accounts, "svc-vmr@contoso.com", "").is_some());
        assert!(find_account(&accounts, "svc-vmr", "").is_some());
        assert!(find_account(&accounts, "svc-vmr", "FABRIKAM").is_none());
        assert!(find_account(&accounts, "alice", "CONTOSO").is_none());
    }

    #[test]
    fn challenge_is_a_windows_style_type_2() {
        let challenge = challenge_message(0xe008_8217, [1; 8], "contoso.com", 42);
        assert_eq!(message_type(&challenge), Some(2));
        assert_eq!(from_utf16le(field(&challenge, 12).unwrap()), "CONTOSO");
        let flags = u32_at(&challenge, 20).unwrap();
        assert_ne!(flags & NEGOTIATE_TARGET_INFO, 0);
        assert_ne!(
            flags & NEGOTIATE_KEY_EXCH,
            0,
            "echoes the client's KEY_EXCH"
        );
        assert_eq!(&challenge[24..32], &[1; 8]);
        let info = field(&challenge, 40).unwrap();
        let timestamp = 42u64.to_le_bytes();
        assert!(info.windows(8).any(|w| w == timestamp));
        assert_eq!(&info[info.len() - 4..], &[0, 0, 0, 0]);
    }

    #[test]
    fn rc4_and_ntowfv2_match_ms_nlmp_4_2_4() {
        let key = hmac_md5(
            &md4::Md4::digest(utf16le("Password")),
            &[&utf16le("USERDomain")],
        );
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "0c868a403bfd7a93a3001ef22ef02e3f");
        let base = [
            0x8d, 0xe4, 0x0c, 0xca, 0xdb, 0xc1, 0x4a, 0x82, 0xf1, 0x5c, 0xb0, 0xad, 0x0d, 0xe9,
            0x5c, 0xa3,
        ];
        let hex: String = rc4(&base, &[0x55; 16])
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, "c5dad2544fc9799094ce1ce90bc9d03e");
    }

    #[test]
    fn extended_protection_reads_iis_and_exchange_spellings() {
        for (text, want) in [
            ("\"required\"", ExtendedProtection::Required),
            ("\"require\"", ExtendedProtection::Required),
            ("\"accept\"", ExtendedProtection::Accept),
            ("\"allow\"", ExtendedProtection::Accept),
            ("\"off\"", ExtendedProtection::Off),
            ("\"none\"", ExtendedProtection::Off),
        ] {
            assert_eq!(
                serde_json::from_str::<ExtendedProtection>(text).unwrap(),
                want
            );
        }
    }
}
