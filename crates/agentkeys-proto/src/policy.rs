//! Wire types of the account's policy (PRODUCT.md §3 "policy"): the versioned TOML text, its
//! replacement (critical when it weakens), and the explanation of an audit row's decision. The
//! language itself is the `agentkeys-policy` crate's; the wire carries the text.

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::{IntoParams, ToSchema};

use crate::types::Outcome;

/// Query of `GET /v1/policy`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct PolicyQuery {
    /// An earlier version (from 1); the current one without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 4294967295_u64))]
    pub version: Option<u64>,
}

/// `GET /v1/policy`: one version of the policy. Version 0 is the empty policy every account
/// starts with (no rules: what scope and tier give).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PolicyResponse {
    pub version: u64,
    pub text: String,
    /// When it was set, and by which master device; absent for version 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
}

/// `PUT /v1/policy`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetPolicyRequest {
    /// The whole policy, TOML (at most 60 KiB, 1000 rules).
    #[cfg_attr(feature = "openapi", schema(max_length = 61440))]
    pub text: String,
    /// The version this one replaces, as the master compared it: a policy set meanwhile by
    /// another device answers CONFLICT instead of being overwritten unseen.
    pub base_version: u64,
}

/// `PUT /v1/policy`: the new version and what it changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetPolicyResponse {
    pub version: u64,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    /// Why the change weakened the policy (it was critical); empty when it did not.
    pub weakens: Vec<String>,
}

/// `GET /v1/audit/{seq}/explain`: which rule decided an audit row.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExplainResponse {
    pub seq: i64,
    pub ts_ms: i64,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub outcome: Outcome,
    /// The policy version that decided the row (0: none was set).
    pub policy_version: u64,
    /// The rule that decided it; absent when no rule matched (scope and tier decided).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// That rule as it was written in that version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_text: Option<String>,
}

/// How an audit row names the policy that decided it: `v3:no-prod-at-night` for a rule of
/// version 3, `v3` when version 3 was in force and no rule matched.
pub fn rule_ref(version: u64, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("v{version}:{name}"),
        None => format!("v{version}"),
    }
}

/// Reads [`rule_ref`] back.
pub fn parse_rule_ref(text: &str) -> Option<(u64, Option<&str>)> {
    let rest = text.strip_prefix('v')?;
    let (version, name) = match rest.split_once(':') {
        Some((version, name)) if !name.is_empty() => (version, Some(name)),
        Some(_) => return None,
        None => (rest, None),
    };
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((version.parse().ok()?, name))
}
