//! A policy document: its TOML form (every field checked, unknown ones refused) and the compiled
//! rules evaluation uses (globs built once, the time zone looked up once).

use std::collections::BTreeSet;
use std::fmt;

use globset::GlobBuilder;
use serde::Deserialize;

use crate::action::{Action, Effect};
use crate::index::{GlobIndex, NameGlob, RuleGlobs};
use crate::window::{Rate, TimeWindow, parse_days, parse_hours, parse_tz};

/// Longest policy text the server stores, in bytes (the request body limit is 64 KiB).
pub const POLICY_TEXT_MAX: usize = 60 * 1024;

/// Most rules in one policy.
pub const RULES_MAX: usize = 1000;

/// A policy file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    rule: Vec<RuleSource>,
}

/// One `[[rule]]`, as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSource {
    pub name: String,
    pub agents: Option<Vec<String>>,
    pub services: Option<Vec<String>>,
    pub actions: Option<Vec<String>>,
    pub hours: Option<String>,
    pub days: Option<Vec<String>>,
    pub tz: Option<String>,
    pub rate: Option<String>,
    pub effect: String,
}

/// Every problem found in a policy, each naming its rule and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<String>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}

/// A validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub(crate) source: RuleSource,
    pub(crate) agents: Option<Vec<NameGlob>>,
    pub(crate) services: Option<Vec<NameGlob>>,
    /// The actions it matches: those it names, or every action its effect applies to.
    pub(crate) actions: BTreeSet<Action>,
    pub(crate) window: Option<TimeWindow>,
    pub(crate) rate: Option<Rate>,
    pub(crate) effect: Effect,
}

impl Rule {
    pub fn name(&self) -> &str {
        &self.source.name
    }

    pub fn effect(&self) -> Effect {
        self.effect
    }

    pub fn source(&self) -> &RuleSource {
        &self.source
    }

    pub fn rate(&self) -> Option<Rate> {
        self.rate
    }

    /// The rule as TOML, for `explain` and `policy set`'s list of changes.
    pub fn to_toml(&self) -> String {
        let mut out = format!("[[rule]]\nname = {}\n", quote(&self.source.name));
        let list = |items: &[String]| format!("[{}]", items.iter().map(|i| quote(i)).collect::<Vec<_>>().join(", "));
        for (key, value) in [
            ("agents", self.source.agents.as_deref().map(list)),
            ("services", self.source.services.as_deref().map(list)),
            ("actions", self.source.actions.as_deref().map(list)),
            ("hours", self.source.hours.as_deref().map(quote)),
            ("days", self.source.days.as_deref().map(list)),
            ("tz", self.source.tz.as_deref().map(quote)),
            ("rate", self.source.rate.as_deref().map(quote)),
            ("effect", Some(quote(&self.source.effect))),
        ] {
            if let Some(value) = value {
                out.push_str(&format!("{key} = {value}\n"));
            }
        }
        out
    }

    /// What the rule means, independent of its name and spelling: two rules with the same
    /// meaning match the same requests with the same effect.
    pub(crate) fn meaning(&self) -> String {
        format!("{}|{:?}|{}", self.match_key(), self.actions, self.effect)
    }

    /// What it matches besides the action: agents, services, window and rate.
    pub(crate) fn match_key(&self) -> String {
        let sorted = |globs: &Option<Vec<NameGlob>>| {
            globs.as_ref().map(|globs| globs.iter().map(|g| g.text.clone()).collect::<BTreeSet<_>>())
        };
        format!(
            "{:?}|{:?}|{:?}|{:?}|{}|{:?}",
            sorted(&self.agents),
            sorted(&self.services),
            self.window.as_ref().map(|w| w.hours),
            self.window.as_ref().map(|w| w.days),
            self.window.as_ref().map_or("", |w| w.tz_name.as_str()),
            self.rate,
        )
    }
}

