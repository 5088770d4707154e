//! The legacy ClientHello: when rustls and the gateway cannot agree on a version or a cipher
//! suite, the probe sends a ClientHello of its own offering what Windows SChannel offers (TLS
//! 1.0 to 1.2; ECDHE, DHE and static RSA key exchange; GCM, CBC, 3DES and RC4 suites), reads
//! the server's first flight (ServerHello, Certificate, ServerKeyExchange, CertificateRequest,
//! ServerHelloDone, all in clear before TLS 1.3) and stops there: the certificate can be judged
//! as usual, and the negotiated version and suite reported, without implementing the ciphers.
//!
//! In TLS 1.2 with (EC)DHE the ServerKeyExchange is signed with the certificate's key over
//! both randoms, so the server's possession of the key is verified even here. Static RSA key
//! exchange and TLS 1.0/1.1 (whose RSA signatures are MD5+SHA-1 without a DigestInfo, which
//! ring cannot verify) leave it unevaluated.
//!
//! The server's bytes are hostile input. [`FlightParser`] is sans-IO and bounded: records of at
//! most [`MAX_RECORD`] bytes, handshake messages of at most [`MAX_HANDSHAKE_MESSAGE`] (the
//! length is checked before anything is buffered), at most [`MAX_FLIGHT_BYTES`] in all, the
//! chain kept within the TLS stage's bounds; every length is checked against what is left
//! before it is used, so no input makes it panic. [`probe`] runs it within a timeout.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use rustls::SignatureScheme;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::tls::{self, Captured};

/// The largest record accepted: 2^14 bytes of plaintext plus the 2048 bytes of expansion TLS
/// allows a record (RFC 5246 6.2.3).
pub const MAX_RECORD: usize = 16384 + 2048;
/// The largest handshake message accepted, as rustls accepts (64 KiB).
pub const MAX_HANDSHAKE_MESSAGE: usize = 64 * 1024;
/// The most bytes read from the server before its ServerHelloDone.
pub const MAX_FLIGHT_BYTES: usize = 256 * 1024;

/// Key exchange of a suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyExchange {
    /// Ephemeral elliptic-curve Diffie-Hellman.
    Ecdhe,
    /// Ephemeral finite-field Diffie-Hellman.
    Dhe,
    /// Static RSA (no forward secrecy).
    Rsa,
}

/// A cipher suite the legacy ClientHello offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suite {
    /// The IANA code point.
    pub id: u16,
    /// The IANA name.
    pub name: &'static str,
    /// Its key exchange.
    pub kex: KeyExchange,
    /// What makes it legacy beyond its key exchange (`"CBC"`, `"3DES"`, `"RC4"`), if anything.
    pub cipher_weakness: Option<&'static str>,
}

const fn suite(
    id: u16,
    name: &'static str,
    kex: KeyExchange,
    cipher_weakness: Option<&'static str>,
) -> Suite {
    Suite {
        id,
        name,
        kex,
        cipher_weakness,
    }
}

