//! Restart policy: whether an exit calls for a restart (OTP's permanent / transient /
//! temporary). The intensity window and backoff are tessera_common::restart's, shared with the
//! container agent.

use super::manifest::Restart;
pub use tessera_common::restart::{Decision, RestartTracker};

/// Does this exit call for a restart? `normal` is a zero exit status.
pub fn wants_restart(restart: Restart, normal: bool) -> bool {
    match restart {
        Restart::Permanent => true,
        Restart::Transient => !normal,
        Restart::Temporary => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_types_follow_otp() {
        assert!(wants_restart(Restart::Permanent, true));
        assert!(wants_restart(Restart::Permanent, false));
        assert!(!wants_restart(Restart::Transient, true));
        assert!(wants_restart(Restart::Transient, false));
        assert!(!wants_restart(Restart::Temporary, false));
    }
}
