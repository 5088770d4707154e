//! Recognising the guide's `Agent.log` entries in a line.
//!
//! The guide gives search patterns, not literal strings: "exact token format and severity
//! labels vary by agent version". So every pattern is a regular expression matched anywhere in
//! the line, case-insensitively, in ASCII mode over bytes (a line that is not UTF-8 still
//! matches; NUL bytes are removed first, so a UTF-16 log matches on its ASCII tokens). Whatever
//! is in front (a timestamp, `[INFO]`, `Information`, `severity='4'`, an XML event header) is
//! ignored, except that a timestamp is read from the line's start to tell since when.
//!
//! Four patterns, each replaceable with `--agent-log-pattern NAME=REGEX`:
//!
//! | name | default matches | named groups used |
//! |---|---|---|
//! | `connected` | "CEM mode active. Connected to gateway: HOST:PORT" | `host`, `port` |
//! | `thumbprint` | "Certificate thumbprint validated: THUMBPRINT" | `thumbprint` |
//! | `handshake_error` | "SSL handshake error", "TLS handshake failed", thumbprint mismatches | `host`, `port` |
//! | `connect_timeout` | "Connection timed out … HOST:PORT", "timeout connecting to … port N" | `host`, `port` |
//!
//! A pattern without a named group still works: the host and port are then taken from the first
//! `HOST:PORT` (or `port N`) in the line, and the thumbprint from the first run of 40 or 64 hex
//! digits. Error patterns are tried first, so a line that says "connected" and "timed out" is a
//! timeout. The default patterns also refuse negated lines ("not connected", "thumbprint
//! validation failed") and configuration lines ("connection timeout is 30 seconds"); a pattern
//! given on the command line is taken as it is.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::bytes::{Captures, Regex, RegexBuilder};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use cemwatch_shared::Thumbprint;

/// The default `connected` pattern.
pub const DEFAULT_CONNECTED: &str = r#"\bconnected\s+(?:to|with)\s+(?:the\s+)?(?:cem\s+|internet\s+|cloud\s+)?gateway(?:\s+server)?\b[\s:=,'"]*(?P<host>\[[0-9a-f:.]+\]|[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?)*)(?:(?:\s*:\s*|[\s,(]+(?:on\s+)?port\s*[:=#]?\s*)(?P<port>\d{1,5})\b)?"#;

/// The default `thumbprint` pattern.
pub const DEFAULT_THUMBPRINT: &str = r"\bthumbprint\b.{0,60}?\b(?:validated|verified|validation\s+(?:succeeded|successful|passed|ok))\b|\b(?:validated|verified)\s+(?:the\s+)?(?:gateway\s+|server\s+)?(?:certificate\s+)?thumbprint\b";

/// The default `handshake_error` pattern.
pub const DEFAULT_HANDSHAKE_ERROR: &str = r"\bhandshake\b.{0,80}?\b(?:errors?|fail(?:s|ed|ure)?|abort(?:ed)?)\b|\b(?:errors?|fail(?:s|ed|ure)?)\b.{0,60}?\b(?:ssl|tls|schannel)\s+handshake\b|\bthumbprint\b.{0,60}?\b(?:mismatch|does\s*n[o']t\s+match|not\s+(?:validated|trusted)|validation\s+failed|invalid)\b|\b(?:sec_e|cert_e)_[a-z_]+\b";

/// The default `connect_timeout` pattern.
pub const DEFAULT_CONNECT_TIMEOUT: &str = r"\b(?:connect|connection|connecting)\b.{0,80}?\b(?:timed?[\s-]?out|timeout)\b|\b(?:timed?[\s-]?out|timeout)\b.{0,80}?\b(?:connect|connection|connecting)\b|\bwsaetimedout\b|\b(?:error|code|status)\s*[:=]?\s*10060\b";

/// Lines the default `connected` and `thumbprint` patterns refuse.
const NEGATION: &str = r"\b(?:not|never|cannot|unable|fail(?:s|ed|ure)?|errors?|mismatch|invalid|could\s*n[o']t|did\s*n[o']t|does\s*n[o']t|disconnected)\b";
/// Lines the default `connect_timeout` pattern refuses: a timeout setting, not a timeout.
const TIMEOUT_SETTING: &str =
    r"\btime[\s-]?out\s*(?:is|set\s+to|of|=|:)?\s*\d+\s*(?:ms|s|secs?|seconds?|mins?|minutes?)\b";