/// What Windows SChannel offers (Windows 10 and Server 2016 onwards, then the suites older
/// Windows offered), in its order.
pub const SUITES: &[Suite] = {
    use KeyExchange::{Dhe, Ecdhe, Rsa};
    &[
        suite(
            0xc02c,
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            Ecdhe,
            None,
        ),
        suite(
            0xc02b,
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            Ecdhe,
            None,
        ),
        suite(0xc030, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", Ecdhe, None),
        suite(0xc02f, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", Ecdhe, None),
        suite(0x009f, "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384", Dhe, None),
        suite(0x009e, "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", Dhe, None),
        suite(
            0xc024,
            "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
            Ecdhe,
            Some("CBC"),
        ),
        suite(
            0xc023,
            "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
            Ecdhe,
            Some("CBC"),
        ),
        suite(
            0xc028,
            "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
            Ecdhe,
            Some("CBC"),
        ),
        suite(
            0xc027,
            "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
            Ecdhe,
            Some("CBC"),
        ),
        suite(
            0xc00a,
            "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
            Ecdhe,
            Some("CBC"),
        ),
        suite(
            0xc009,
            "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
            Ecdhe,
            Some("CBC"),
        ),
        suite(
            0xc014,
            "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
            Ecdhe,
            Some("CBC"),
        ),
        suite(
            0xc013,
            "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
            Ecdhe,
            Some("CBC"),
        ),
        suite(0x0039, "TLS_DHE_RSA_WITH_AES_256_CBC_SHA", Dhe, Some("CBC")),
        suite(0x0033, "TLS_DHE_RSA_WITH_AES_128_CBC_SHA", Dhe, Some("CBC")),
        suite(0x009d, "TLS_RSA_WITH_AES_256_GCM_SHA384", Rsa, None),
        suite(0x009c, "TLS_RSA_WITH_AES_128_GCM_SHA256", Rsa, None),
        suite(0x003d, "TLS_RSA_WITH_AES_256_CBC_SHA256", Rsa, Some("CBC")),
        suite(0x003c, "TLS_RSA_WITH_AES_128_CBC_SHA256", Rsa, Some("CBC")),
        suite(0x0035, "TLS_RSA_WITH_AES_256_CBC_SHA", Rsa, Some("CBC")),
        suite(0x002f, "TLS_RSA_WITH_AES_128_CBC_SHA", Rsa, Some("CBC")),
        suite(0x000a, "TLS_RSA_WITH_3DES_EDE_CBC_SHA", Rsa, Some("3DES")),
        suite(0x0005, "TLS_RSA_WITH_RC4_128_SHA", Rsa, Some("RC4")),
        suite(0x0004, "TLS_RSA_WITH_RC4_128_MD5", Rsa, Some("RC4")),
    ]
};

/// The suite with this code point, if the legacy ClientHello offers it.
pub fn find_suite(id: u16) -> Option<&'static Suite> {
    SUITES.iter().find(|s| s.id == id)
}

/// `TLSv1.0`, `TLSv1.2`, `SSLv3`, or the number.
pub fn version_name(version: u16) -> String {
    match version {
        0x0300 => "SSLv3".into(),
        0x0301 => "TLSv1.0".into(),
        0x0302 => "TLSv1.1".into(),
        0x0303 => "TLSv1.2".into(),
        0x0304 => "TLSv1.3".into(),
        other => format!("0x{other:04x}"),
    }
}

/// What makes a negotiated version and suite legacy, in words: such as `["TLS 1.0", "a CBC
/// cipher", "static RSA key exchange (no forward secrecy)"]`.
pub fn weaknesses(version: u16, suite: &Suite) -> Vec<String> {
    let mut out = Vec::new();
    if version < 0x0303 {
        out.push(match version {
            0x0300 => "SSL 3.0".to_string(),
            0x0301 => "TLS 1.0".to_string(),
            0x0302 => "TLS 1.1".to_string(),
            other => version_name(other),
        });
    }
    match suite.kex {
        KeyExchange::Rsa => out.push("static RSA key exchange (no forward secrecy)".into()),
        KeyExchange::Dhe => out.push("DHE key exchange".into()),
        KeyExchange::Ecdhe => {}
    }
    if let Some(w) = suite.cipher_weakness {
        out.push(format!("a {w} cipher"));
    }
    if out.is_empty() {
        // An ECDHE-ECDSA or ECDHE-RSA AEAD suite in TLS 1.2: rustls offers these, so a server
        // that chose one here refused rustls for another reason (an extension, a group).
        out.push("a ClientHello shaped as SChannel's".into());
    }
    out
}

/// The signature algorithms offered in TLS 1.2, as SChannel offers them.
const SIGNATURE_SCHEMES: [u16; 11] = [
    0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601, 0x0403, 0x0503, 0x0603, 0x0201, 0x0203,
];

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u24(out: &mut Vec<u8>, v: usize) {
    let v = u32::try_from(v).unwrap_or(u32::MAX).min(0x00ff_ffff);
    out.extend_from_slice(&v.to_be_bytes()[1..]);
}

fn extension(out: &mut Vec<u8>, kind: u16, body: &[u8]) {
    put_u16(out, kind);
    put_u16(out, u16::try_from(body.len()).unwrap_or(u16::MAX));
    out.extend_from_slice(body);
}

/// The ClientHello record: TLS 1.2 as the highest version (record version TLS 1.0, as
/// SChannel writes it), the [`SUITES`], no compression, SNI for `server_name` when it is a DNS
/// name, the groups x25519, P-256 and P-384, uncompressed points, the signature algorithms,
/// extended master secret and secure renegotiation.
pub fn client_hello(server_name: Option<&str>, random: &[u8; 32]) -> Vec<u8> {
    let mut body = Vec::with_capacity(256);
    put_u16(&mut body, 0x0303);
    body.extend_from_slice(random);
    body.push(0); // no session id: nothing to resume
    put_u16(&mut body, (SUITES.len() * 2) as u16);
    for s in SUITES {
        put_u16(&mut body, s.id);
    }
    body.extend_from_slice(&[1, 0]); // compression: null only

    let mut ext = Vec::with_capacity(128);
    if let Some(name) = server_name.filter(|n| !n.is_empty() && n.len() < 256) {
        let mut sni = Vec::new();
        put_u16(&mut sni, (name.len() + 3) as u16);
        sni.push(0); // host_name
        put_u16(&mut sni, name.len() as u16);
        sni.extend_from_slice(name.as_bytes());
        extension(&mut ext, 0x0000, &sni);
    }
    extension(
        &mut ext,
        0x000a,
        &[0, 6, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18],
    );
    extension(&mut ext, 0x000b, &[1, 0]);
    let mut sigs = Vec::new();
    put_u16(&mut sigs, (SIGNATURE_SCHEMES.len() * 2) as u16);
    for s in SIGNATURE_SCHEMES {
        put_u16(&mut sigs, s);
    }
    extension(&mut ext, 0x000d, &sigs);
    extension(&mut ext, 0x0017, &[]);
    extension(&mut ext, 0xff01, &[0]);
    put_u16(&mut body, ext.len() as u16);
    body.extend_from_slice(&ext);

    let mut handshake = Vec::with_capacity(body.len() + 4);
    handshake.push(1); // client_hello
    put_u24(&mut handshake, body.len());
    handshake.extend_from_slice(&body);

    let mut record = Vec::with_capacity(handshake.len() + 5);
    record.extend_from_slice(&[22, 3, 1]);
    put_u16(&mut record, handshake.len() as u16);
    record.extend_from_slice(&handshake);
    record
}

/// Why the legacy ClientHello did not read a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloError {
    /// The server sent a fatal alert (its description number).
    Alert(u8),
    /// The server closed the connection.
    Closed,
    /// The server reset the connection.
    Reset,
    /// No complete first flight within the time left (milliseconds).
    Timeout(u128),
    /// A new connection for the ClientHello failed.
    Connect(String),
    /// Reading or writing failed otherwise.
    Io(String),
    /// The answer is not TLS.
    NotTls,
    /// A record longer than TLS allows.
    RecordTooLarge(usize),
    /// A handshake message longer than the probe accepts.
    MessageTooLarge {
        /// The message's name (`Certificate`).
        message: &'static str,
        /// Its declared length.
        len: usize,
    },
    /// More than [`MAX_FLIGHT_BYTES`] before the ServerHelloDone.
    TooMuch,
    /// The server's messages do not parse, or break the protocol.
    Malformed(String),
    /// The first flight ended without a certificate.
    NoCertificate,
}

