//! The reasons counters carry, as types: each label is written once, and every one of them is
//! registered at zero when the coordinator starts, so a dashboard or an alert sees a series
//! before it first moves.

/// Why a connection was turned away (`cemwatch_connections_refused_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// No client certificate, and the first frame was not an enrolment.
    NoCertificate,
    /// An enrolment was refused (token, name); the enrolment counter says why.
    EnrolmentRefused,
    /// The client certificate expired.
    Expired,
    /// The client certificate is not from this coordinator's CA.
    UnknownCa,
    /// The probe was revoked.
    Revoked,
    /// The probe is not enrolled here.
    UnknownProbe,
    /// `Hello` named another probe than the certificate.
    IdentityMismatch,
    /// An unreadable certificate, or a first frame out of place.
    BadCertificate,
    /// `max_connections` bit.
    Limit,
    /// The per-source connection rate limit bit.
    RateLimited,
    /// A probe flooded reports beyond its queue.
    ReportRate,
    /// Too many attempts were already waiting for a handshake slot.
    Busy,
    /// Too many connections without a client certificate at once (`max_unauthenticated`).
    Unauthenticated,
    /// A connection without a client certificate sent no first frame in time.
    FirstFrameTimeout,
    /// A certificate for a known probe's name carries another key than the probe's.
    KeyMismatch,
}

impl Refusal {
    /// Every reason.
    pub const ALL: [Refusal; 15] = [
        Refusal::NoCertificate,
        Refusal::EnrolmentRefused,
        Refusal::Expired,
        Refusal::UnknownCa,
        Refusal::Revoked,
        Refusal::UnknownProbe,
        Refusal::IdentityMismatch,
        Refusal::BadCertificate,
        Refusal::Limit,
        Refusal::RateLimited,
        Refusal::ReportRate,
        Refusal::Busy,
        Refusal::Unauthenticated,
        Refusal::FirstFrameTimeout,
        Refusal::KeyMismatch,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::NoCertificate => "no_certificate",
            Refusal::EnrolmentRefused => "enrolment_refused",
            Refusal::Expired => "expired",
            Refusal::UnknownCa => "unknown_ca",
            Refusal::Revoked => "revoked",
            Refusal::UnknownProbe => "unknown_probe",
            Refusal::IdentityMismatch => "identity_mismatch",
            Refusal::BadCertificate => "bad_certificate",
            Refusal::Limit => "limit",
            Refusal::RateLimited => "rate_limited",
            Refusal::ReportRate => "report_rate",
            Refusal::Busy => "busy",
            Refusal::Unauthenticated => "unauthenticated_limit",
            Refusal::FirstFrameTimeout => "first_frame_timeout",
            Refusal::KeyMismatch => "key_mismatch",
        }
    }
}

/// How an enrolment attempt ended (`cemwatch_enrolments_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Enrolment {
    /// Enrolled.
    Enrolled,
    /// The token could not be read.
    TokenMalformed,
    /// No such token (or a wrong secret, or another coordinator's).
    TokenUnknown,
    /// The token was used before.
    TokenUsed,
    /// The token expired.
    TokenExpired,
    /// The name is taken.
    NameTaken,
    /// The requested name breaks the name rule.
    BadName,
    /// The coordinator failed (store, CA).
    Error,
}

impl Enrolment {
    /// Every outcome.
    pub const ALL: [Enrolment; 8] = [
        Enrolment::Enrolled,
        Enrolment::TokenMalformed,
        Enrolment::TokenUnknown,
        Enrolment::TokenUsed,
        Enrolment::TokenExpired,
        Enrolment::NameTaken,
        Enrolment::BadName,
        Enrolment::Error,
    ];

    /// The `outcome` label.
    pub fn label(self) -> &'static str {
        match self {
            Enrolment::Enrolled => "enrolled",
            Enrolment::TokenMalformed => "token_malformed",
            Enrolment::TokenUnknown => "token_unknown",
            Enrolment::TokenUsed => "token_used",
            Enrolment::TokenExpired => "token_expired",
            Enrolment::NameTaken => "name_taken",
            Enrolment::BadName => "bad_name",
            Enrolment::Error => "error",
        }
    }
}

/// The `reason` labels of `cemwatch_frames_rejected_total`: the wire codec's
/// (`WireError::reason`), `unexpected` for a well-formed frame out of place, and `paced` for
/// an agent state replaced by a newer one before its turn (see `AGENT_STATE_INTERVAL`).
pub const FRAME_REASONS: [&str; 6] = [
    "too_large",
    "empty",
    "version",
    "malformed",
    "unexpected",
    "paced",
];
