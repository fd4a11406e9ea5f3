//! An account statement as a master reads it from the server (or the server from a master):
//! the parser never panics, and what it accepts is canonical — encoding it again gives exactly
//! the bytes it read, so no two payloads mean the same statement.
#![no_main]

use agentkeys_proto::statement::Statement;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(statement) = Statement::parse(data) {
        assert_eq!(statement.payload(), data, "a parsed statement encodes back to its bytes");
    }
});