impl fmt::Display for HelloError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HelloError::Alert(n) => write!(f, "the server answered with the TLS alert {}", tls::alert_name_of(*n)),
            HelloError::Closed => f.write_str("the server closed the connection without answering"),
            HelloError::Reset => f.write_str("the server reset the connection"),
            HelloError::Timeout(ms) => write!(f, "the server sent no complete answer within {ms} ms"),
            HelloError::Connect(e) => write!(f, "a new connection for it failed ({e})"),
            HelloError::Io(e) => write!(f, "the connection failed ({e})"),
            HelloError::NotTls => f.write_str("the answer is not TLS"),
            HelloError::RecordTooLarge(len) => write!(f, "the server sent a TLS record of {len} bytes, larger than the {MAX_RECORD} bytes TLS allows"),
            HelloError::MessageTooLarge { message, len } => write!(f, "the server's {message} message is {len} bytes, larger than the {MAX_HANDSHAKE_MESSAGE} bytes the probe accepts (a certificate chain far too long?): the probe does not follow it"),
            HelloError::TooMuch => write!(f, "the server sent more than {MAX_FLIGHT_BYTES} bytes without finishing its first flight"),
            HelloError::Malformed(why) => write!(f, "the server's answer is malformed: {why}"),
            HelloError::NoCertificate => f.write_str("the server sent no certificate"),
        }
    }
}

impl std::error::Error for HelloError {}

/// What the server's first flight said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFlight {
    /// The version the server chose (`0x0301` is TLS 1.0).
    pub version: u16,
    /// The suite the server chose (one of [`SUITES`]).
    pub suite: &'static Suite,
    /// The chain and the client-certificate request, within the TLS stage's bounds, and
    /// whether the ServerKeyExchange signature verified with the leaf's key (TLS 1.2 with
    /// (EC)DHE only; `None` otherwise).
    pub captured: Captured,
}

/// A bounded reader of a byte slice: every read checks what is left.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], HelloError> {
        if n > self.bytes.len() {
            return Err(HelloError::Malformed(format!(
                "{what} is cut short ({n} bytes announced, {} left)",
                self.bytes.len()
            )));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    fn u8(&mut self, what: &str) -> Result<u8, HelloError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, HelloError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self, what: &str) -> Result<usize, HelloError> {
        let b = self.take(3, what)?;
        Ok((usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }
    fn vec8(&mut self, what: &str) -> Result<&'a [u8], HelloError> {
        let n = usize::from(self.u8(what)?);
        self.take(n, what)
    }
    fn vec16(&mut self, what: &str) -> Result<&'a [u8], HelloError> {
        let n = usize::from(self.u16(what)?);
        self.take(n, what)
    }
    fn vec24(&mut self, what: &str) -> Result<&'a [u8], HelloError> {
        let n = self.u24(what)?;
        self.take(n, what)
    }
    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }
}

