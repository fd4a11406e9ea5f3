//! The CLI's side of a presence ceremony (PRODUCT.md §5, server-verified): show the server's
//! page and code, open the browser where there is one (`$BROWSER`, else `xdg-open`, `open` or
//! Windows' URL handler; never with `--no-browser` or without a display, as over SSH), and wait on the
//! server's long poll, counting down on a terminal. Ctrl-C cancels the ceremony on the server
//! before the command exits.

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use agentkeys_biometric::CriticalOp;
use agentkeys_core::client::{BoxFuture, CeremonyHost};
use agentkeys_core::{ApiClient, ClientError};
use agentkeys_proto::ceremony::{CeremonyPurpose, CeremonyStarted, CeremonyState, CeremonyStatus, MAX_WAIT_S};

use crate::context::Context;

/// Shows ceremonies to the human on this terminal and in a browser.
#[derive(Debug, Clone)]
pub struct BrowserCeremony {
    operation: String,
    open_browser: bool,
}

impl BrowserCeremony {
    pub fn new(ctx: &Context, op: &CriticalOp) -> Self {
        Self::for_operation(ctx, op.text.clone())
    }

    pub fn for_operation(ctx: &Context, operation: String) -> Self {
        Self { operation, open_browser: !ctx.global.no_browser }
    }

    /// Shows the ceremony and waits until it leaves `pending`: its final status when the human
    /// completed it, an error (exit 6) when it was refused, expired or cancelled.
    pub async fn run(&self, client: &ApiClient, started: &CeremonyStarted) -> Result<CeremonyStatus, ClientError> {
        let key = match started.purpose {
            CeremonyPurpose::Assert => "an enrolled presence key",
            CeremonyPurpose::Enroll => "the key to enroll",
        };
        let url = checked_link(started)?;
        // Listening before the link is shown: a Ctrl-C from then on cancels the ceremony.
        let interrupted = interrupt()?;
        // On stderr whatever -q says: without it the command cannot go on.
        eprintln!(
            "Presence needed for: {}\n  Open {}\n  check that the page shows the code {}, and confirm with {key}.",
            self.operation, url, started.code
        );
        match self.launch(url) {
            Launch::Opened(how) => eprintln!("  (opened with {how})"),
            Launch::NotTried => {}
            Launch::Failed(why) => eprintln!("  (could not open a browser: {why}; open the link by hand)"),
        }
        let until = crate::output::timestamp(started.expires_at_ms);
        eprintln!("Waiting until {until} (Ctrl-C cancels)…");
        let waited = tokio::select! {
            status = Self::poll(client, &started.id) => status,
            never = Self::count_down(started.expires_at_ms) => match never {},
            () = interrupted => {
                // Best effort: the ceremony expires on its own if the server cannot be told.
                let _ = client.cancel_ceremony(&started.id).await;
                Err(ClientError::Presence {
                    message: format!("cancelled: `{}` did not happen, nothing was changed", self.operation),
                    hint: "run the command again when the presence key is at hand".to_owned(),
                })
            }
        };
        if std::io::stderr().is_terminal() {
            eprintln!();
        }
        waited
    }

    /// Long-polls the server until the ceremony is no longer pending; a refused, expired or
    /// cancelled one is answered `DECLINED` with why.
    async fn poll(client: &ApiClient, id: &str) -> Result<CeremonyStatus, ClientError> {
        loop {
            let status = client.ceremony_status(id, MAX_WAIT_S).await?;
            match status.state {
                CeremonyState::Pending => continue,
                CeremonyState::Completed => return Ok(status),
                other => {
                    return Err(ClientError::Presence {
                        message: format!("the presence ceremony ended {}", other.as_str()),
                        hint: "run the command again".to_owned(),
                    });
                }
            }
        }
    }

    /// The time left, redrawn every second on a terminal (nothing otherwise).
    async fn count_down(expires_at_ms: i64) -> std::convert::Infallible {
        let terminal = std::io::stderr().is_terminal();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if terminal {
                let left = (expires_at_ms / 1000 - agentkeys_core::client::unix_now_s()).max(0);
                eprint!("\r  {}:{:02} left ", left / 60, left % 60);
                let _ = std::io::stderr().flush();
            }
        }
    }

    fn launch(&self, url: &str) -> Launch {
        if !self.open_browser {
            return Launch::NotTried;
        }
        let configured = std::env::var("BROWSER").ok().filter(|b| !b.trim().is_empty());
        let commands: Vec<Vec<String>> = match &configured {
            // The convention: a colon-separated list of commands, `%s` standing for the URL.
            Some(list) => list
                .split(':')
                .filter(|c| !c.trim().is_empty())
                .map(|command| {
                    let words: Vec<String> = command.split_whitespace().map(|w| w.replace("%s", url)).collect();
                    if command.contains("%s") { words } else { [words, vec![url.to_owned()]].concat() }
                })
                .collect(),
            None if !has_display() => return Launch::NotTried,
            None => vec![system_opener(url)],
        };
        let mut last_error = String::from("no command in $BROWSER");
        for words in commands {
            let Some((program, args)) = words.split_first() else { continue };
            let spawned = std::process::Command::new(program)
                .args(args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn();
            match spawned {
                Ok(_) => return Launch::Opened(program.clone()),
                Err(e) => last_error = format!("{program}: {e}"),
            }
        }
        Launch::Failed(last_error)
    }
}

