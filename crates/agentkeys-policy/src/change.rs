//! What a new policy changes, and whether it weakens the old one: every restricting rule
//! (`deny`, `require_approval`, `require_presence`) the old policy has must still be there with
//! the same meaning (or a stronger effect), or the change is critical. This is deliberately
//! conservative: narrowing a restricting rule's match counts as loosening it, because telling a
//! narrower rule from a looser one in general is not decidable from the text alone.

use crate::action::Effect;
use crate::rule::{Policy, Rule};

/// The differences between two policies, by rule name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    /// Why the change weakens the policy, one line per loosened rule; empty when it does not.
    pub weakens: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Compares `new` with `old`.
pub fn compare(old: &Policy, new: &Policy) -> Changes {
    let mut changes = Changes::default();
    for rule in new.rules() {
        match old.rule(rule.name()) {
            None => changes.added.push(rule.name().to_owned()),
            Some(before) if before.meaning() != rule.meaning() => changes.changed.push(rule.name().to_owned()),
            Some(_) => {}
        }
    }
    for rule in old.rules() {
        if new.rule(rule.name()).is_none() {
            changes.removed.push(rule.name().to_owned());
        }
    }
    for rule in old.rules().iter().filter(|rule| rule.effect().restricts()) {
        if new.rules().iter().any(|kept| keeps(rule, kept)) {
            continue;
        }
        let how = match new.rule(rule.name()) {
            None => "removes",
            Some(_) => "loosens",
        };
        changes.weakens.push(format!("{how} {} rule '{}'", rule.effect(), rule.name()));
    }
    changes
}

/// Whether `kept` restricts what `rule` did at least as strongly: the same match on at least
/// the same actions, with the same effect or `deny`.
fn keeps(rule: &Rule, kept: &Rule) -> bool {
    let strong_enough = kept.effect() == rule.effect() || kept.effect() == Effect::Deny;
    strong_enough && kept.match_key() == rule.match_key() && kept.actions.is_superset(&rule.actions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: &[(&str, &str)]) -> Policy {
        let text: String = rules
            .iter()
            .map(|(name, body)| format!("[[rule]]\nname = \"{name}\"\n{body}\n"))
            .collect::<Vec<_>>()
            .join("\n");
        Policy::parse(&text).unwrap()
    }

    #[test]
    fn removing_or_loosening_a_restriction_weakens_and_adding_one_does_not() {
        let deny = "services = [\"prod-*\"]\neffect = \"deny\"";
        let old = policy(&[("night", deny)]);
        assert!(compare(&old, &policy(&[("night", deny), ("doc", "effect = \"allow\"")])).weakens.is_empty());
        assert!(compare(&old, &policy(&[("renamed", deny)])).weakens.is_empty(), "a rename keeps the rule");
        assert!(compare(&Policy::empty(), &old).weakens.is_empty());
        let removed = compare(&old, &Policy::empty());
        assert_eq!(removed.weakens, vec!["removes deny rule 'night'"]);
        assert_eq!(removed.removed, vec!["night"]);
        let widened = compare(&old, &policy(&[("night", "services = [\"prod-db\"]\neffect = \"deny\"")]));
        assert_eq!(widened.weakens, vec!["loosens deny rule 'night'"]);
        assert_eq!(widened.changed, vec!["night"]);
        let softer = compare(&old, &policy(&[("night", "services = [\"prod-*\"]\neffect = \"require_approval\"")]));
        assert_eq!(softer.weakens, vec!["loosens deny rule 'night'"]);
        let approval = policy(&[("ask", "services = [\"prod-*\"]\neffect = \"require_approval\"")]);
        assert!(compare(&approval, &old).weakens.is_empty(), "approval to deny is stronger");
    }
}