fn quote(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// A validated policy: its text (as stored and shown) and its rules in order.
#[derive(Debug, Clone)]
pub struct Policy {
    text: String,
    pub(crate) rules: Vec<Rule>,
    pub(crate) index: GlobIndex,
}

impl Policy {
    /// No rules: what scope and tier give.
    pub fn empty() -> Self {
        Self { text: String::new(), rules: Vec::new(), index: GlobIndex::empty() }
    }

    /// Parses and validates a policy, reporting every problem found.
    pub fn parse(text: &str) -> Result<Self, Problems> {
        if text.len() > POLICY_TEXT_MAX {
            return Err(Problems(vec![format!(
                "the policy is {} bytes, over the {POLICY_TEXT_MAX}-byte limit; merge rules with globs",
                text.len()
            )]));
        }
        let file: PolicyFile = toml::from_str(text).map_err(|error| {
            Problems(vec![format!("not a valid policy file: {}", error.to_string().trim_end().replace('\n', " "))])
        })?;
        if file.rule.len() > RULES_MAX {
            return Err(Problems(vec![format!(
                "the policy has {} rules, over the limit of {RULES_MAX}; merge rules with globs",
                file.rule.len()
            )]));
        }
        let mut problems = Vec::new();
        let mut names = BTreeSet::new();
        let mut rules = Vec::with_capacity(file.rule.len());
        for source in file.rule {
            if !names.insert(source.name.clone()) {
                problems.push(format!("rule '{}': the name is used twice; rule names must be unique", source.name));
            }
            match compile(source) {
                Ok(rule) => rules.push(rule),
                Err((name, found)) => problems.extend(found.into_iter().map(|p| format!("rule '{name}': {p}"))),
            }
        }
        if !problems.is_empty() {
            return Err(Problems(problems));
        }
        let globs: Vec<RuleGlobs<'_>> = rules
            .iter()
            .map(|rule| RuleGlobs { services: rule.services.as_deref(), agents: rule.agents.as_deref() })
            .collect();
        let index = GlobIndex::build(&globs).map_err(|error| {
            Problems(vec![format!("the rules' globs are too many or too complex to combine ({error}); merge rules")])
        })?;
        Ok(Self { text: text.to_owned(), rules, index })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|rule| rule.name() == name)
    }
}

fn compile(source: RuleSource) -> Result<Rule, (String, Vec<String>)> {
    let mut problems = Vec::new();
    let name = source.name.clone();
    if name.is_empty() || name.chars().count() > 64 || agentkeys_proto::names::validate_display_text(&name, 64).is_err()
    {
        problems.push("the name must be 1 to 64 visible characters".to_owned());
    }
    let effect = Effect::parse(&source.effect);
    if effect.is_none() {
        problems.push(format!(
            "effect '{}' is not one of {}",
            source.effect,
            Effect::ALL.map(Effect::as_str).join(", ")
        ));
    }
    let agents = source.agents.as_deref().map(|globs| name_globs("agents", globs, &mut problems));
    let services = source.services.as_deref().map(|globs| name_globs("services", globs, &mut problems));
    let mut actions = BTreeSet::new();
    if let Some(listed) = &source.actions {
        if listed.is_empty() {
            problems.push("actions is empty, so the rule never matches; leave it out for every action".to_owned());
        }
        for text in listed {
            match Action::parse(text) {
                Some(action) => {
                    if !actions.insert(action) {
                        problems.push(format!("action '{text}' is listed twice"));
                    }
                    if let Some(effect) = effect.filter(|effect| !effect.applies_to(action)) {
                        problems.push(format!("{effect} does not apply to '{action}'; {}", applies_hint(effect)));
                    }
                }
                None => problems
                    .push(format!("action '{text}' is not one of {}", Action::ALL.map(Action::as_str).join(", "))),
            }
        }
    } else if let Some(effect) = effect {
        // A rate counts an agent's reads: a rule with one and no actions is about reads alone.
        actions = Action::ALL
            .into_iter()
            .filter(|action| effect.applies_to(*action) && (source.rate.is_none() || action.counted()))
            .collect();
        if actions.is_empty() {
            problems.push(format!("{effect} applies to no action the server checks yet; {}", applies_hint(effect)));
        }
    }
    if services.is_some() && !actions.is_empty() && actions.iter().all(|action| !action.has_service()) {
        problems.push(format!(
            "services can never match {} (no service is named); drop services or add an action about one",
            quoted_list(&actions)
        ));
    }
    if agents.is_some() && !actions.is_empty() && actions.iter().all(|action| !action.has_agent()) {
        problems.push(format!(
            "agents can never match {} (no agent is concerned); drop agents or add an action about one",
            quoted_list(&actions)
        ));
    }
    let hours = source.hours.as_deref().map(parse_hours).transpose().unwrap_or_else(|p| {
        problems.push(p);
        None
    });
    let days = source.days.as_deref().map(parse_days).transpose().unwrap_or_else(|p| {
        problems.push(p);
        None
    });
    let tz_name = source.tz.clone().unwrap_or_else(|| "UTC".to_owned());
    let tz = parse_tz(&tz_name).map_err(|p| problems.push(p)).ok();
    if source.tz.is_some() && source.hours.is_none() && source.days.is_none() {
        problems.push("tz is set but there are no hours or days for it to apply to".to_owned());
    }
    let rate = source.rate.as_deref().map(Rate::parse).transpose().unwrap_or_else(|p| {
        problems.push(p);
        None
    });
    if rate.is_some() && actions.iter().any(|action| !action.counted()) {
        problems.push("a rate counts an agent's reads of a service; name only read and run".to_owned());
    }
    if !problems.is_empty() {
        return Err((name, problems));
    }
    let (Some(effect), Some(tz)) = (effect, tz) else { unreachable!("a missing effect or time zone is a problem") };
    let window = (hours.is_some() || days.is_some()).then(|| TimeWindow { hours, days, tz, tz_name });
    Ok(Rule { source, agents, services, actions, window, rate, effect })
}