fn message_name(kind: u8) -> &'static str {
    match kind {
        0 => "HelloRequest",
        2 => "ServerHello",
        4 => "NewSessionTicket",
        11 => "Certificate",
        12 => "ServerKeyExchange",
        13 => "CertificateRequest",
        14 => "ServerHelloDone",
        22 => "CertificateStatus",
        _ => "handshake",
    }
}

/// Reads the server's first flight from bytes as they arrive.
#[derive(Debug)]
pub struct FlightParser {
    client_random: [u8; 32],
    records: Vec<u8>,
    handshake: Vec<u8>,
    read: usize,
    hello: Option<(u16, &'static Suite, [u8; 32])>,
    captured: Option<Captured>,
    key_exchange: Option<Vec<u8>>,
    cert_request: Option<Vec<Vec<u8>>>,
    done: bool,
}

impl FlightParser {
    /// A parser for the answer to a ClientHello made with `client_random`.
    pub fn new(client_random: [u8; 32]) -> Self {
        Self {
            client_random,
            records: Vec::new(),
            handshake: Vec::new(),
            read: 0,
            hello: None,
            captured: None,
            key_exchange: None,
            cert_request: None,
            done: false,
        }
    }

    /// Takes the next bytes from the server. `Ok(None)`: more are needed; `Ok(Some(..))`: the
    /// flight is complete (later calls return an error); an error is final.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Option<ServerFlight>, HelloError> {
        if self.done {
            return Err(HelloError::Malformed(
                "bytes after the ServerHelloDone".into(),
            ));
        }
        self.read = self.read.saturating_add(bytes.len());
        if self.read > MAX_FLIGHT_BYTES {
            return Err(HelloError::TooMuch);
        }
        self.records.extend_from_slice(bytes);
        while self.records.len() >= 5 {
            let kind = self.records[0];
            let major = self.records[1];
            let len = usize::from(u16::from_be_bytes([self.records[3], self.records[4]]));
            if !(20..=23).contains(&kind) || major != 3 {
                return Err(HelloError::NotTls);
            }
            if len > MAX_RECORD {
                return Err(HelloError::RecordTooLarge(len));
            }
            if self.records.len() < 5 + len {
                break;
            }
            let body: Vec<u8> = self.records.drain(..5 + len).skip(5).collect();
            match kind {
                21 => {
                    if body.len() < 2 {
                        return Err(HelloError::Malformed("an alert record is cut short".into()));
                    }
                    // A warning (such as unrecognized_name) is not the end of the handshake.
                    if body[0] == 1 && body[1] != 0 {
                        continue;
                    }
                    return Err(match body[1] {
                        0 => HelloError::Closed,
                        n => HelloError::Alert(n),
                    });
                }
                22 => {
                    if body.is_empty() {
                        return Err(HelloError::Malformed("an empty handshake record".into()));
                    }
                    self.handshake.extend_from_slice(&body);
                    if let Some(flight) = self.messages()? {
                        return Ok(Some(flight));
                    }
                }
                20 => {
                    return Err(HelloError::Malformed(
                        "the server switched to encryption before sending its certificate".into(),
                    ))
                }
                _ => {
                    return Err(HelloError::Malformed(
                        "application data before the handshake".into(),
                    ))
                }
            }
        }
        Ok(None)
    }

    /// Handles every complete handshake message buffered.
    fn messages(&mut self) -> Result<Option<ServerFlight>, HelloError> {
        while self.handshake.len() >= 4 {
            let kind = self.handshake[0];
            let len = (usize::from(self.handshake[1]) << 16)
                | (usize::from(self.handshake[2]) << 8)
                | usize::from(self.handshake[3]);
            if len > MAX_HANDSHAKE_MESSAGE {
                return Err(HelloError::MessageTooLarge {
                    message: message_name(kind),
                    len,
                });
            }
            if self.handshake.len() < 4 + len {
                break;
            }
            let body: Vec<u8> = self.handshake.drain(..4 + len).skip(4).collect();
            if let Some(flight) = self.message(kind, &body)? {
                return Ok(Some(flight));
            }
        }
        Ok(None)
    }

    fn message(&mut self, kind: u8, body: &[u8]) -> Result<Option<ServerFlight>, HelloError> {
        let name = message_name(kind);
        if kind != 2 && kind != 0 && self.hello.is_none() {
            return Err(HelloError::Malformed(format!(
                "a {name} message before the ServerHello"
            )));
        }
        match kind {
            0 => {} // HelloRequest: ignored during a handshake
            2 => self.server_hello(body)?,
            11 => self.certificate(body)?,
            12 => {
                if self.key_exchange.is_some() {
                    return Err(HelloError::Malformed(
                        "two ServerKeyExchange messages".into(),
                    ));
                }
                self.key_exchange = Some(body.to_vec());
            }
            13 => self.certificate_request(body)?,
            14 => return self.finish().map(Some),
            22 => {} // CertificateStatus (OCSP stapling): not judged
            other => {
                return Err(HelloError::Malformed(format!(
                    "unexpected handshake message type {other} in the server's first flight"
                )))
            }
        }
        Ok(None)
    }