/// `HOST:PORT`, where the host has a dot or brackets (so that `12:34` is not one).
const HOST_PORT: &str = r"(?:^|[^a-z0-9_.-])(?P<host>\[[0-9a-f:.]+\]|[a-z0-9_-]+(?:\.[a-z0-9_-]+)+):(?P<port>\d{1,5})\b";
/// A host named after a word that introduces one ("to gateway.example.com", "with …"): a
/// name with a letter in its last label, or an IPv4 address.
const HOST_AFTER: &str = r#"\b(?:to|with|gateway|host|server)\b\s*[:=]?\s*['"]?(?P<host>(?:[a-z0-9_-]+\.)+[a-z][a-z0-9-]*|\d{1,3}(?:\.\d{1,3}){3})\b"#;
/// `port N`.
const PORT: &str = r"\bport\s*[:=#]?\s*(?P<port>\d{1,5})\b";
/// 40 or 64 hex digits, optionally in separated pairs.
const HEX_THUMBPRINT: &str =
    r"\b(?P<thumbprint>[0-9a-f]{2}(?:[ :-]?[0-9a-f]{2}){19}(?:(?:[ :-]?[0-9a-f]{2}){12})?)\b";
/// Year first: `2025-01-31 12:34:56.789 +01:00`, `2025/01/31T12:34:56Z`.
const TS_YMD: &str = r"\b(?P<y>\d{4})[-/.](?P<a>\d{1,2})[-/.](?P<b>\d{1,2})(?:[t\s_]+|,\s*)(?P<h>\d{1,2}):(?P<mi>\d{2})(?::(?P<s>\d{2}))?(?:[.,](?P<f>\d{1,9}))?\s*(?:(?P<ampm>[ap]m)\b)?\s*(?:(?P<z>z|utc|gmt)\b|(?P<oh>[+-]\d{2}):?(?P<om>\d{2})\b)?";
/// Year last: `01/31/2025 12:34:56 PM` (month first, as the agent writes it, unless the first
/// number cannot be a month), `31.01.2025 12:34:56` (day first with dots).
const TS_YLAST: &str = r"\b(?P<a>\d{1,2})(?P<sep>[-/.])(?P<b>\d{1,2})[-/.](?P<y>\d{4})(?:[t\s_]+|,\s*)(?P<h>\d{1,2}):(?P<mi>\d{2})(?::(?P<s>\d{2}))?(?:[.,](?P<f>\d{1,9}))?\s*(?:(?P<ampm>[ap]m)\b)?\s*(?:(?P<z>z|utc|gmt)\b|(?P<oh>[+-]\d{2}):?(?P<om>\d{2})\b)?";

/// Where in a line a timestamp is looked for.
const TIMESTAMP_SPAN: usize = 256;

fn compile(source: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(source)
        .case_insensitive(true)
        .unicode(false)
        .build()
}

struct Helpers {
    negation: Regex,
    timeout_setting: Regex,
    host_port: Regex,
    host_after: Regex,
    port: Regex,
    thumbprint: Regex,
    ts_ymd: Regex,
    ts_ylast: Regex,
}

static HELPERS: LazyLock<Helpers> = LazyLock::new(|| Helpers {
    negation: compile(NEGATION).expect("built-in pattern"),
    timeout_setting: compile(TIMEOUT_SETTING).expect("built-in pattern"),
    host_port: compile(HOST_PORT).expect("built-in pattern"),
    host_after: compile(HOST_AFTER).expect("built-in pattern"),
    port: compile(PORT).expect("built-in pattern"),
    thumbprint: compile(HEX_THUMBPRINT).expect("built-in pattern"),
    ts_ymd: compile(TS_YMD).expect("built-in pattern"),
    ts_ylast: compile(TS_YLAST).expect("built-in pattern"),
});

