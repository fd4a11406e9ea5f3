//! Pairing, from the daemon's side: it opens a pairing request (no session yet), polls it with
//! its poll secret, and reveals the nonce behind its OTP once a master claimed the code. The rows
//! are the approval queue's (the requests domain); the master decides there.

pub mod ops;
pub mod routes;
