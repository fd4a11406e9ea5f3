//! `agentkeys usage`: the account's audit rows — who fetched what, when, and with what result,
//! denials and rate-limit hits included.

use agentkeys_core::vault;
use agentkeys_proto::types::AuditQuery;

use crate::cli::UsageArgs;
use crate::context::Context;
use crate::error::CliError;
use crate::output::{table, timestamp};

pub async fn usage(ctx: &Context, args: UsageArgs) -> Result<u8, CliError> {
    let since = humantime::parse_duration(&args.since).map_err(|e| {
        CliError::usage(format!("invalid --since {:?}: {e}", args.since), "use a duration like 30m, 24h or 7d")
    })?;
    if let Some(service) = &args.service {
        vault::check_service(service)?;
    }
    let (client, session) = ctx.client()?;
    let agent = super::vault::agent_id(ctx, &client, args.agent.as_deref()).await?;
    let now_ms = agentkeys_core::client::unix_now_s() * 1000;
    let query = AuditQuery {
        since_ms: Some(now_ms.saturating_sub(since.as_millis().min(i64::MAX as u128) as i64)),
        service: args.service.clone(),
        limit: None,
        agent,
    };
    let audit = client.audit(&query).await?;
    ctx.out.json(&audit)?;
    if audit.entries.is_empty() {
        ctx.out.note(format!("No activity in the last {}.", args.since));
        return Ok(0);
    }
    // Agent devices are shown by their agent's label.
    let labels: std::collections::HashMap<String, String> = match client.list_agents().await {
        Ok(listed) => listed
            .agents
            .into_iter()
            .flat_map(|a| a.devices.into_iter().map(move |d| (d.device_id, a.label.clone())))
            .collect(),
        Err(_) => Default::default(),
    };
    // Presence keys are shown by name: `webauthn:pk_…` reads `webauthn (yubikey)`. Looked up
    // only when a row names one.
    let names_a_key = audit.entries.iter().any(|e| e.presence.as_deref().is_some_and(|p| p.starts_with("webauthn:")));
    let key_names: std::collections::HashMap<String, String> = match names_a_key {
        true => match client.list_presence_keys().await {
            Ok(listed) => listed.keys.into_iter().map(|k| (k.id, k.name)).collect(),
            Err(_) => Default::default(),
        },
        false => Default::default(),
    };
    let presence = |text: &str| match text.split_once(':') {
        Some(("webauthn", key)) => match key_names.get(key) {
            Some(name) => format!("webauthn ({name})"),
            None => format!("webauthn ({key}, removed)"),
        },
        _ => text.to_owned(),
    };
    let rows: Vec<Vec<String>> = audit
        .entries
        .iter()
        .map(|e| {
            let actor = match &e.actor {
                Some(actor) if *actor == session.device_id => format!("{actor} (this device)"),
                Some(actor) => match labels.get(actor) {
                    Some(label) => format!("{actor} ({label})"),
                    None => actor.clone(),
                },
                None => "-".into(),
            };
            let subject = match (e.namespace.as_deref(), e.service.as_deref()) {
                (Some("vault") | None, Some(service)) => service.to_owned(),
                (Some(namespace), Some(service)) => format!("{namespace}/{service}"),
                (Some(namespace), None) => namespace.to_owned(),
                (None, None) => "-".into(),
            };
            vec![
                timestamp(e.ts_ms),
                actor,
                e.action.clone(),
                subject,
                e.outcome_str().into(),
                e.code.map(|c| c.as_str().to_owned()).unwrap_or_default(),
                e.presence.as_deref().map(presence).unwrap_or_default(),
            ]
        })
        .collect();
    ctx.out.line(table(&["TIME", "ACTOR", "ACTION", "SUBJECT", "OUTCOME", "CODE", "PRESENCE"], &rows))?;
    Ok(0)
}
