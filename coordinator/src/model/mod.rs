//! The coordinator's data model: plain types with no I/O, shared by every layer above it.

pub mod access;
pub mod arrived;
pub mod check;
pub mod diagnosis;
pub mod event;
pub mod latest;
pub mod page;
pub mod probe;
pub mod round;
pub mod summary;