    fn server_hello(&mut self, body: &[u8]) -> Result<(), HelloError> {
        if self.hello.is_some() {
            return Err(HelloError::Malformed("two ServerHello messages".into()));
        }
        let mut r = Reader::new(body);
        let version = r.u16("the ServerHello version")?;
        let random: [u8; 32] = r
            .take(32, "the ServerHello random")?
            .try_into()
            .map_err(|_| HelloError::Malformed("the ServerHello random".into()))?;
        let session = r.vec8("the ServerHello session id")?;
        if session.len() > 32 {
            return Err(HelloError::Malformed(format!(
                "a session id of {} bytes (32 at most)",
                session.len()
            )));
        }
        let suite_id = r.u16("the ServerHello cipher suite")?;
        let compression = r.u8("the ServerHello compression method")?;
        if !r.is_empty() {
            let extensions = r.vec16("the ServerHello extensions")?;
            let mut e = Reader::new(extensions);
            while !e.is_empty() {
                e.u16("an extension type")?;
                e.vec16("an extension")?;
            }
        }
        if !r.is_empty() {
            return Err(HelloError::Malformed(
                "bytes after the ServerHello extensions".into(),
            ));
        }
        if !(0x0300..=0x0303).contains(&version) {
            return Err(HelloError::Malformed(format!(
                "the server chose the version {}, which the ClientHello did not offer",
                version_name(version)
            )));
        }
        let suite = find_suite(suite_id).ok_or_else(|| {
            HelloError::Malformed(format!(
                "the server chose the cipher suite 0x{suite_id:04x}, which the ClientHello did not offer"
            ))
        })?;
        if compression != 0 {
            return Err(HelloError::Malformed(format!(
                "the server chose compression method {compression}, which the ClientHello did not offer"
            )));
        }
        self.hello = Some((version, suite, random));
        Ok(())
    }

    fn certificate(&mut self, body: &[u8]) -> Result<(), HelloError> {
        if self.captured.is_some() {
            return Err(HelloError::Malformed("two Certificate messages".into()));
        }
        let mut r = Reader::new(body);
        let list = r.vec24("the certificate list")?;
        if !r.is_empty() {
            return Err(HelloError::Malformed(
                "bytes after the certificate list".into(),
            ));
        }
        let mut l = Reader::new(list);
        let mut certs = Vec::new();
        while !l.is_empty() {
            let cert = l.vec24("a certificate")?;
            if cert.is_empty() {
                return Err(HelloError::Malformed("an empty certificate".into()));
            }
            certs.push(cert);
        }
        let mut captured = Captured::default();
        tls::keep_chain(&mut captured, certs.into_iter());
        self.captured = Some(captured);
        Ok(())
    }

    fn certificate_request(&mut self, body: &[u8]) -> Result<(), HelloError> {
        let Some((version, _, _)) = self.hello else {
            return Err(HelloError::Malformed(
                "a CertificateRequest before the ServerHello".into(),
            ));
        };
        let mut r = Reader::new(body);
        r.vec8("the certificate types")?;
        if version >= 0x0303 {
            r.vec16("the signature algorithms")?;
        }
        let names = r.vec16("the certificate authorities")?;
        let mut n = Reader::new(names);
        let mut cas = Vec::new();
        while !n.is_empty() {
            let dn = n.vec16("a distinguished name")?;
            if cas.len() < tls::MAX_ACCEPTABLE_CAS {
                cas.push(dn.to_vec());
            }
        }
        self.cert_request = Some(cas);
        Ok(())
    }

    fn finish(&mut self) -> Result<ServerFlight, HelloError> {
        self.done = true;
        let Some((version, suite, server_random)) = self.hello else {
            return Err(HelloError::Malformed(
                "a ServerHelloDone before the ServerHello".into(),
            ));
        };
        let mut captured = self.captured.take().ok_or(HelloError::NoCertificate)?;
        let Some(leaf) = captured.chain.first() else {
            return Err(HelloError::NoCertificate);
        };
        captured.signature_valid = match (&self.key_exchange, suite.kex) {
            (Some(ske), KeyExchange::Ecdhe | KeyExchange::Dhe) if version == 0x0303 => {
                verify_key_exchange(ske, suite.kex, &self.client_random, &server_random, leaf)?
            }
            (None, KeyExchange::Ecdhe | KeyExchange::Dhe) => {
                return Err(HelloError::Malformed(format!(
                    "no ServerKeyExchange for {}, whose key exchange needs one",
                    suite.name
                )))
            }
            _ => None,
        };
        captured.client_cert_request =
            self.cert_request
                .take()
                .map(|acceptable_cas| tls::ClientCertRequest {
                    acceptable_cas,
                    presented: false,
                });
        Ok(ServerFlight {
            version,
            suite,
            captured,
        })
    }
}