/// The names of the patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PatternName {
    /// "Connected to gateway: HOST:PORT".
    Connected,
    /// "Certificate thumbprint validated: THUMBPRINT".
    Thumbprint,
    /// SSL/TLS handshake errors.
    HandshakeError,
    /// Connection timeouts.
    ConnectTimeout,
}

impl PatternName {
    /// Every name, in the order lines are matched.
    pub const ALL: [PatternName; 4] = [
        PatternName::HandshakeError,
        PatternName::ConnectTimeout,
        PatternName::Connected,
        PatternName::Thumbprint,
    ];

    /// The name as `--agent-log-pattern` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            PatternName::Connected => "connected",
            PatternName::Thumbprint => "thumbprint",
            PatternName::HandshakeError => "handshake_error",
            PatternName::ConnectTimeout => "connect_timeout",
        }
    }

    /// The built-in pattern.
    pub fn default_pattern(self) -> &'static str {
        match self {
            PatternName::Connected => DEFAULT_CONNECTED,
            PatternName::Thumbprint => DEFAULT_THUMBPRINT,
            PatternName::HandshakeError => DEFAULT_HANDSHAKE_ERROR,
            PatternName::ConnectTimeout => DEFAULT_CONNECT_TIMEOUT,
        }
    }

    fn parse(name: &str) -> Option<Self> {
        let name = name.trim().replace('-', "_").to_ascii_lowercase();
        Self::ALL.into_iter().find(|n| n.as_str() == name)
    }
}

/// Why a pattern given on the command line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Not `NAME=REGEX`.
    #[error("--agent-log-pattern {given:?}: write NAME=REGEX, with NAME one of connected, thumbprint, handshake_error, connect_timeout")]
    Syntax {
        /// What was given.
        given: String,
    },
    /// An unknown name.
    #[error("--agent-log-pattern {name}=…: there is no pattern {name:?}; the names are connected, thumbprint, handshake_error, connect_timeout")]
    UnknownName {
        /// The name given.
        name: String,
    },
    /// The regular expression does not compile.
    #[error("--agent-log-pattern {name}=…: the regular expression does not compile (patterns are case-insensitive, ASCII, Rust regex syntax): {error}")]
    Regex {
        /// The pattern's name.
        name: &'static str,
        /// The compiler's message.
        error: String,
    },
}

#[derive(Debug, Clone)]
struct Pattern {
    regex: Regex,
    builtin: bool,
}

/// The four patterns, built-in or replaced.
#[derive(Debug, Clone)]
pub struct Patterns {
    connected: Pattern,
    thumbprint: Pattern,
    handshake_error: Pattern,
    connect_timeout: Pattern,
}

impl Default for Patterns {
    fn default() -> Self {
        let builtin = |name: PatternName| Pattern {
            regex: compile(name.default_pattern()).expect("built-in pattern"),
            builtin: true,
        };
        Self {
            connected: builtin(PatternName::Connected),
            thumbprint: builtin(PatternName::Thumbprint),
            handshake_error: builtin(PatternName::HandshakeError),
            connect_timeout: builtin(PatternName::ConnectTimeout),
        }
    }
}

/// What a line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Connected to the gateway in CEM mode.
    Connected,
    /// The gateway's certificate thumbprint was validated.
    ThumbprintValidated,
    /// A handshake error.
    HandshakeError,
    /// A connection timeout.
    ConnectTimeout,
}

/// A recognised line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineEvent {
    /// What it says.
    pub kind: EventKind,
    /// The gateway host, when the line names one.
    pub host: Option<String>,
    /// The port, when the line names one.
    pub port: Option<u16>,
    /// The thumbprint, for [`EventKind::ThumbprintValidated`] when the line holds one.
    pub thumbprint: Option<Thumbprint>,
    /// The line's own timestamp, when it has one that reads.
    pub logged_at: Option<OffsetDateTime>,
}

impl Patterns {
    fn get(&self, name: PatternName) -> &Pattern {
        match name {
            PatternName::Connected => &self.connected,
            PatternName::Thumbprint => &self.thumbprint,
            PatternName::HandshakeError => &self.handshake_error,
            PatternName::ConnectTimeout => &self.connect_timeout,
        }
    }

