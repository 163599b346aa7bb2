# Shared helpers for scripts/services/*.sh (sourced, not run).
set -euo pipefail

apt_install() {
  # Install Debian packages that are missing; `apt-get update` once per machine.
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ ! -f /var/lib/apt/periodic/beam-etl-updated ]; then
    apt-get update -qq
    mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/beam-etl-updated
  fi
  # Services must not start from the package's postinst (no init system here).
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

wait_for() {
  # wait_for "description" seconds command...
  local what=$1 seconds=$2; shift 2
  for _ in $(seq 1 "$seconds"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  echo "error: $what did not become ready in ${seconds}s" >&2
  return 1
}

# Everything big lives here (never in git): Maven-built jars, Kafka/Flink classpaths, Prism.
BEAM_ETL_CACHE=${BEAM_ETL_CACHE:-$HOME/.cache/beam-etl}
RUN_DIR=$BEAM_ETL_CACHE/run
mkdir -p "$BEAM_ETL_CACHE" "$RUN_DIR"

pid_alive() {
  # pid_alive NAME: the daemon started by start_daemon NAME is still running (and the pid was
  # not reused by another program: its command line names our cache directory).
  local pidfile=$RUN_DIR/$1.pid pid
  [ -f "$pidfile" ] || return 1
  pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF "$BEAM_ETL_CACHE"
}

start_daemon() {
  # start_daemon NAME LOGFILE command...: run detached (own session, survives this shell), pid in RUN_DIR.
  local name=$1 log=$2; shift 2
  mkdir -p "$(dirname "$log")"
  setsid nohup "$@" >"$log" 2>&1 < /dev/null &
  echo $! > "$RUN_DIR/$name.pid"
}

stop_daemon() {
  # stop_daemon NAME: stop the process recorded by start_daemon NAME (by its pid only).
  local pidfile=$RUN_DIR/$1.pid
  if pid_alive "$1"; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
    for _ in $(seq 1 30); do pid_alive "$1" || break; sleep 1; done
  fi
  rm -f "$pidfile"
}

mvn_quiet() {
  # Maven, batch mode, quiet; the log goes to a file shown only on failure.
  local log
  log=$(mktemp)
  if ! mvn -q -B "$@" >"$log" 2>&1; then
    grep -E "ERROR|BUILD" "$log" | head -20 >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}

http_ok() {
  # http_ok URL: the URL answers 2xx within 3 s.
  curl -fsS -m 3 -o /dev/null "$1" 2>/dev/null
}
