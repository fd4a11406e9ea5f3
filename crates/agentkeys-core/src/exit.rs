//! The exit codes of PRODUCT.md §4, defined once: the CLI, the daemon and every error type of
//! this crate name them from here, and [`for_code`] is the one mapping from a server error code.

use agentkeys_proto::ErrorCode;

pub const OK: u8 = 0;
pub const ERROR: u8 = 1;
pub const USAGE: u8 = 2;
/// Not initialized, or the session is invalid.
pub const SESSION: u8 = 3;
/// Denied: scope, policy, tier, revoked.
pub const DENIED: u8 = 4;
pub const NOT_FOUND: u8 = 5;
/// Approval or presence declined, failed or timed out.
pub const DECLINED: u8 = 6;
pub const RATE_LIMITED: u8 = 7;
pub const UNREACHABLE: u8 = 8;
/// `run`: a child killed by signal N exits 128 + N.
pub const SIGNAL_BASE: u8 = 128;
/// `run`: the command could not be found (as a shell reports it).
pub const COMMAND_NOT_FOUND: u8 = 127;
/// `run`: the command exists but cannot be executed.
pub const CANNOT_EXECUTE: u8 = 126;

/// The exit code a command reports for a server error code.
pub fn for_code(code: ErrorCode) -> u8 {
    match code {
        ErrorCode::BadRequest
        | ErrorCode::InvalidServiceName
        | ErrorCode::PayloadTooLarge
        | ErrorCode::MethodNotAllowed => USAGE,
        // A bad clock or a replay says nothing about the session itself: exit 3 would invite
        // scripts to re-initialize, which abandons the account.
        ErrorCode::Unauthenticated | ErrorCode::SignatureInvalid | ErrorCode::SessionInvalid => SESSION,
        ErrorCode::StaleTimestamp | ErrorCode::ReplayedNonce => ERROR,
        ErrorCode::Denied | ErrorCode::Revoked => DENIED,
        ErrorCode::NotFound => NOT_FOUND,
        ErrorCode::ApprovalRequired | ErrorCode::Declined | ErrorCode::PresenceRequired => DECLINED,
        ErrorCode::RateLimited => RATE_LIMITED,
        ErrorCode::Unavailable => UNREACHABLE,
        ErrorCode::VersionConflict | ErrorCode::AlreadyExists | ErrorCode::Internal | ErrorCode::Integrity => ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_codes_follow_the_contract() {
        assert_eq!(for_code(ErrorCode::SessionInvalid), SESSION);
        assert_eq!(for_code(ErrorCode::Denied), DENIED);
        assert_eq!(for_code(ErrorCode::Revoked), DENIED);
        assert_eq!(for_code(ErrorCode::Declined), DECLINED);
        assert_eq!(for_code(ErrorCode::NotFound), NOT_FOUND);
        assert_eq!(for_code(ErrorCode::RateLimited), RATE_LIMITED);
        assert_eq!(for_code(ErrorCode::InvalidServiceName), USAGE);
        assert_eq!(for_code(ErrorCode::Unavailable), UNREACHABLE);
    }
}
