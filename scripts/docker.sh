#!/usr/bin/env bash
# A Docker engine for the images tier and kind: scripts/docker.sh up|down|status|cli (docs/development.md).
#
#   up      use the engine that answers; otherwise install Debian's docker.io (as root) and start `dockerd`
#           in its own session, its log and PID under $MODELFORGE_CACHE/docker (idempotent)
#   down    stop exactly the dockerd that `up` started (by its recorded PID), nothing else
#   status  one line: which engine answers, or why none does
#   cli     print the docker client to use with that engine (Debian's, when we started it: the machine's
#           own client may be newer and then wants buildx for BuildKit, which Docker 20.10 has built in)
#
# MODELFORGE_DOCKER_DATA_ROOT moves the engine's images and build cache (a cold-cache CI measurement points
# it at an empty directory); it applies only to an engine this script starts.
set -euo pipefail
CACHE="${MODELFORGE_CACHE:-$HOME/.cache/modelforge}"
STATE="$CACHE/docker"
PIDFILE="$STATE/dockerd.pid"
LOG="$STATE/dockerd.log"
DATA_ROOT="${MODELFORGE_DOCKER_DATA_ROOT:-}"

say() { echo "docker.sh: $*" >&2; }

client() {
  # Debian's client matches Debian's engine (BuildKit without buildx); any other client otherwise.
  if [[ -x /usr/bin/docker ]]; then echo /usr/bin/docker; else command -v docker || true; fi
}

answers() {
  local cli
  cli=$(client)
  [[ -n $cli ]] && "$cli" info --format '{{.ServerVersion}}' >/dev/null 2>&1
}

ours_running() {
  # The recorded PID must still be a dockerd (after a reboot or PID reuse it may be anything else).
  local pid
  [[ -f $PIDFILE ]] || return 1
  pid=$(cat "$PIDFILE")
  if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == dockerd ]]; then
    return 0
  fi
  rm -f "$PIDFILE"
  return 1
}

up() {
  if answers; then
    say "Docker engine $("$(client)" info --format '{{.ServerVersion}}' 2>/dev/null) answers"
    return 0
  fi
  if ! command -v dockerd >/dev/null 2>&1; then
    if [[ $(id -u) != 0 ]]; then
      say "no Docker engine answers and dockerd is not installed; as root, run: apt-get install -y docker.io (or start your Docker engine), then retry"
      exit 1
    fi
    say "installing Debian's docker.io (no Docker engine here)"
    mkdir -p "$STATE"
    if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io; } >"$STATE/apt.log" 2>&1; then
      say "apt-get install docker.io failed (log: $STATE/apt.log); install a Docker engine by hand and retry"
      exit 1
    fi
  fi
  if [[ $(id -u) != 0 ]]; then
    say "dockerd is installed but not running, and starting it needs root: start your Docker engine, then retry"
    exit 1
  fi
  mkdir -p "$STATE"
  if ours_running; then
    say "dockerd (PID $(cat "$PIDFILE")) is starting"
  else
    local args=()
    [[ -n $DATA_ROOT ]] && mkdir -p "$DATA_ROOT" && args+=(--data-root "$DATA_ROOT")
    # setsid: its own session and process group, so `down` stops it and its containerd by PID.
    setsid dockerd "${args[@]}" >>"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
  fi
  local started=$SECONDS
  until answers; do
    if ! ours_running; then
      say "dockerd exited while starting; the last lines of $LOG:"
      tail -n 5 "$LOG" >&2
      exit 1
    fi
    if (( SECONDS - started > 90 )); then
      say "dockerd did not answer within 90 s (log: $LOG)"
      exit 1
    fi
    sleep 0.5
  done
  say "started dockerd (PID $(cat "$PIDFILE")${DATA_ROOT:+, data root $DATA_ROOT}) in $(( SECONDS - started )) s"
}

down() {
  if ! ours_running; then
    rm -f "$PIDFILE"
    say "no dockerd of ours is running"
    return 0
  fi
  local pid
  pid=$(cat "$PIDFILE")
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE"
  say "stopped dockerd (PID $pid)"
}

status() {
  if answers; then
    echo "Docker engine $("$(client)" info --format '{{.ServerVersion}}') answers (client $(client))"
  elif ours_running; then
    echo "dockerd (PID $(cat "$PIDFILE")) runs but does not answer yet (log: $LOG)"
  else
    echo "no Docker engine answers: scripts/docker.sh up starts one"
    return 1
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  cli) client ;;
  *) say "usage: scripts/docker.sh up|down|status|cli"; exit 2 ;;
esac
