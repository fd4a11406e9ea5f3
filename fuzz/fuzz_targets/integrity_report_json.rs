//! `POST /v1/integrity-reports` and `POST /v1/account/statements` as the server decodes them
//! from any signed client: no panic, and an accepted body serializes and decodes again.
#![no_main]

use agentkeys_proto::grant::IntegrityReport;
use agentkeys_proto::statement::AccountStatement;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(report) = serde_json::from_slice::<IntegrityReport>(data) {
        let again: IntegrityReport = serde_json::from_slice(&serde_json::to_vec(&report).unwrap()).unwrap();
        assert_eq!((again.finding, again.version, again.seen), (report.finding, report.version, report.seen));
    }
    if let Ok(statement) = serde_json::from_slice::<AccountStatement>(data) {
        let again: AccountStatement = serde_json::from_slice(&serde_json::to_vec(&statement).unwrap()).unwrap();
        assert_eq!(again, statement);
    }
});