fn quoted_list(actions: &BTreeSet<Action>) -> String {
    actions.iter().map(|action| format!("'{action}'")).collect::<Vec<_>>().join(", ")
}

fn applies_hint(effect: Effect) -> &'static str {
    match effect {
        Effect::RequireApproval => "it applies to an agent's read and run",
        Effect::RequirePresence => {
            "it applies to the owner's operations (approve, scope.add, store, rm, config.set, agent.create, \
             agent.upgrade, revoke, teardown, policy.set)"
        }
        Effect::Deny => {
            "it applies to an agent's actions; to guard an owner's operation use require_presence (a deny could \
             lock the owner out)"
        }
        Effect::Allow => "it applies to every action",
    }
}

/// Characters a name can hold (the service-name rule, which agent labels and aliases share).
fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn name_globs(field: &str, texts: &[String], problems: &mut Vec<String>) -> Vec<NameGlob> {
    if texts.is_empty() {
        problems.push(format!("{field} is empty, so the rule never matches; leave it out to match all"));
    }
    let mut globs = Vec::new();
    for text in texts {
        // Outside `[…]` classes, a literal a name cannot hold means the glob matches nothing.
        let mut in_class = false;
        let impossible = text.chars().find(|&c| {
            match c {
                '[' => in_class = true,
                ']' => in_class = false,
                '*' | '?' | '{' | '}' | ',' | '!' | '^' => {}
                c if !in_class && !name_char(c) => return true,
                _ => {}
            }
            false
        });
        if let Some(c) = impossible {
            problems.push(format!(
                "{field} glob '{text}' can never match: names hold only letters, digits, '.', '_' and '-', not {c:?}"
            ));
            continue;
        }
        match GlobBuilder::new(text).literal_separator(false).backslash_escape(false).build() {
            Ok(glob) => globs.push(NameGlob { text: text.clone(), glob }),
            Err(error) => problems.push(format!("{field} glob '{text}' is not a valid glob: {}", error.kind())),
        }
    }
    globs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        Policy::parse(text).expect_err("the policy should be refused").0
    }

    #[test]
    fn every_problem_is_reported_with_its_rule() {
        let found = problems(
            r#"
[[rule]]
name = "a"
tz = "Europe/Berln"
hours = "20:00-07:00"
effect = "deny"

[[rule]]
name = "a"
services = ["prod db"]
effect = "forbid"
"#,
        );
        assert!(found.iter().any(|p| p.contains("rule 'a': time zone 'Europe/Berln'")), "{found:?}");
        assert!(found.iter().any(|p| p.contains("the name is used twice")), "{found:?}");
        assert!(found.iter().any(|p| p.contains("effect 'forbid'")), "{found:?}");
        assert!(found.iter().any(|p| p.contains("can never match") && p.contains("' '")), "{found:?}");
    }

    #[test]
    fn unknown_fields_and_syntax_errors_name_the_place() {
        let found = problems("[[rule]]\nname = \"x\"\neffect = \"deny\"\nagent = [\"bot\"]\n");
        assert!(found[0].contains("unknown field `agent`"), "{found:?}");
        let found = problems("[[rule]\nname = \"x\"\n");
        assert!(found[0].contains("line 1"), "{found:?}");
        let found = problems("[[rules]]\nname = \"x\"\n");
        assert!(found[0].contains("unknown field `rules`"), "{found:?}");
    }

    #[test]
    fn rules_that_can_never_match_are_refused() {
        for (text, expected) in [
            ("services = []", "services is empty"),
            ("actions = []", "actions is empty"),
            ("days = []", "days is empty"),
            ("hours = \"09:00-09:00\"", "is empty"),
            ("actions = [\"peek\"]", "action 'peek' is not one of read, run, list, request, approve"),
            ("actions = [\"list\"]\nservices = [\"x\"]", "services can never match 'list'"),
            ("actions = [\"list\", \"request\"]\nrate = \"1/h\"", "a rate counts an agent's reads"),
            ("agents = [\"bot/1\"]", "can never match"),
            ("services = [\"[a-\"]", "not a valid glob"),
            ("tz = \"UTC\"", "no hours or days"),
        ] {
            let found = problems(&format!("[[rule]]\nname = \"r\"\neffect = \"deny\"\n{text}\n"));
            assert!(found.iter().any(|p| p.contains(expected)), "{text}: {found:?}");
        }
    }

    #[test]
    fn the_owners_operations_can_only_require_presence() {
        for (rule, expected) in [
            ("actions = [\"scope.add\"]\neffect = \"deny\"", "deny does not apply to 'scope.add'"),
            ("actions = [\"policy.set\"]\neffect = \"require_approval\"", "does not apply to 'policy.set'"),
            ("actions = [\"store\"]\nrate = \"3/h\"\neffect = \"require_presence\"", "a rate counts"),
            ("actions = [\"config.set\"]\nservices = [\"x\"]\neffect = \"require_presence\"", "services can never"),
            ("actions = [\"policy.set\"]\nagents = [\"x\"]\neffect = \"require_presence\"", "agents can never"),
        ] {
            let found = problems(&format!("[[rule]]\nname = \"r\"\n{rule}\n"));
            assert!(found.iter().any(|p| p.contains(expected)), "{rule}: {found:?}");
        }
        // Without actions, an effect covers every action it applies to: presence the owner's,
        // a deny (or a rate) an agent's.
        let covered = |rule: &str| {
            Policy::parse(&format!("[[rule]]\nname = \"r\"\n{rule}\n")).unwrap().rules()[0].actions.clone()
        };
        assert!(covered("effect = \"require_presence\"").iter().all(|action| !action.by_agent()));
        assert_eq!(covered("effect = \"require_presence\"").len(), 10);
        assert!(covered("effect = \"deny\"").iter().all(|action| action.by_agent()));
        assert!(covered("effect = \"allow\"\nrate = \"9/h\"").iter().all(|action| action.counted()));
    }

    #[test]
    fn a_valid_policy_keeps_its_text_and_prints_its_rules() {
        let text = "# night\n[[rule]]\nname = \"no-prod-at-night\"\nagents = [\"build-*\"]\nservices = [\"prod-*\"]\nactions = [\"read\", \"run\"]\nhours = \"20:00-07:00\"\ntz = \"Europe/Berlin\"\neffect = \"deny\"\n";
        let policy = Policy::parse(text).unwrap();
        assert_eq!(policy.text(), text);
        let rule = policy.rule("no-prod-at-night").unwrap();
        assert_eq!(Policy::parse(&rule.to_toml()).unwrap().rules()[0].meaning(), rule.meaning());
        assert!(Policy::parse("").unwrap().rules().is_empty());
    }
}