/// Verifies a TLS 1.2 ServerKeyExchange signature (over the client random, the server random
/// and the key exchange parameters) with the leaf's key.
fn verify_key_exchange(
    ske: &[u8],
    kex: KeyExchange,
    client_random: &[u8; 32],
    server_random: &[u8; 32],
    leaf: &[u8],
) -> Result<Option<bool>, HelloError> {
    let mut r = Reader::new(ske);
    match kex {
        KeyExchange::Ecdhe => {
            let curve_type = r.u8("the ECDH curve type")?;
            if curve_type != 3 {
                return Err(HelloError::Malformed(format!(
                    "ECDH curve type {curve_type} (only named curves are offered)"
                )));
            }
            r.u16("the ECDH curve")?;
            r.vec8("the ECDH public point")?;
        }
        KeyExchange::Dhe => {
            r.vec16("the DH prime")?;
            r.vec16("the DH generator")?;
            r.vec16("the DH public value")?;
        }
        KeyExchange::Rsa => return Ok(None),
    }
    let params_len = ske.len() - r.bytes.len();
    let scheme = SignatureScheme::from(r.u16("the signature algorithm")?);
    let signature = r.vec16("the signature")?;
    if !r.rest().is_empty() {
        return Err(HelloError::Malformed(
            "bytes after the ServerKeyExchange signature".into(),
        ));
    }
    let mut signed = Vec::with_capacity(64 + params_len);
    signed.extend_from_slice(client_random);
    signed.extend_from_slice(server_random);
    signed.extend_from_slice(&ske[..params_len]);
    Ok(tls::verify_legacy(&signed, leaf, scheme, signature))
}

/// A warning-level close_notify, sent before the probe hangs up.
const CLOSE_NOTIFY: [u8; 7] = [21, 3, 1, 0, 2, 1, 0];

fn io_error(e: &std::io::Error) -> HelloError {
    match e.kind() {
        std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::ConnectionAborted
        | std::io::ErrorKind::BrokenPipe => HelloError::Reset,
        std::io::ErrorKind::UnexpectedEof => HelloError::Closed,
        _ => HelloError::Io(e.to_string()),
    }
}