    /// Replaces one pattern.
    pub fn set(&mut self, name: PatternName, source: &str) -> Result<(), PatternError> {
        let regex = compile(source).map_err(|e| PatternError::Regex {
            name: name.as_str(),
            error: e.to_string(),
        })?;
        let pattern = Pattern {
            regex,
            builtin: false,
        };
        match name {
            PatternName::Connected => self.connected = pattern,
            PatternName::Thumbprint => self.thumbprint = pattern,
            PatternName::HandshakeError => self.handshake_error = pattern,
            PatternName::ConnectTimeout => self.connect_timeout = pattern,
        }
        Ok(())
    }

    /// Replaces one pattern from `NAME=REGEX` (the form `--agent-log-pattern` takes).
    pub fn apply_override(&mut self, spec: &str) -> Result<(), PatternError> {
        let (name, source) = spec.split_once('=').ok_or_else(|| PatternError::Syntax {
            given: spec.to_string(),
        })?;
        if source.is_empty() {
            return Err(PatternError::Syntax {
                given: spec.to_string(),
            });
        }
        let name = PatternName::parse(name).ok_or_else(|| PatternError::UnknownName {
            name: name.to_string(),
        })?;
        self.set(name, source)
    }

    /// What `line` says, if it is one of the guide's entries. `local` is the offset of
    /// timestamps that carry none.
    pub fn parse(&self, line: &[u8], local: UtcOffset) -> Option<LineEvent> {
        let line: Cow<'_, [u8]> = if line.contains(&0) {
            Cow::Owned(line.iter().copied().filter(|&b| b != 0).collect())
        } else {
            Cow::Borrowed(line)
        };
        let line = line.as_ref();
        for name in PatternName::ALL {
            let pattern = self.get(name);
            let Some(caps) = pattern.regex.captures(line) else {
                continue;
            };
            if pattern.builtin && refused(name, line) {
                continue;
            }
            let start = caps.get(0).map_or(0, |m| m.start());
            let kind = match name {
                PatternName::Connected => EventKind::Connected,
                PatternName::Thumbprint => EventKind::ThumbprintValidated,
                PatternName::HandshakeError => EventKind::HandshakeError,
                PatternName::ConnectTimeout => EventKind::ConnectTimeout,
            };
            let (host, port) = endpoint(&caps, line, start);
            if kind == EventKind::Connected && host.is_none() {
                // "Connected to gateway" without saying which: not enough to report.
                continue;
            }
            let thumbprint = match kind {
                EventKind::ThumbprintValidated => thumbprint(&caps, line, start),
                _ => None,
            };
            return Some(LineEvent {
                kind,
                host,
                port,
                thumbprint,
                logged_at: timestamp(line, local),
            });
        }
        None
    }
}

fn refused(name: PatternName, line: &[u8]) -> bool {
    match name {
        PatternName::Connected | PatternName::Thumbprint => HELPERS.negation.is_match(line),
        PatternName::ConnectTimeout => HELPERS.timeout_setting.is_match(line),
        PatternName::HandshakeError => false,
    }
}

fn text(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes).ok().map(str::to_string)
}

fn port_number(bytes: &[u8]) -> Option<u16> {
    std::str::from_utf8(bytes)
        .ok()?
        .parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
}

fn clean_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Host and port: from the pattern's named groups, else the first `HOST:PORT` or `port N` from
/// the match on (then anywhere in the line).
fn endpoint(caps: &Captures<'_>, line: &[u8], start: usize) -> (Option<String>, Option<u16>) {
    let mut host = caps
        .name("host")
        .and_then(|m| text(m.as_bytes()))
        .map(|h| clean_host(&h))
        .filter(|h| !h.is_empty());
    let mut port = caps.name("port").and_then(|m| port_number(m.as_bytes()));
    if host.is_some() && port.is_some() {
        return (host, port);
    }
    let search = |regex: &Regex| {
        regex
            .captures(&line[start..])
            .or_else(|| regex.captures(line))
    };
    if let Some(found) = search(&HELPERS.host_port) {
        let found_host = found.name("host").and_then(|m| text(m.as_bytes()));
        let found_port = found.name("port").and_then(|m| port_number(m.as_bytes()));
        if host.is_none() || host.as_deref() == found_host.as_deref().map(clean_host).as_deref() {
            host = host.or_else(|| found_host.map(|h| clean_host(&h)));
            port = port.or(found_port);
        }
    }
    if port.is_none() {
        port = search(&HELPERS.port)
            .and_then(|c| c.name("port").and_then(|m| port_number(m.as_bytes())));
    }
    if host.is_none() {
        host = search(&HELPERS.host_after)
            .and_then(|c| c.name("host").and_then(|m| text(m.as_bytes())))
            .map(|h| clean_host(&h));
    }
    (host, port)
}

