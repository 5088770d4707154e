//! The fleet analysis: the fleet view and its summaries, the diagnosis of each check, the
//! management agents' state. Pure functions of the model and the configuration, fed a `now`.

pub mod agents;
pub mod diagnose;
pub mod fleet;
pub mod nodes;
pub mod rounds;