/// Connects to `addr`, sends the legacy ClientHello (SNI for `server_name` when given) and
/// reads the server's first flight, all within `timeout`.
pub async fn probe(
    addr: SocketAddr,
    server_name: Option<&str>,
    timeout: Duration,
) -> Result<ServerFlight, HelloError> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| HelloError::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let mut random = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
            .map_err(|_| HelloError::Io("no random bytes from the operating system".into()))?;
        stream
            .write_all(&client_hello(server_name, &random))
            .await
            .map_err(|e| io_error(&e))?;
        let mut parser = FlightParser::new(random);
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = stream.read(&mut buf).await.map_err(|e| io_error(&e))?;
            if n == 0 {
                return Err(HelloError::Closed);
            }
            if let Some(flight) = parser.push(&buf[..n])? {
                let _ = stream.write_all(&CLOSE_NOTIFY).await;
                let _ = stream.shutdown().await;
                return Ok(flight);
            }
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(outcome) => outcome,
        Err(_) => Err(HelloError::Timeout(timeout.as_millis())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(kind: u8, version: u16, body: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        put_u16(&mut out, version);
        put_u16(&mut out, body.len() as u16);
        out.extend_from_slice(body);
        out
    }

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        put_u24(&mut out, body.len());
        out.extend_from_slice(body);
        out
    }

    fn server_hello(version: u16, suite: u16) -> Vec<u8> {
        let mut b = Vec::new();
        put_u16(&mut b, version);
        b.extend_from_slice(&[7u8; 32]);
        b.push(0);
        put_u16(&mut b, suite);
        b.push(0);
        message(2, &b)
    }

    fn certificate(certs: &[&[u8]]) -> Vec<u8> {
        let mut list = Vec::new();
        for c in certs {
            put_u24(&mut list, c.len());
            list.extend_from_slice(c);
        }
        let mut b = Vec::new();
        put_u24(&mut b, list.len());
        b.extend_from_slice(&list);
        message(11, &b)
    }

    fn cert_request(version: u16, names: &[&[u8]]) -> Vec<u8> {
        let mut b = vec![1, 1]; // rsa_sign
        if version >= 0x0303 {
            b.extend_from_slice(&[0, 2, 4, 1]);
        }
        let mut list = Vec::new();
        for n in names {
            put_u16(&mut list, n.len() as u16);
            list.extend_from_slice(n);
        }
        put_u16(&mut b, list.len() as u16);
        b.extend_from_slice(&list);
        message(13, &b)
    }

    fn flight_tls10_rsa() -> Vec<u8> {
        let mut hs = server_hello(0x0301, 0x002f);
        hs.extend(certificate(&[b"leaf-der", b"intermediate-der"]));
        hs.extend(cert_request(0x0301, &[b"dn-one", b"dn-two"]));
        hs.extend(message(14, &[]));
        record(22, 0x0301, &hs)
    }

    #[test]
    fn the_client_hello_is_well_formed() {
        let hello = client_hello(Some("gateway.example.com"), &[1; 32]);
        assert_eq!(&hello[..3], &[22, 3, 1]);
        let len = usize::from(u16::from_be_bytes([hello[3], hello[4]]));
        assert_eq!(hello.len(), 5 + len);
        assert_eq!(hello[5], 1, "client_hello");
        let body_len =
            (usize::from(hello[6]) << 16) | (usize::from(hello[7]) << 8) | usize::from(hello[8]);
        assert_eq!(body_len + 4, len);
        let mut r = Reader::new(&hello[9..]);
        assert_eq!(r.u16("v").unwrap(), 0x0303);
        r.take(32, "random").unwrap();
        assert!(r.vec8("sid").unwrap().is_empty());
        let suites = r.vec16("suites").unwrap();
        assert_eq!(suites.len(), SUITES.len() * 2);
        for must in [0x002f, 0x0033, 0xc013, 0x000a] {
            assert!(
                suites
                    .chunks(2)
                    .any(|c| u16::from_be_bytes([c[0], c[1]]) == must),
                "{must:04x}"
            );
        }
        assert_eq!(r.vec8("compression").unwrap(), &[0]);
        let ext = r.vec16("extensions").unwrap();
        assert!(r.is_empty());
        let mut e = Reader::new(ext);
        let mut kinds = Vec::new();
        while !e.is_empty() {
            kinds.push(e.u16("type").unwrap());
            let body = e.vec16("body").unwrap();
            if kinds.last() == Some(&0) {
                assert!(body.ends_with(b"gateway.example.com"));
            }
        }
        assert_eq!(kinds, vec![0x0000, 0x000a, 0x000b, 0x000d, 0x0017, 0xff01]);
        // No SNI for an address.
        let bare = client_hello(None, &[1; 32]);
        assert!(bare.len() < hello.len());
    }

    #[test]
    fn a_tls10_flight_gives_version_suite_chain_and_request() {
        let mut p = FlightParser::new([0; 32]);
        let flight = p.push(&flight_tls10_rsa()).unwrap().expect("complete");
        assert_eq!(version_name(flight.version), "TLSv1.0");
        assert_eq!(flight.suite.name, "TLS_RSA_WITH_AES_128_CBC_SHA");
        assert_eq!(
            flight.captured.chain,
            vec![b"leaf-der".to_vec(), b"intermediate-der".to_vec()]
        );
        let request = flight.captured.client_cert_request.expect("request");
        assert_eq!(
            request.acceptable_cas,
            vec![b"dn-one".to_vec(), b"dn-two".to_vec()]
        );
        assert_eq!(
            flight.captured.signature_valid, None,
            "static RSA proves nothing here"
        );
        assert_eq!(
            weaknesses(flight.version, flight.suite),
            vec![
                "TLS 1.0",
                "static RSA key exchange (no forward secrecy)",
                "a CBC cipher"
            ]
        );
        assert!(p.push(&[22]).is_err(), "nothing after the flight");
    }

    #[test]
    fn a_flight_split_into_single_bytes_and_many_records_parses_the_same() {
        let whole = flight_tls10_rsa();
        let mut p = FlightParser::new([0; 32]);
        let mut got = None;
        for b in &whole {
            if let Some(f) = p.push(std::slice::from_ref(b)).unwrap() {
                got = Some(f);
            }
        }
        let one_by_one = got.expect("complete");
        // The same handshake bytes cut into records of 3 bytes each.
        let hs = &whole[5..];
        let mut records = Vec::new();
        for chunk in hs.chunks(3) {
            records.extend(record(22, 0x0301, chunk));
        }
        let mut p = FlightParser::new([0; 32]);
        let many = p.push(&records).unwrap().expect("complete");
        assert_eq!(one_by_one, many);
    }

    #[test]
    fn alerts_and_garbage_are_named() {
        let mut p = FlightParser::new([0; 32]);
        assert_eq!(
            p.push(&record(21, 0x0301, &[2, 40])),
            Err(HelloError::Alert(40))
        );
        assert!(HelloError::Alert(40)
            .to_string()
            .contains("handshake_failure"));
        let mut p = FlightParser::new([0; 32]);
        assert_eq!(
            p.push(b"HTTP/1.1 400 Bad Request\r\n"),
            Err(HelloError::NotTls)
        );
        // A warning alert does not end the handshake.
        let mut p = FlightParser::new([0; 32]);
        let mut bytes = record(21, 0x0301, &[1, 112]);
        bytes.extend(flight_tls10_rsa());
        assert!(p.push(&bytes).unwrap().is_some());
    }

    #[test]
    fn a_certificate_message_larger_than_accepted_is_named_as_such() {
        let mut p = FlightParser::new([0; 32]);
        let mut hs = server_hello(0x0303, 0x002f);
        hs.extend_from_slice(&[11, 0x01, 0x00, 0x01]); // Certificate, 65537 bytes announced
        let e = p.push(&record(22, 0x0303, &hs)).unwrap_err();
        assert_eq!(
            e,
            HelloError::MessageTooLarge {
                message: "Certificate",
                len: 65537
            }
        );
        assert!(e
            .to_string()
            .contains("Certificate message is 65537 bytes, larger than the 65536"));
        let mut p = FlightParser::new([0; 32]);
        assert_eq!(
            p.push(&[22, 3, 3, 0xff, 0xff]),
            Err(HelloError::RecordTooLarge(65535))
        );
    }

    #[test]
    fn choices_the_client_did_not_offer_are_refused() {
        let mut p = FlightParser::new([0; 32]);
        let e = p
            .push(&record(22, 0x0303, &server_hello(0x0303, 0x1301)))
            .unwrap_err();
        assert!(e.to_string().contains("0x1301"), "{e}");
        let mut p = FlightParser::new([0; 32]);
        let e = p
            .push(&record(22, 0x0303, &server_hello(0x0304, 0x002f)))
            .unwrap_err();
        assert!(e.to_string().contains("TLSv1.3"), "{e}");
        // A flight without a certificate.
        let mut hs = server_hello(0x0303, 0x002f);
        hs.extend(message(14, &[]));
        let mut p = FlightParser::new([0; 32]);
        assert_eq!(
            p.push(&record(22, 0x0303, &hs)),
            Err(HelloError::NoCertificate)
        );
        // ECDHE without its ServerKeyExchange.
        let mut hs = server_hello(0x0303, 0xc013);
        hs.extend(certificate(&[b"leaf"]));
        hs.extend(message(14, &[]));
        let mut p = FlightParser::new([0; 32]);
        assert!(matches!(
            p.push(&record(22, 0x0303, &hs)),
            Err(HelloError::Malformed(_))
        ));
    }

    #[test]
    fn the_flight_is_bounded() {
        let mut p = FlightParser::new([0; 32]);
        // Endless warning alerts never complete a flight, and stop at the bound.
        let warning = record(21, 0x0301, &[1, 112]);
        let mut outcome = Ok(None);
        for _ in 0..(MAX_FLIGHT_BYTES / warning.len() + 2) {
            outcome = p.push(&warning);
            if outcome.is_err() {
                break;
            }
        }
        assert_eq!(outcome, Err(HelloError::TooMuch));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Random bytes, pushed in random pieces, never make the parser panic, and whatever it
        /// keeps stays within its bounds.
        #[test]
        fn random_bytes_never_panic(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..12)
        ) {
            let mut p = FlightParser::new([0; 32]);
            for c in &chunks {
                match p.push(c) {
                    Ok(Some(f)) => {
                        prop_assert!(f.captured.chain.len() <= tls::MAX_CHAIN_CERTS);
                        break;
                    }
                    Ok(None) => {}
                    Err(_) => break,
                }
            }
            prop_assert!(p.handshake.len() <= MAX_HANDSHAKE_MESSAGE + 4 + MAX_RECORD);
        }

        /// A valid flight with random bytes flipped or cut parses or fails, never panics.
        #[test]
        fn mutated_flights_never_panic(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
            cut in any::<usize>(),
        ) {
            let mut bytes = flight_tls10_rsa();
            let mut hs = server_hello(0x0303, 0xc013);
            hs.extend(certificate(&[b"leaf"]));
            hs.extend(message(12, &[3, 0, 23, 2, 4, 4, 4, 1, 0, 1, 9]));
            hs.extend(cert_request(0x0303, &[b"dn"]));
            hs.extend(message(14, &[]));
            bytes.extend(record(22, 0x0303, &hs));
            for (at, value) in flips {
                let i = at % bytes.len();
                bytes[i] = value;
            }
            bytes.truncate(cut % (bytes.len() + 1));
            let mut p = FlightParser::new([0; 32]);
            let _ = p.push(&bytes);
        }
    }
}
