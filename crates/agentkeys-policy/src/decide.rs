//! Evaluation: every rule that matches a request, and the one that decides it. Matching a rate
//! needs the agent's recent uses, which only the server's log knows; the caller first asks
//! [`Policy::rate_windows`] which counts the request needs (none for most), then passes them.

use jiff::Timestamp;

use crate::action::{Action, Effect};
use crate::rule::{Policy, Rule};
use crate::window::RateWindow;

/// The names an agent is known by: a rule's `agents` glob matches any of them.
#[derive(Debug, Clone, Copy)]
pub struct AgentNames<'a> {
    pub id: &'a str,
    pub label: &'a str,
    pub aliases: &'a [String],
}

impl<'a> AgentNames<'a> {
    /// Every name: id, label, aliases.
    fn all(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        [self.id, self.label].into_iter().chain(self.aliases.iter().map(String::as_str))
    }
}

/// A request, as rules see it.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub action: Action,
    /// The agent making (or, for the owner's operations, concerned by) the request.
    pub agent: Option<AgentNames<'a>>,
    /// The service it is about; `None` for `list`.
    pub service: Option<&'a str>,
    pub at: Timestamp,
}

/// What the policy says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No rule restricts it: what scope and tier give.
    Allow,
    Deny,
    RequireApproval,
    RequirePresence,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::RequireApproval => "require_approval",
            Outcome::RequirePresence => "require_presence",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Outcome::Allow, Outcome::Deny, Outcome::RequireApproval, Outcome::RequirePresence]
            .into_iter()
            .find(|outcome| outcome.as_str() == text)
    }
}

/// The decision and the rule that made it (`None` when no rule matched).
#[derive(Debug, Clone, Copy)]
pub struct Decision<'p> {
    pub outcome: Outcome,
    pub rule: Option<&'p Rule>,
}

impl Rule {
    /// Action, service and time: everything that needs no look-up (`service_hit`: one of its
    /// service globs matched).
    fn matches_but_agents(&self, input: &Input<'_>, service_hit: bool) -> bool {
        self.actions.iter().any(|action| action.covers(input.action))
            && (self.services.is_none() || service_hit)
            && self.window.as_ref().is_none_or(|window| window.contains(input.at))
    }
}

impl Policy {
    /// The rules that match a request, but for their rates, in order.
    fn matching<'p>(&'p self, input: &Input<'_>) -> impl Iterator<Item = &'p Rule> {
        let hits = self.index.hits(self.rules.len(), input.service, input.agent.iter().flat_map(AgentNames::all));
        self.rules.iter().enumerate().filter_map(move |(position, rule)| {
            let agents_match = rule.agents.is_none() || hits.agents[position];
            (agents_match && rule.matches_but_agents(input, hits.services[position])).then_some(rule)
        })
    }

    /// Whether deciding this request (given without aliases) needs the agent's aliases: only when
    /// a rule that matches it otherwise names agents its id and label do not match. The server
    /// looks aliases up only then, so a policy naming other agents costs a read nothing.
    pub fn needs_aliases(&self, input: &Input<'_>) -> bool {
        let Some(agent) = input.agent else { return false };
        let hits = self.index.hits(self.rules.len(), input.service, [agent.id, agent.label]);
        self.rules.iter().enumerate().any(|(position, rule)| {
            rule.agents.is_some() && !hits.agents[position] && rule.matches_but_agents(input, hits.services[position])
        })
    }

    /// The spans whose use counts [`Policy::decide`] will need for this request.
    pub fn rate_windows(&self, input: &Input<'_>) -> Vec<RateWindow> {
        let mut windows: Vec<RateWindow> =
            self.matching(input).filter_map(|rule| rule.rate.map(|rate| rate.per)).collect();
        windows.sort();
        windows.dedup();
        windows
    }

    /// Decides a request. `uses(span)` is how many times this agent used this service (with
    /// this action's kind) in the span before now; it is only asked for spans
    /// [`Policy::rate_windows`] named.
    pub fn decide(&self, input: &Input<'_>, uses: impl Fn(RateWindow) -> u64) -> Decision<'_> {
        let mut best: Option<&Rule> = None;
        for rule in self.matching(input) {
            if let Some(rate) = rule.rate
                && uses(rate.per) < u64::from(rate.count)
            {
                continue;
            }
            // The first rule of the strongest effect decides (rules are shown in that order).
            if best.is_none_or(|best| rule.effect.rank() > best.effect.rank()) {
                best = Some(rule);
            }
            if rule.effect == Effect::Deny {
                break;
            }
        }
        let outcome = match best.map(Rule::effect) {
            None | Some(Effect::Allow) => Outcome::Allow,
            Some(Effect::Deny) => Outcome::Deny,
            Some(Effect::RequireApproval) => Outcome::RequireApproval,
            Some(Effect::RequirePresence) => Outcome::RequirePresence,
        };
        Decision { outcome, rule: best }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
[[rule]]
name = "docs"
services = ["*"]
effect = "allow"

[[rule]]
name = "approve-prod"
services = ["prod-*"]
effect = "require_approval"

[[rule]]
name = "no-prod-at-night"
agents = ["build-*"]
services = ["prod-*"]
actions = ["read", "run"]
hours = "20:00-07:00"
tz = "Europe/Berlin"
effect = "deny"

[[rule]]
name = "slow-down"
agents = ["ag_fast"]
rate = "30/h"
effect = "deny"
"#;

    fn input<'a>(agent: &'a AgentNames<'a>, service: &'a str, at: &str) -> Input<'a> {
        Input { action: Action::Read, agent: Some(*agent), service: Some(service), at: at.parse().unwrap() }
    }

