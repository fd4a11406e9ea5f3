//! Every rule's globs in two sets, built once per policy: deciding a request matches its service,
//! and each of the agent's names, once against all the rules together (globset sorts the globs
//! into literal, prefix and suffix look-ups and one combined regex), not rule by rule. With 200
//! rules that is the difference between a few microseconds and some tens per request.

use globset::{Candidate, Glob, GlobSet, GlobSetBuilder};

/// A glob over names: service names, or an agent's id, label and alias.
#[derive(Debug, Clone)]
pub(crate) struct NameGlob {
    pub text: String,
    pub glob: Glob,
}

/// One rule's globs, as the index is built from them (`None`: the rule matches every name).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RuleGlobs<'a> {
    pub services: Option<&'a [NameGlob]>,
    pub agents: Option<&'a [NameGlob]>,
}

/// The rules' service globs and agent globs, each mapped back to its rule.
#[derive(Debug, Clone)]
pub(crate) struct GlobIndex {
    services: Globs,
    agents: Globs,
}

#[derive(Debug, Clone)]
struct Globs {
    set: GlobSet,
    /// The rule (its position) of each glob in `set`.
    rule_of: Vec<usize>,
}

/// Which rules' globs a request matches, by rule position: `false` too for a rule with no such
/// globs (those match everything, which the caller checks first).
#[derive(Debug)]
pub(crate) struct Hits {
    pub services: Vec<bool>,
    pub agents: Vec<bool>,
}

impl GlobIndex {
    pub fn empty() -> Self {
        let none = || Globs { set: GlobSet::empty(), rule_of: Vec::new() };
        GlobIndex { services: none(), agents: none() }
    }

    pub fn build(rules: &[RuleGlobs<'_>]) -> Result<Self, globset::Error> {
        Ok(GlobIndex {
            services: Globs::build(rules.iter().map(|rule| rule.services))?,
            agents: Globs::build(rules.iter().map(|rule| rule.agents))?,
        })
    }

    /// The rules (of `rules`) whose globs the service, and any of the agent's names, match.
    pub fn hits<'a>(
        &self,
        rules: usize,
        service: Option<&str>,
        agent_names: impl IntoIterator<Item = &'a str>,
    ) -> Hits {
        let mut hits = Hits { services: vec![false; rules], agents: vec![false; rules] };
        let mut found = Vec::new();
        self.services.mark(service, &mut found, &mut hits.services);
        self.agents.mark(agent_names, &mut found, &mut hits.agents);
        hits
    }
}

impl Globs {
    fn build<'a>(per_rule: impl Iterator<Item = Option<&'a [NameGlob]>>) -> Result<Self, globset::Error> {
        let mut builder = GlobSetBuilder::new();
        let mut rule_of = Vec::new();
        for (position, globs) in per_rule.enumerate() {
            for glob in globs.unwrap_or_default() {
                builder.add(glob.glob.clone());
                rule_of.push(position);
            }
        }
        Ok(Globs { set: builder.build()?, rule_of })
    }

    fn mark<'a>(&self, names: impl IntoIterator<Item = &'a str>, found: &mut Vec<usize>, hits: &mut [bool]) {
        for name in names {
            self.set.matches_candidate_into(&Candidate::new(name), found);
            for &glob in found.iter() {
                hits[self.rule_of[glob]] = true;
            }
        }
    }
}
