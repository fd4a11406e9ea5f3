//! A policy document and a cases file, as `policy set` and `policy test` read them (and the
//! server reads a policy from a master's request): the parsers never panic, and a policy they
//! accept evaluates any request without panicking, its rules printed back parsing to the same
//! meaning.
#![no_main]

use agentkeys_policy::{Action, AgentNames, Input, Policy, cases};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = cases::parse(text, jiff::Timestamp::UNIX_EPOCH);
    let Ok(policy) = Policy::parse(text) else { return };
    let aliases = ["prod-db".to_owned()];
    let agent = AgentNames { id: "ag_fuzz", label: "build-bot", aliases: &aliases };
    for action in Action::ALL {
        for at in [jiff::Timestamp::UNIX_EPOCH, jiff::Timestamp::MAX, jiff::Timestamp::MIN] {
            let input = Input { action, agent: Some(agent), service: Some("prod-db"), at };
            let _ = policy.rate_windows(&input);
            let _ = policy.decide(&input, |_| u64::MAX);
        }
    }
    for rule in policy.rules() {
        let again = Policy::parse(&rule.to_toml()).expect("a rule printed back parses");
        assert_eq!(again.rules()[0].to_toml(), rule.to_toml());
    }
});
