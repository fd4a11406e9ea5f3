//! The freedesktop Desktop Notifications protocol (`org.freedesktop.Notifications.Notify` on the
//! session bus): what GNOME, KDE, dunst, mako and the rest serve. `DBUS_SESSION_BUS_ADDRESS`
//! picks the bus, so tests point it at a private one with a mock daemon.

use std::collections::HashMap;
use std::time::Duration;

use zbus::zvariant::Value;

use crate::notifier::{Notification, Notifier, NotifyError};

const DESTINATION: &str = "org.freedesktop.Notifications";
const PATH: &str = "/org/freedesktop/Notifications";
/// A daemon that does not answer within this does not hold `listen` up.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub struct Freedesktop {
    bus: zbus::blocking::Connection,
}

impl Freedesktop {
    pub fn connect() -> Result<Self, NotifyError> {
        let bus = zbus::blocking::connection::Builder::session()
            .and_then(|builder| builder.method_timeout(CALL_TIMEOUT).build())
            .map_err(|e| NotifyError::Unavailable(format!("no session bus ({e})")))?;
        Ok(Freedesktop { bus })
    }
}

impl Notifier for Freedesktop {
    fn name(&self) -> &'static str {
        "freedesktop notifications"
    }

    fn show(&self, notification: &Notification) -> Result<(), NotifyError> {
        // Bodies may carry markup on some daemons: an agent's reason must not, so escape it.
        let body = escape_markup(&notification.body);
        let hints: HashMap<&str, Value<'_>> =
            HashMap::from([("urgency", Value::U8(1)), ("category", Value::from("x-agentkeys.request"))]);
        let actions: Vec<&str> = Vec::new();
        self.bus
            .call_method(
                Some(DESTINATION),
                PATH,
                Some(DESTINATION),
                "Notify",
                // app_name, replaces_id, app_icon, summary, body, actions, hints, expire_timeout (-1:
                // the daemon's default).
                &(
                    "AgentKeys",
                    0u32,
                    "dialog-password",
                    notification.summary.as_str(),
                    body.as_str(),
                    actions,
                    hints,
                    -1i32,
                ),
            )
            .map_err(|e| match &e {
                zbus::Error::MethodError(name, _, _)
                    if name.as_str() == "org.freedesktop.DBus.Error.ServiceUnknown" =>
                {
                    NotifyError::Unavailable("no notification daemon on the session bus".into())
                }
                _ => NotifyError::Failed(e.to_string()),
            })?;
        Ok(())
    }
}

/// The body markup subset daemons may interpret (`<b>`, `<a href>`, entities), made literal.
fn escape_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn markup_in_a_reason_is_shown_literally() {
        assert_eq!(super::escape_markup("<a href='x'>click</a> & go"), "&lt;a href='x'&gt;click&lt;/a&gt; &amp; go");
    }
}
