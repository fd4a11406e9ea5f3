//! `policy test`: a TOML file of cases (`[[case]]` with agent, service, action, at, expect) run
//! against a policy, like `sentinel test`. Each case that decides otherwise is a mismatch.

use jiff::Timestamp;
use serde::Deserialize;

use crate::action::Action;
use crate::decide::{AgentNames, Input, Outcome};
use crate::rule::{Policy, Problems};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesFile {
    #[serde(default)]
    case: Vec<CaseSource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseSource {
    name: Option<String>,
    agent: Option<String>,
    service: Option<String>,
    action: String,
    at: Option<String>,
    uses: Option<u64>,
    expect: String,
    rule: Option<String>,
}

/// One case.
#[derive(Debug, Clone)]
pub struct Case {
    /// Its name, or `case N` (from 1).
    pub name: String,
    pub agent: Option<String>,
    pub service: Option<String>,
    pub action: Action,
    pub at: Timestamp,
    /// The agent's earlier uses of the service within any rate's span.
    pub uses: u64,
    pub expect: Outcome,
    /// The rule expected to decide, when the case names one.
    pub rule: Option<String>,
}

/// Parses a cases file; `now` is the instant of cases without `at`.
pub fn parse(text: &str, now: Timestamp) -> Result<Vec<Case>, Problems> {
    let file: CasesFile = toml::from_str(text).map_err(|error| {
        Problems(vec![format!("not a valid cases file: {}", error.to_string().trim_end().replace('\n', " "))])
    })?;
    if file.case.is_empty() {
        return Err(Problems(vec!["the file has no [[case]]; add at least one".to_owned()]));
    }
    let mut problems = Vec::new();
    let mut cases = Vec::new();
    for (index, source) in file.case.into_iter().enumerate() {
        let name = source.name.clone().unwrap_or_else(|| format!("case {}", index + 1));
        let action = Action::parse(&source.action);
        if action.is_none() {
            problems.push(format!(
                "{name}: action '{}' is not one of {}",
                source.action,
                Action::ALL.map(Action::as_str).join(", ")
            ));
        }
        let expect = Outcome::parse(&source.expect);
        if expect.is_none() {
            problems.push(format!(
                "{name}: expect '{}' is not one of allow, deny, require_approval, require_presence",
                source.expect
            ));
        }
        let at = match source.at.as_deref().map(str::parse::<Timestamp>).transpose() {
            Ok(at) => at.unwrap_or(now),
            Err(_) => {
                problems.push(format!(
                    "{name}: at '{}' is not an RFC 3339 time with an offset (e.g. \"2026-12-01T22:00:00+01:00\")",
                    source.at.as_deref().unwrap_or_default()
                ));
                now
            }
        };
        if let (Some(action), Some(expect)) = (action, expect) {
            cases.push(Case {
                name,
                agent: source.agent,
                service: source.service,
                action,
                at,
                uses: source.uses.unwrap_or(0),
                expect,
                rule: source.rule,
            });
        }
    }
    if problems.is_empty() { Ok(cases) } else { Err(Problems(problems)) }
}

/// The names an agent in a case is known by (the account's agents list, where it is one of them).
#[derive(Debug, Clone, Default)]
pub struct KnownAgent {
    pub id: String,
    pub label: String,
    pub aliases: Vec<String>,
}

/// A case the policy decided otherwise.
#[derive(Debug, Clone)]
pub struct Mismatch {
    pub case: String,
    pub expected: String,
    pub got: String,
}

/// Runs every case; `resolve` gives the names of a case's agent.
pub fn run(policy: &Policy, cases: &[Case], resolve: impl Fn(&str) -> KnownAgent) -> Vec<Mismatch> {
    let mut mismatches = Vec::new();
    for case in cases {
        let known = case.agent.as_deref().map(&resolve);
        let input = Input {
            action: case.action,
            agent: known.as_ref().map(|k| AgentNames { id: &k.id, label: &k.label, aliases: &k.aliases }),
            service: case.service.as_deref(),
            at: case.at,
        };
        let decision = policy.decide(&input, |_| case.uses);
        let got_rule = decision.rule.map(|rule| rule.name().to_owned());
        let rule_differs = case.rule.is_some() && case.rule != got_rule;
        if decision.outcome != case.expect || rule_differs {
            let describe = |outcome: Outcome, rule: Option<&str>| match rule {
                Some(rule) => format!("{} (rule {rule})", outcome.as_str()),
                None => format!("{} (no rule matched)", outcome.as_str()),
            };
            mismatches.push(Mismatch {
                case: case.name.clone(),
                expected: match &case.rule {
                    Some(rule) => format!("{} (rule {rule})", case.expect.as_str()),
                    None => case.expect.as_str().to_owned(),
                },
                got: describe(decision.outcome, got_rule.as_deref()),
            });
        }
    }
    mismatches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_pass_and_fail_with_what_was_expected() {
        let policy = Policy::parse(
            "[[rule]]\nname = \"night\"\nservices = [\"prod-*\"]\nhours = \"20:00-07:00\"\neffect = \"deny\"\n",
        )
        .unwrap();
        let cases = parse(
            r#"
[[case]]
name = "night read"
agent = "bot"
service = "prod-db"
action = "read"
at = "2026-12-01T22:00:00Z"
expect = "deny"
rule = "night"

[[case]]
agent = "bot"
service = "prod-db"
action = "read"
at = "2026-12-01T12:00:00+01:00"
expect = "deny"
"#,
            Timestamp::UNIX_EPOCH,
        )
        .unwrap();
        let known = |name: &str| KnownAgent { id: format!("ag_{name}"), label: name.to_owned(), aliases: Vec::new() };
        let mismatches = run(&policy, &cases, known);
        assert_eq!(mismatches.len(), 1);
        assert_eq!(mismatches[0].case, "case 2");
        assert_eq!(mismatches[0].got, "allow (no rule matched)");
    }

    #[test]
    fn bad_cases_are_refused() {
        let problems = parse("[[case]]\naction = \"peek\"\nexpect = \"maybe\"\nat = \"noon\"\n", Timestamp::UNIX_EPOCH)
            .unwrap_err()
            .0;
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(parse("", Timestamp::UNIX_EPOCH).is_err());
        assert!(parse("[[case]]\naction = \"read\"\nexpect = \"allow\"\nextra = 1\n", Timestamp::UNIX_EPOCH).is_err());
    }
}
