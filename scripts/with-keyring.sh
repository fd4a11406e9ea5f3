#!/usr/bin/env bash
# Runs a command with a real Secret Service: meant to run inside `dbus-run-session`, it starts
# gnome-keyring (secrets component only) on a throwaway keyring directory, unlocks its login
# collection with a test password, checks that it is unlocked, and execs the command with
# AGENTKEYS_TEST_KEYRING=1 and the password in AGENTKEYS_TEST_KEYRING_PASSWORD (so a test that
# locks the collection can unlock it again).
set -euo pipefail
export XDG_DATA_HOME; XDG_DATA_HOME="$(mktemp -d /tmp/agentkeys-keyring.XXXXXX)"
export AGENTKEYS_TEST_KEYRING_PASSWORD="agentkeys-test-keyring"
# If gnome-keyring exits (it can crash when a client gives up on an unlock prompt), the bus
# starts it again on demand: on this keyring directory (locked, as after a real restart), not a
# fresh one under ~/.local/share.
dbus-update-activation-environment XDG_DATA_HOME
printf '%s' "$AGENTKEYS_TEST_KEYRING_PASSWORD" | gnome-keyring-daemon --unlock --components=secrets >/dev/null
gdbus wait --session --timeout 10 org.freedesktop.secrets
locked="$(dbus-send --session --print-reply=literal --dest=org.freedesktop.secrets \
    /org/freedesktop/secrets/collection/login org.freedesktop.DBus.Properties.Get \
    string:org.freedesktop.Secret.Collection string:Locked)"
case "$locked" in
    *false*) ;;
    *) echo "with-keyring.sh: the test keyring did not unlock ($locked)" >&2; exit 1 ;;
esac
export AGENTKEYS_TEST_KEYRING=1
exec "$@"
