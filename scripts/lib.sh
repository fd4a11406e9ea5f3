# Shared by scripts/*.sh: where builds go, installing Debian packages, and a throwaway PostgreSQL.
# Sourced, not run.

# One target dir for every checkout on this machine, so a fresh clone (CI) reuses earlier builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/agentkeys/target}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'Error: %s\n' "$*" >&2; exit 1; }
is_ci() { [ "${CI:-}" = "true" ]; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root to run: $*"; fi
}

# apt_install PKG... : installs the Debian packages that are missing, updating the index once.
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "apt-get not found: install ${missing[*]} by hand"
    log "installing ${missing[*]}"
    # Package lists are fetched once per run, however many groups get installed.
    if [ -z "${AGENTKEYS_APT_UPDATED:-}" ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        export AGENTKEYS_APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

pg_bin_dir() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

# start_postgres: a private cluster in a temp dir on a free loopback port; exports
# AGENTKEYS_TEST_PG_URL and AGENTKEYS_TEST_PG_BIN, and stops it on exit.
start_postgres() {
    apt_install postgresql
    local bin; bin="$(pg_bin_dir)"
    [ -x "$bin/initdb" ] || die "PostgreSQL binaries not found under /usr/lib/postgresql"
    PG_DIR="$(mktemp -d /tmp/agentkeys-pg.XXXXXX)"
    local run=()
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$PG_DIR"
        run=(runuser -u postgres --)
    fi
    "${run[@]}" "$bin/initdb" -D "$PG_DIR/data" -A trust -U postgres --no-sync >"$PG_DIR/initdb.log" 2>&1 \
        || { cat "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
    local port
    for _ in 1 2 3 4 5; do
        port=$((20000 + RANDOM % 20000))
        if "${run[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
            -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" start >/dev/null; then
            export AGENTKEYS_TEST_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
            export AGENTKEYS_TEST_PG_BIN="$bin"
            PG_RUN=("${run[@]}")
            PG_CTL="$bin/pg_ctl"
            trap stop_postgres EXIT
            log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"
            return 0
        fi
    done
    cat "$PG_DIR/server.log" >&2
    die "PostgreSQL did not start"
}

stop_postgres() {
    [ -n "${PG_DIR:-}" ] || return 0
    "${PG_RUN[@]}" "$PG_CTL" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
}

# python_venv: a venv under the cache dir with the packages in scripts/requirements-test.txt;
# sets VENV_PY.
python_venv() {
    apt_install python3 python3-venv
    local venv="$HOME/.cache/agentkeys/venv"
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv" || die "cannot create a Python venv (python3-venv)"
    fi
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r scripts/requirements-test.txt \
        || die "cannot install the Python test packages from PyPI"
    VENV_PY="$venv/bin/python"
}

# start_server BIN_DIR [ARGS...]: starts BIN_DIR/agentkeys-server on a free loopback port with the
# given extra arguments, waits for its "listening on" line (its readiness signal), exports
# AGENTKEYS_SERVER, sets SERVER_PID and SERVER_LOG, and stops it on exit.
start_server() {
    local bin="$1"; shift
    SERVER_LOG="$(mktemp /tmp/agentkeys-server-log.XXXXXX)"
    NO_COLOR=1 "$bin/agentkeys-server" --listen 127.0.0.1:0 "$@" 2>"$SERVER_LOG" &
    SERVER_PID=$!
    trap stop_server EXIT
    for _ in $(seq 1 1200); do
        grep -q "listening on http" "$SERVER_LOG" && break
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$SERVER_LOG" >&2; die "agentkeys-server exited"; }
        sleep 0.05
    done
    AGENTKEYS_SERVER="$(grep -oE 'listening on https?://[0-9.:]*' "$SERVER_LOG" | head -n 1 | cut -d' ' -f3)"
    [ -n "$AGENTKEYS_SERVER" ] || { cat "$SERVER_LOG" >&2; die "agentkeys-server did not start"; }
    export AGENTKEYS_SERVER
}

stop_server() {
    [ -n "${SERVER_PID:-}" ] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
    rm -f "$SERVER_LOG"
    SERVER_PID=""
}