enum Launch {
    Opened(String),
    NotTried,
    Failed(String),
}

impl CeremonyHost for BrowserCeremony {
    fn operation(&self) -> &str {
        &self.operation
    }

    fn wait<'a>(
        &'a self,
        client: &'a ApiClient,
        started: &'a CeremonyStarted,
    ) -> BoxFuture<'a, Result<(), ClientError>> {
        Box::pin(async move { self.run(client, started).await.map(drop) })
    }
}

/// Resolves at the first Ctrl-C after it is called (the handler is installed at once, not at
/// the first poll).
fn interrupt() -> Result<impl std::future::Future<Output = ()>, ClientError> {
    let failed = |e: std::io::Error| ClientError::Presence {
        message: format!("cannot listen for Ctrl-C: {e}"),
        hint: "run the command in a normal terminal or shell".to_owned(),
    };
    #[cfg(unix)]
    {
        let mut signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).map_err(failed)?;
        Ok(async move {
            signal.recv().await;
        })
    }
    #[cfg(not(unix))]
    {
        let mut signal = tokio::signal::windows::ctrl_c().map_err(failed)?;
        Ok(async move {
            signal.recv().await;
        })
    }
}

/// Whether a browser opened here would be seen: a graphical session on Linux and the BSDs, not
/// an SSH login on macOS.
fn has_display() -> bool {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    if cfg!(target_os = "macos") || cfg!(windows) {
        !set("SSH_CONNECTION") && !set("SSH_TTY")
    } else {
        set("DISPLAY") || set("WAYLAND_DISPLAY")
    }
}

/// The ceremony's link, if it is one: `http(s)://<host[:port]>/presence/<its id>` and nothing
/// else. The server names it, and it goes to a browser or an opener, so a hostile server gets
/// neither another scheme nor characters a shell or `cmd` would read.
fn checked_link(started: &CeremonyStarted) -> Result<&str, ClientError> {
    let url = started.url.as_str();
    let authority = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    let path = format!("/presence/{}", started.id);
    let fine = agentkeys_proto::ids::is_ceremony_id(&started.id)
        && authority.and_then(|a| a.strip_suffix(path.as_str())).is_some_and(|host| {
            !host.is_empty()
                && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        });
    if fine {
        Ok(url)
    } else {
        Err(ClientError::Presence {
            message: format!("the server answered a ceremony link that is not its page: {:?}", started.url),
            hint: "check --server: an AgentKeys server links to <its public URL>/presence/<ceremony id>".to_owned(),
        })
    }
}

fn system_opener(url: &str) -> Vec<String> {
    if cfg!(target_os = "macos") {
        vec!["open".into(), url.into()]
    } else if cfg!(windows) {
        // The URL handler itself, not `cmd /C start`: no shell reads the URL.
        vec!["rundll32".into(), "url.dll,FileProtocolHandler".into(), url.into()]
    } else {
        vec!["xdg-open".into(), url.into()]
    }
}

#[cfg(test)]
mod tests {
    use agentkeys_proto::ceremony::{CeremonyPurpose, CeremonyStarted};

    fn started(url: &str) -> CeremonyStarted {
        CeremonyStarted {
            id: "cer_AAECAwQFBgcICQoLDA0ODw".into(),
            purpose: CeremonyPurpose::Assert,
            code: "ABCD-EFGH".into(),
            url: url.into(),
            expires_at_ms: 0,
        }
    }

    #[test]
    fn only_the_servers_own_page_is_opened() {
        for good in [
            "http://localhost:8090/presence/cer_AAECAwQFBgcICQoLDA0ODw",
            "https://keys.example.com/presence/cer_AAECAwQFBgcICQoLDA0ODw",
            "https://[::1]:8443/presence/cer_AAECAwQFBgcICQoLDA0ODw",
        ] {
            assert!(super::checked_link(&started(good)).is_ok(), "{good}");
        }
        for bad in [
            "https://x/presence/cer_AAECAwQFBgcICQoLDA0ODw&calc",
            "https://x&calc/presence/cer_AAECAwQFBgcICQoLDA0ODw",
            "file:///etc/passwd/presence/cer_AAECAwQFBgcICQoLDA0ODw",
            "https://x/evil/presence/cer_AAECAwQFBgcICQoLDA0ODw",
            "https:///presence/cer_AAECAwQFBgcICQoLDA0ODw",
            "https://x/presence/cer_OTHERCEREMONYIDxxxxxx",
            "https://x/presence/cer_AAECAwQFBgcICQoLDA0ODw?x=1",
        ] {
            assert!(super::checked_link(&started(bad)).is_err(), "{bad}");
        }
    }
}
