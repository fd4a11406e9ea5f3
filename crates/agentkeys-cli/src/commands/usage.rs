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
    let rows: Vec<Vec<String>> = audit
        .entries
        .iter()
        .map(|e| {
            let actor = match &e.actor {
                Some(actor) if *actor == session.device_id => format!("{actor} (this device)"),
                Some(actor) => actor.clone(),
                None => "-".into(),
            };
            vec![
                timestamp(e.ts_ms),
                actor,
                e.action.clone(),
                e.service.clone().unwrap_or_else(|| "-".into()),
                e.outcome_str().into(),
                e.code.map(|c| c.as_str().to_owned()).unwrap_or_default(),
            ]
        })
        .collect();
    ctx.out.line(table(&["TIME", "ACTOR", "ACTION", "SERVICE", "OUTCOME", "CODE"], &rows))?;
    Ok(0)
}