fn thumbprint(caps: &Captures<'_>, line: &[u8], start: usize) -> Option<Thumbprint> {
    let from_group = caps
        .name("thumbprint")
        .and_then(|m| text(m.as_bytes()))
        .and_then(|t| Thumbprint::parse(&t).ok());
    from_group.or_else(|| {
        let found = HELPERS
            .thumbprint
            .captures(&line[start..])
            .or_else(|| HELPERS.thumbprint.captures(line))?;
        let digits = text(found.name("thumbprint")?.as_bytes())?;
        Thumbprint::parse(&digits).ok()
    })
}

/// The first timestamp in the line's first [`TIMESTAMP_SPAN`] bytes.
pub fn timestamp(line: &[u8], local: UtcOffset) -> Option<OffsetDateTime> {
    let span = &line[..line.len().min(TIMESTAMP_SPAN)];
    let ymd = HELPERS.ts_ymd.captures(span);
    let ylast = HELPERS.ts_ylast.captures(span);
    let position = |c: &Option<Captures<'_>>| c.as_ref().and_then(|c| c.get(0)).map(|m| m.start());
    let (caps, year_first) = match (position(&ymd), position(&ylast)) {
        (Some(a), Some(b)) if b < a => (ylast?, false),
        (Some(_), _) => (ymd?, true),
        (None, Some(_)) => (ylast?, false),
        (None, None) => return None,
    };
    let num = |name: &str| -> Option<u32> {
        std::str::from_utf8(caps.name(name)?.as_bytes())
            .ok()?
            .parse()
            .ok()
    };
    let year = i32::try_from(num("y")?).ok()?;
    let (a, b) = (num("a")?, num("b")?);
    let (month, day) = if year_first {
        (a, b)
    } else {
        let dots = caps.name("sep").is_some_and(|m| m.as_bytes() == b".");
        if dots || a > 12 {
            (b, a)
        } else {
            (a, b)
        }
    };
    let mut hour = num("h")?;
    if let Some(ampm) = caps.name("ampm") {
        if hour == 0 || hour > 12 {
            return None;
        }
        let pm = ampm
            .as_bytes()
            .first()
            .is_some_and(|b| b.eq_ignore_ascii_case(&b'p'));
        hour = match (pm, hour) {
            (false, 12) => 0,
            (true, 12) => 12,
            (true, h) => h + 12,
            (false, h) => h,
        };
    }
    let nanos = match caps.name("f") {
        Some(f) => {
            let digits = f.as_bytes();
            let value: u32 = std::str::from_utf8(digits).ok()?.parse().ok()?;
            value * 10u32.pow(9 - digits.len() as u32)
        }
        None => 0,
    };
    let offset = if caps.name("z").is_some() {
        UtcOffset::UTC
    } else if let (Some(h), Some(m)) = (caps.name("oh"), caps.name("om")) {
        let h: i8 = std::str::from_utf8(h.as_bytes()).ok()?.parse().ok()?;
        let m: i8 = std::str::from_utf8(m.as_bytes()).ok()?.parse().ok()?;
        UtcOffset::from_hms(h, if h < 0 { -m } else { m }, 0).ok()?
    } else {
        local
    };
    let date = Date::from_calendar_date(
        year,
        Month::try_from(u8::try_from(month).ok()?).ok()?,
        u8::try_from(day).ok()?,
    )
    .ok()?;
    let time = Time::from_hms_nano(
        u8::try_from(hour).ok()?,
        u8::try_from(num("mi")?).ok()?,
        u8::try_from(num("s").unwrap_or(0)).ok()?,
        nanos,
    )
    .ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_offset(offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const TP: &str = "3A7F9C2B11D04E5F66A7B8C9D0E1F2A3B4C5D6E7";

    fn parse(line: &str) -> Option<LineEvent> {
        Patterns::default().parse(line.as_bytes(), UtcOffset::UTC)
    }

    fn kind(line: &str) -> Option<EventKind> {
        parse(line).map(|e| e.kind)
    }

    #[test]
    fn built_in_patterns_compile() {
        for name in PatternName::ALL {
            compile(name.default_pattern()).unwrap_or_else(|e| panic!("{}: {e}", name.as_str()));
        }
        LazyLock::force(&HELPERS);
    }

    #[test]
    fn connected_in_every_token_and_severity_variant() {
        for line in [
            "[INFO] CEM mode active. Connected to gateway: gateway.example.com:8443",
            "2025-11-24 12:36:21,517 INFO  CEM mode active. Connected to gateway: gateway.example.com:8443",
            "11/24/2025 12:36:21 PM Information: CEM Mode Active - connected to Gateway gateway.example.com:8443.",
            "<event date='11/24/2025 12:36:21.4520000 +01:00' severity='4' hostName='PC1' source='Agent' module='AeXNSAgent.exe' process='AeXNSAgent.exe' pid='5352' thread='5332' tickCount='255449171' ><![CDATA[CEM mode active. Connected to gateway: gateway.example.com:8443]]></event>",
            "INFO | cem mode active | connected to the internet gateway 'GATEWAY.example.com', port 8443",
            "Information\tCEM mode active; Connected to gateway=gateway.example.com (port 8443)",
            "[info]  CEM MODE ACTIVE. CONNECTED TO GATEWAY: GATEWAY.EXAMPLE.COM:8443",
        ] {
            let e = parse(line).unwrap_or_else(|| panic!("not recognised: {line}"));
            assert_eq!(e.kind, EventKind::Connected, "{line}");
            assert_eq!(e.host.as_deref(), Some("gateway.example.com"), "{line}");
            assert_eq!(e.port, Some(8443), "{line}");
        }
        // Without a port, and to an address.
        let e =
            parse("[INFO] CEM mode active. Connected to gateway: gw.example.com").expect("no port");
        assert_eq!((e.host.as_deref(), e.port), (Some("gw.example.com"), None));
        let e = parse("Connected to gateway: [2001:db8::1]:8443").expect("v6");
        assert_eq!(
            (e.host.as_deref(), e.port),
            (Some("2001:db8::1"), Some(8443))
        );
        let e = parse("Connected to gateway 203.0.113.10:443").expect("v4");
        assert_eq!(
            (e.host.as_deref(), e.port),
            (Some("203.0.113.10"), Some(443))
        );
    }

    #[test]
    fn negated_and_unrelated_lines_are_not_connections() {
        for line in [
            "[ERROR] Not connected to gateway: gateway.example.com:8443",
            "Disconnected from gateway gateway.example.com:8443",
            "Failed to get connected to gateway gateway.example.com:8443",
            "Connected to gateway",
            "Connected to Notification Server smp.example.net over HTTPS",
            "Agent started",
            "",
        ] {
            assert!(
                !matches!(kind(line), Some(EventKind::Connected)),
                "{line} → {:?}",
                parse(line)
            );
        }
    }

    #[test]
    fn thumbprint_validated_in_its_variants() {
        for line in [
            format!("[INFO] Certificate thumbprint validated: {TP}"),
            "[INFO] Certificate thumbprint validated: 3a 7f 9c 2b 11 d0 4e 5f 66 a7 b8 c9 d0 e1 f2 a3 b4 c5 d6 e7".to_string(),
            "2025-11-24T12:36:22Z Information Validated gateway certificate thumbprint 3A:7F:9C:2B:11:D0:4E:5F:66:A7:B8:C9:D0:E1:F2:A3:B4:C5:D6:E7".to_string(),
            format!("Thumbprint {TP} validation succeeded"),
            format!("<event severity='4'><![CDATA[Certificate Thumbprint Validated: {}]]></event>", TP.to_lowercase()),
        ] {
            let e = parse(&line).unwrap_or_else(|| panic!("not recognised: {line}"));
            assert_eq!(e.kind, EventKind::ThumbprintValidated, "{line}");
            assert_eq!(e.thumbprint.map(|t| t.to_string()).as_deref(), Some(TP), "{line}");
        }
        // Validated, but the thumbprint is not in the line.
        let e = parse("[INFO] Certificate thumbprint validated").expect("validated");
        assert_eq!(
            (e.kind, e.thumbprint),
            (EventKind::ThumbprintValidated, None)
        );
    }

    #[test]
    fn a_failed_thumbprint_validation_is_a_handshake_error() {
        for line in [
            format!("[ERROR] Certificate thumbprint validation failed: {TP}"),
            format!("Warning: server certificate thumbprint mismatch ({TP})"),
            "Error: thumbprint does not match the CEM policy".to_string(),
        ] {
            assert_eq!(kind(&line), Some(EventKind::HandshakeError), "{line}");
        }
    }

    #[test]
    fn handshake_errors_in_their_variants() {
        for (line, host, port) in [
            ("[ERROR] SSL handshake error", None, None),
            ("2025-11-24 12:40:01 ERROR SSL handshake error connecting to gateway.example.com:8443", Some("gateway.example.com"), Some(8443)),
            ("Error  TLS handshake failed with gateway.example.com on port 8443: The certificate chain was issued by an authority that is not trusted", Some("gateway.example.com"), Some(8443)),
            ("<event severity='1'><![CDATA[Handshake failure: SEC_E_UNTRUSTED_ROOT (0x80090325) https://gateway.example.com:8443/Altiris]]></event>", Some("gateway.example.com"), Some(8443)),
            ("Failed SSL handshake with 203.0.113.10:8443", Some("203.0.113.10"), Some(8443)),
            ("schannel: CERT_E_UNTRUSTEDROOT", None, None),
        ] {
            let e = parse(line).unwrap_or_else(|| panic!("not recognised: {line}"));
            assert_eq!(e.kind, EventKind::HandshakeError, "{line}");
            assert_eq!((e.host.as_deref(), e.port), (host, port), "{line}");
        }
    }

    #[test]
    fn connection_timeouts_with_the_port_they_tried() {
        for (line, host, port) in [
            ("[WARN] Connection timeout connecting to gateway.example.com:443", Some("gateway.example.com"), Some(443)),
            ("2025-11-24 12:41:00 Warning Connect to gateway.example.com:443 timed out", Some("gateway.example.com"), Some(443)),
            ("Timed out connecting to gateway gateway.example.com on port 443", None, Some(443)),
            ("<event severity='2'><![CDATA[Connection to https://gateway.example.com:443/Altiris/ timed-out after 30 seconds]]></event>", Some("gateway.example.com"), Some(443)),
            ("ERROR: socket error 10060 (WSAETIMEDOUT) gateway.example.com:443", Some("gateway.example.com"), Some(443)),
            ("CEM: connection attempt timeout; gateway.example.com:443", Some("gateway.example.com"), Some(443)),
        ] {
            let e = parse(line).unwrap_or_else(|| panic!("not recognised: {line}"));
            assert_eq!(e.kind, EventKind::ConnectTimeout, "{line}");
            assert_eq!(e.port, port, "{line}");
            if host.is_some() {
                assert_eq!(e.host.as_deref(), host, "{line}");
            }
        }
        // A timeout setting is not a timeout.
        for line in [
            "Connection timeout is 30 seconds",
            "connect timeout=30000ms",
            "Setting connection timeout: 60 s",
        ] {
            assert_eq!(kind(line), None, "{line}");
        }
    }

    #[test]
    fn an_error_line_mentioning_connected_is_the_error() {
        assert_eq!(
            kind("Connected to gateway gateway.example.com:8443 but the SSL handshake failed"),
            Some(EventKind::HandshakeError)
        );
    }

    #[test]
    fn nul_bytes_of_a_utf16_log_are_ignored() {
        let utf16: Vec<u8> = "[INFO] CEM mode active. Connected to gateway: gw.example.com:8443"
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect();
        let e = Patterns::default()
            .parse(&utf16[1..], UtcOffset::UTC)
            .expect("recognised");
        assert_eq!(
            (e.host.as_deref(), e.port),
            (Some("gw.example.com"), Some(8443))
        );
    }

    #[test]
    fn overrides_replace_one_pattern_and_say_what_is_wrong() {
        let mut p = Patterns::default();
        p.apply_override(r"connected=^OK gw=(?P<host>\S+) p=(?P<port>\d+)")
            .expect("valid");
        let e = p
            .parse(b"ok GW=gw.example.com P=8443", UtcOffset::UTC)
            .expect("custom");
        assert_eq!(
            (e.host.as_deref(), e.port),
            (Some("gw.example.com"), Some(8443))
        );
        assert_eq!(
            p.parse(
                b"CEM mode active. Connected to gateway: gw.example.com:8443",
                UtcOffset::UTC
            ),
            None,
            "the built-in connected pattern is replaced"
        );
        // A custom pattern without groups: host and port from the line.
        p.apply_override("connect-timeout=keine Antwort")
            .expect("valid");
        let e = p
            .parse(b"Keine Antwort von gw.example.com:443", UtcOffset::UTC)
            .expect("custom");
        assert_eq!((e.kind, e.port), (EventKind::ConnectTimeout, Some(443)));

        assert!(matches!(
            p.apply_override("connected"),
            Err(PatternError::Syntax { .. })
        ));
        assert!(matches!(
            p.apply_override("connected="),
            Err(PatternError::Syntax { .. })
        ));
        let e = p.apply_override("bogus=x").expect_err("unknown");
        assert!(e.to_string().contains("connect_timeout"), "{e}");
        let e = p
            .apply_override("thumbprint=(unclosed")
            .expect_err("bad regex");
        assert!(
            matches!(
                e,
                PatternError::Regex {
                    name: "thumbprint",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn timestamps_in_the_forms_logs_use() {
        let plus1 = UtcOffset::from_hms(1, 0, 0).expect("offset");
        let cases = [
            (
                "2025-11-24 12:36:21,517 INFO x",
                datetime!(2025-11-24 12:36:21.517 +1),
            ),
            ("2025-11-24T12:36:21Z x", datetime!(2025-11-24 12:36:21 UTC)),
            (
                "2025/11/24 12:36:21.123456789 -05:30 x",
                datetime!(2025-11-24 12:36:21.123456789 -5:30),
            ),
            (
                "[11/24/2025 12:36:21 PM] x",
                datetime!(2025-11-24 12:36:21 +1),
            ),
            (
                "11/24/2025 12:05:00 AM x",
                datetime!(2025-11-24 00:05:00 +1),
            ),
            ("24/11/2025 13:36:21 x", datetime!(2025-11-24 13:36:21 +1)),
            ("24.11.2025 13:36:21 x", datetime!(2025-11-24 13:36:21 +1)),
            ("05.11.2025 13:36 x", datetime!(2025-11-05 13:36:00 +1)),
            (
                "<event date='11/24/2025 12:36:21.4520000 +01:00' severity='4'>",
                datetime!(2025-11-24 12:36:21.452 +1),
            ),
            (
                "<event date='11/24/2025 12:36:21.4520000 +0000' severity='4'>",
                datetime!(2025-11-24 12:36:21.452 UTC),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(timestamp(line.as_bytes(), plus1), Some(want), "{line}");
        }
        for line in [
            "no time here",
            "13/13/2025 10:00:00",
            "2025-02-30 10:00:00",
            "2025-01-01 25:00:00",
            "12:34:56 only a time",
        ] {
            assert_eq!(timestamp(line.as_bytes(), plus1), None, "{line}");
        }
        let e = parse(
            "2025-11-24 12:36:21 [INFO] CEM mode active. Connected to gateway: gw.example.com:8443",
        )
        .expect("event");
        assert_eq!(e.logged_at, Some(datetime!(2025-11-24 12:36:21 UTC)));
    }
}
