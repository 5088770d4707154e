//! The QUIC server probes report to. One bidirectional stream per connection: enrolment on a
//! connection without a client certificate; otherwise `Hello` (whose name must match the
//! certificate), the plan, reports committed then acknowledged, `ProbeNow` rounds, renewals.
//! A malformed frame closes that connection with a reason and a counter; nothing else stops.

mod accept;
mod asks;
pub mod ca;
pub mod capacity;
mod enrol;
mod error;
mod handshake;
mod live;
mod refusal;
mod session;
pub mod session_keys;
pub mod sockets;
pub mod verifier;

pub use accept::{serve, MAX_HANDSHAKES_IN_FLIGHT, MAX_HANDSHAKES_WAITING, MAX_HANDSHAKE_WAIT};
pub use asks::ASKS_QUEUED;
pub use error::QuicError;
pub use handshake::adopt_on_hello;
pub use handshake::UNAUTHENTICATED_DEADLINE;
pub use live::QUEUED_BYTES_ALL;
pub use live::{
    pace, round_window, Hub, RoundRefused, ROUND_IN_FLIGHT_MAX, ROUND_STALL, ROUND_WINDOW,
    ROUND_WINDOW_MAX, ROUND_WINDOW_MIN, ROUND_WINDOW_SPAN_MIN,
};
pub use session::{AGENT_STATE_INTERVAL, QUEUED_BYTES_PER_CONNECTION};
