//! The policy language (README "Policy"): TOML rules that narrow what scope and tier grant. The
//! server evaluates them on every request it enforces them for; the CLI parses the same text to
//! test a policy before it is set and to show what a change would weaken. One crate, so that
//! `policy test` on a laptop and the server's decision can never disagree.
//!
//! - [`Policy::parse`] validates a whole document and reports every problem at once.
//! - [`Policy::decide`] is the evaluation: `deny` beats every other match, then
//!   `require_presence`, then `require_approval`; `allow` changes nothing (it documents, and
//!   `explain` names it); no match means what scope and tier give.
//! - [`cases`] runs a file of test cases; [`change`] compares two versions.
//!
//! Time and usage counts are passed in: evaluation reads no clock and no database.

mod action;
pub mod cases;
pub mod change;
mod decide;
mod index;
mod rule;
mod window;

pub use action::{Action, Effect};
pub use decide::{AgentNames, Decision, Input, Outcome};
pub use rule::{POLICY_TEXT_MAX, Policy, Problems, RULES_MAX, Rule, RuleSource};
pub use window::{Rate, RateWindow};

#[cfg(test)]
mod readme {
    /// The README's examples parse, decide as it says, and its test case passes.
    #[test]
    fn the_readme_examples_are_valid() {
        let readme = include_str!("../../../README.md");
        let section = &readme[readme.find("## Policy").expect("a Policy section")..];
        let blocks: Vec<&str> = section.split("```toml\n").skip(1).map(|b| &b[..b.find("```").unwrap()]).collect();
        let policy = crate::Policy::parse(blocks[0]).unwrap_or_else(|p| panic!("README policy: {p}"));
        assert_eq!(policy.rules().len(), 4);
        let cases = crate::cases::parse(blocks[1], jiff::Timestamp::UNIX_EPOCH).unwrap();
        let resolve =
            |name: &str| crate::cases::KnownAgent { id: name.into(), label: name.into(), aliases: Vec::new() };
        let mismatches = crate::cases::run(&policy, &cases, resolve);
        assert!(mismatches.is_empty(), "{mismatches:?}");
    }
}
