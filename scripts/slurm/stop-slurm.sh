#!/usr/bin/env bash
# Stops what start-slurm.sh started: cancels all jobs, then slurmd, slurmctld and munged, each by
# its pid file (never by name). Safe to run when nothing is running.
# Usage: scripts/slurm/stop-slurm.sh [--purge]   (--purge also deletes $SLURM_BASE: state, logs)
set -uo pipefail
BASE=${SLURM_BASE:-/tmp/milopyp-slurm}
log() { echo "[stop-slurm] $*" >&2; }
alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop_pidfile() {  # name pidfile
  local name=$1 pf=$2 pid
  if alive "$pf"; then
    pid=$(cat "$pf"); log "stopping $name (pid $pid)"; kill "$pid"
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then log "$name still running after 30 s, SIGKILL"; kill -9 "$pid"; fi
  fi
  rm -f "$pf"
}
if alive "$BASE/slurmctld.pid"; then
  ids=$(squeue -h -o %i 2>/dev/null || true)
  if [[ -n "$ids" ]]; then
    log "cancelling jobs: $(echo $ids)"; scancel $ids 2>/dev/null || true
    for _ in $(seq 60); do [[ -z "$(squeue -h -t R,CG -o %i 2>/dev/null)" ]] && break; sleep 0.5; done
  fi
fi
stop_pidfile slurmd "$BASE/slurmd.pid"
stop_pidfile slurmctld "$BASE/slurmctld.pid"
stop_pidfile munged /run/munge/munged.pid
if [[ ${1:-} == --purge ]]; then rm -rf "$BASE"; log "removed $BASE"; fi
log "stopped"