    #[test]
    fn deny_beats_approval_and_allow_and_names_its_rule() {
        let policy = Policy::parse(POLICY).unwrap();
        let bot = AgentNames { id: "ag_1", label: "build-bot", aliases: &[] };
        let none = |_| 0;
        let night = policy.decide(&input(&bot, "prod-db", "2026-12-01T22:00:00Z"), none);
        assert_eq!((night.outcome, night.rule.unwrap().name()), (Outcome::Deny, "no-prod-at-night"));
        let day = policy.decide(&input(&bot, "prod-db", "2026-12-01T12:00:00Z"), none);
        assert_eq!((day.outcome, day.rule.unwrap().name()), (Outcome::RequireApproval, "approve-prod"));
        let other = policy.decide(&input(&bot, "github", "2026-12-01T22:00:00Z"), none);
        assert_eq!((other.outcome, other.rule.unwrap().name()), (Outcome::Allow, "docs"));
        let list = Input { action: Action::List, agent: Some(bot), service: None, at: Timestamp::UNIX_EPOCH };
        assert!(policy.decide(&list, none).rule.is_none());
        // `run` and `read` are one action to the server.
        let run = Input { action: Action::Run, ..input(&bot, "prod-db", "2026-12-01T22:00:00Z") };
        assert_eq!(policy.decide(&run, none).outcome, Outcome::Deny);
        // An agent is matched by its alias as well as its label and id.
        let aliases = ["build-ci".to_owned()];
        let aliased = AgentNames { id: "ag_9", label: "ci", aliases: &aliases };
        assert_eq!(policy.decide(&input(&aliased, "prod-db", "2026-12-01T22:00:00Z"), none).outcome, Outcome::Deny);
    }

    #[test]
    fn a_rate_matches_once_the_uses_reach_it() {
        let policy = Policy::parse(POLICY).unwrap();
        let fast = AgentNames { id: "ag_fast", label: "fast", aliases: &[] };
        let request = input(&fast, "github", "2026-12-01T12:00:00Z");
        assert_eq!(policy.rate_windows(&request), vec![RateWindow::Hour]);
        assert_eq!(policy.decide(&request, |_| 29).outcome, Outcome::Allow);
        let over = policy.decide(&request, |_| 30);
        assert_eq!((over.outcome, over.rule.unwrap().name()), (Outcome::Deny, "slow-down"));
        let slow = AgentNames { id: "ag_slow", label: "slow", aliases: &[] };
        // Aliases matter only where a rule matches but for its agents: `ag_fast` may be an alias.
        assert!(policy.needs_aliases(&input(&slow, "github", "2026-12-01T12:00:00Z")));
        let without_slow_down = Policy::parse(POLICY.split("[[rule]]\nname = \"slow-down\"").next().unwrap()).unwrap();
        let is_needed = |service, at| without_slow_down.needs_aliases(&input(&slow, service, at));
        assert!(is_needed("prod-db", "2026-12-01T22:00:00Z"), "build-* may be an alias");
        assert!(!is_needed("prod-db", "2026-12-01T12:00:00Z"), "outside the hours");
        assert!(!is_needed("github", "2026-12-01T22:00:00Z"), "another service");
        let build = AgentNames { id: "ag_2", label: "build-2", aliases: &[] };
        assert!(
            !without_slow_down.needs_aliases(&input(&build, "prod-db", "2026-12-01T22:00:00Z")),
            "matched by label"
        );
        assert!(policy.rate_windows(&input(&slow, "github", "2026-12-01T12:00:00Z")).is_empty());
    }

    #[test]
    fn the_owners_operations_are_decided_by_presence_rules() {
        let policy = Policy::parse(
            "[[rule]]\nname = \"guard-prod\"\nservices = [\"prod-*\"]\nactions = [\"scope.add\", \"store\"]\neffect = \"require_presence\"\n\n\
             [[rule]]\nname = \"policy-in-person\"\nactions = [\"policy.set\"]\neffect = \"require_presence\"\n",
        )
        .unwrap();
        let bot = AgentNames { id: "ag_1", label: "bot", aliases: &[] };
        let ask = |action, service| Input { action, agent: Some(bot), service, at: Timestamp::UNIX_EPOCH };
        let decided = |input: Input<'_>| {
            let decision = policy.decide(&input, |_| 0);
            (decision.outcome, decision.rule.map(|rule| rule.name().to_owned()))
        };
        let guarded = (Outcome::RequirePresence, Some("guard-prod".to_owned()));
        assert_eq!(decided(ask(Action::ScopeAdd, Some("prod-db"))), guarded);
        assert_eq!(decided(Input { agent: None, ..ask(Action::Store, Some("prod-db")) }), guarded);
        assert_eq!(decided(ask(Action::ScopeAdd, Some("github"))), (Outcome::Allow, None));
        assert_eq!(decided(ask(Action::Rm, Some("prod-db"))), (Outcome::Allow, None), "rm is not named");
        assert_eq!(decided(ask(Action::Read, Some("prod-db"))), (Outcome::Allow, None), "an agent's read is not");
        let set = Input { action: Action::PolicySet, agent: None, service: None, at: Timestamp::UNIX_EPOCH };
        assert_eq!(decided(set).0, Outcome::RequirePresence);
    }
}
