#!/usr/bin/env bash
# A local multi-process CPU "pod": P processes on this machine, each with D fake
# CPU devices, joined through jax.distributed exactly like the hosts of a TPU
# pod or a GPU cluster.  This exercises the multi-host code path of main.py
# (process-local data loading, cross-process collectives, checkpointing from
# several processes into one --workdir) without any accelerator.
#
# Run `launch/local_cpu_pod.sh --help` for usage.  `--dry-run` (or DRY_RUN=1)
# prints every command instead of running it.
set -euo pipefail

readonly SCRIPT_NAME=${0##*/}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly ROOT

PYTHON=${PYTHON:-python3}
PROCESSES=${LNRD_POD_PROCESSES:-2}
DEVICES=${LNRD_POD_DEVICES:-4}
PORT=${LNRD_POD_PORT:-12355}
HOST=${LNRD_POD_HOST:-127.0.0.1}
# The default work dir is a predictable path in a shared place: it is used only
# if it is a real directory owned by the current user (see private_dir).
DEFAULT_WORKDIR=${TMPDIR:-/tmp}/lnrd_local_cpu_pod
WORKDIR=${LNRD_WORKDIR:-$DEFAULT_WORKDIR}
CONFIG=${LNRD_CONFIG:-}
DATA_DIR=${LNRD_DATA_DIR:-}
GRACE=${LNRD_POD_GRACE:-10}   # seconds between SIGTERM and SIGKILL
DRY_RUN=${DRY_RUN:-0}
ENVS=()
EXTRA=()
_env=""

usage() {
  cat <<EOF
Usage: $SCRIPT_NAME [options] [-- MAIN_PY_ARGS...]

Start P processes of main.py on this machine, each seeing D fake CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=D, JAX_PLATFORMS=cpu) and
joined through jax.distributed (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
JAX_PROCESS_ID).  All processes share one --workdir; process i logs to
WORKDIR/process_i.log and process 0 also to stdout.  If one process fails,
the others are killed and the script exits non-zero; on Ctrl-C / SIGTERM it
stops exactly the process groups it started, nothing else.

Options (environment variable in brackets):
  -p, --processes P   number of processes [LNRD_POD_PROCESSES] ($PROCESSES)
  -d, --devices D     fake CPU devices per process [LNRD_POD_DEVICES] ($DEVICES)
  --port PORT         coordinator port [LNRD_POD_PORT] ($PORT)
  --host HOST         coordinator host [LNRD_POD_HOST] ($HOST)
  --workdir DIR       shared work dir [LNRD_WORKDIR] ($DEFAULT_WORKDIR;
                      refused if it is a symlink or not your own directory)
  --config PATH[:ARG] main.py config [LNRD_CONFIG] (or pass --config=... after --)
  --data-dir DIR      TFDS data dir, sets --config.dataset.data_dir [LNRD_DATA_DIR]
  --env KEY=VALUE     extra environment for main.py (repeatable); exported to
                      the processes, never printed (only KEY is shown)
  --grace SECONDS     wait this long after SIGTERM before SIGKILL ($GRACE)
  --dry-run           print the commands instead of running them [DRY_RUN=1]
  -h, --help          show this help
  PYTHON              environment variable: interpreter to use ($PYTHON)

Example:
  $SCRIPT_NAME --processes 2 --devices 4 --workdir /tmp/w -- \\
      --config=configs/mnist_sym.py:method=ce
EOF
}

# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -p | --processes | --processes=*) optval PROCESSES "$@"; shift "$NSHIFT" ;;
    -d | --devices | --devices=*) optval DEVICES "$@"; shift "$NSHIFT" ;;
    --port | --port=*) optval PORT "$@"; shift "$NSHIFT" ;;
    --host | --host=*) optval HOST "$@"; shift "$NSHIFT" ;;
    --workdir | --workdir=*) optval WORKDIR "$@"; shift "$NSHIFT" ;;
    --config | --config=*) optval CONFIG "$@"; shift "$NSHIFT" ;;
    --data-dir | --data-dir=*) optval DATA_DIR "$@"; shift "$NSHIFT" ;;
    --grace | --grace=*) optval GRACE "$@"; shift "$NSHIFT" ;;
    --env | --env=*) optval _env "$@"; shift "$NSHIFT"; add_env "$_env" ;;
    --) shift; EXTRA=("$@"); break ;;
    -*) die "unknown option: $1 (see $SCRIPT_NAME --help)" ;;
    *) die "unexpected argument: '$1' (main.py arguments go after '--')" ;;
  esac
done

is_true "$DRY_RUN" && DRY_RUN=1 || DRY_RUN=0
[[ $PROCESSES =~ ^[1-9][0-9]*$ ]] || die "--processes expects a positive integer, got '$PROCESSES'"
[[ $DEVICES =~ ^[1-9][0-9]*$ ]] || die "--devices expects a positive integer, got '$DEVICES'"
if ! [[ $PORT =~ ^[0-9]+$ ]] || ((PORT < 1 || PORT > 65535)); then
  die "--port expects a port number, got '$PORT'"
fi
[[ $GRACE =~ ^[0-9]+$ ]] || die "--grace expects seconds, got '$GRACE'"
[[ -n $WORKDIR ]] || die "--workdir must not be empty"
command -v "$PYTHON" >/dev/null 2>&1 || [[ $DRY_RUN == 1 ]] || die "python interpreter '$PYTHON' not found (set PYTHON=...)"

# main.py is started from the repository root; make local paths absolute first.
abspath() { if [[ $1 == /* || $1 == *://* ]]; then printf '%s\n' "$1"; else printf '%s\n' "$PWD/$1"; fi; }
WORKDIR=$(abspath "$WORKDIR")
[[ -z $DATA_DIR ]] || DATA_DIR=$(abspath "$DATA_DIR")
LOG_DIR=$WORKDIR
DEFAULT_LOG_DIR=${TMPDIR:-/tmp}/lnrd_local_cpu_pod_logs
if [[ $WORKDIR == *://* ]]; then
  LOG_DIR=$DEFAULT_LOG_DIR
fi

TRAIN=("$PYTHON" main.py)
[[ -z $CONFIG ]] || TRAIN+=("--config=$CONFIG")
TRAIN+=("--workdir=$WORKDIR")
[[ -z $DATA_DIR ]] || TRAIN+=("--config.dataset.data_dir=$DATA_DIR")
TRAIN+=(${EXTRA[@]+"${EXTRA[@]}"})

# Keep the caller's XLA_FLAGS, except for another device count.
XLA_FLAGS_ALL=""
read -r -a _flags <<<"${XLA_FLAGS:-}"
for _f in ${_flags[@]+"${_flags[@]}"}; do
  [[ $_f == --xla_force_host_platform_device_count=* ]] || XLA_FLAGS_ALL+="$_f "
done
XLA_FLAGS_ALL+="--xla_force_host_platform_device_count=$DEVICES"
unset _flags _f

# The environment of process $1.
process_cmd() {
  local i=$1
  CMD=(env JAX_PLATFORMS=cpu "XLA_FLAGS=$XLA_FLAGS_ALL"
    "JAX_COORDINATOR_ADDRESS=$HOST:$PORT" "JAX_NUM_PROCESSES=$PROCESSES"
    "JAX_PROCESS_ID=$i" "${TRAIN[@]}")
}

# make_dirs: create the work and log dirs; a default one only if it is safe.
make_dirs() {
  local dirs=() d
  [[ $WORKDIR == *://* ]] || dirs+=("$WORKDIR")
  [[ $LOG_DIR == "$WORKDIR" ]] || dirs+=("$LOG_DIR")
  for d in ${dirs[@]+"${dirs[@]}"}; do
    if [[ $d == "$DEFAULT_WORKDIR" || $d == "$DEFAULT_LOG_DIR" ]]; then
      private_dir "$d" "pass --workdir DIR"
    else
      run mkdir -p "$d"
    fi
  done
}

if [[ $DRY_RUN == 1 ]]; then
  run cd "$ROOT"
  make_dirs
  announce_envs
  for ((i = 0; i < PROCESSES; i++)); do
    process_cmd "$i"
    if ((i == 0)); then
      printf '%s 2>&1 | tee %s &\n' "$(quote "${CMD[@]}")" "$(quote "$LOG_DIR/process_$i.log")"
    else
      printf '%s > %s 2>&1 &\n' "$(quote "${CMD[@]}")" "$(quote "$LOG_DIR/process_$i.log")"
    fi
  done
  echo wait
  exit 0
fi

cd "$ROOT"
make_dirs
announce_envs

# setsid puts each process (and anything it forks) into its own process group,
# so that the whole group can be signalled.
SETSID=()
if command -v setsid >/dev/null 2>&1; then SETSID=(setsid); fi

PIDS=()
STATUS=()

kill_all() {
  local sig=$1 i pid
  for i in "${!PIDS[@]}"; do
    pid=${PIDS[i]}
    [[ ${STATUS[i]} == running ]] || continue
    if ((${#SETSID[@]})); then kill "-$sig" -- "-$pid" 2>/dev/null || true; fi
    kill "-$sig" "$pid" 2>/dev/null || true
  done
}

any_running() {
  local s
  for s in "${STATUS[@]}"; do [[ $s != running ]] || return 0; done
  return 1
}

# Reap the processes that have exited; sets FAILED to the first failure.
FAILED=""
STOPPING=0
reap() {
  local i pid rc
  for i in "${!PIDS[@]}"; do
    [[ ${STATUS[i]} == running ]] || continue
    pid=${PIDS[i]}
    if ! kill -0 "$pid" 2>/dev/null; then
      rc=0
      wait "$pid" || rc=$?
      STATUS[i]=$rc
      if ((STOPPING)); then
        info "process $i (pid $pid) stopped (status $rc)"
      elif ((rc != 0)); then
        info "process $i (pid $pid) exited with status $rc; log: $LOG_DIR/process_$i.log"
        [[ -n $FAILED ]] || FAILED=$i
      else
        info "process $i (pid $pid) finished"
      fi
    fi
  done
}

# Stop the remaining processes: SIGTERM, then SIGKILL after $GRACE seconds.
shutdown() {
  local deadline=$((SECONDS + GRACE))
  any_running || return 0
  STOPPING=1
  kill_all TERM
  while any_running && ((SECONDS < deadline)); do
    sleep 0.2
    reap
  done
  if any_running; then
    kill_all KILL
    sleep 0.2
    reap
  fi
}

on_signal() {
  trap - INT TERM
  info "got SIG$1; stopping all processes"
  shutdown
  exit "$2"
}
trap 'on_signal INT 130' INT
trap 'on_signal TERM 143' TERM
trap 'kill_all KILL' EXIT

for ((i = 0; i < PROCESSES; i++)); do
  process_cmd "$i"
  log=$LOG_DIR/process_$i.log
  info "+ $(quote "${CMD[@]}") > $(quote "$log")"
  # The --env values reach the process through its environment only; the
  # subshell execs it, so $! is its pid (and, with setsid, its process group).
  if ((i == 0)); then
    (export_envs; exec ${SETSID[@]+"${SETSID[@]}"} "${CMD[@]}") > >(tee "$log") 2>&1 &
  else
    (export_envs; exec ${SETSID[@]+"${SETSID[@]}"} "${CMD[@]}") >"$log" 2>&1 &
  fi
  PIDS+=("$!")
  STATUS+=(running)
done

while any_running; do
  reap
  if [[ -n $FAILED ]]; then
    info "terminating the other processes"
    shutdown
    break
  fi
  any_running && sleep 0.2
done

if [[ -n $FAILED ]]; then
  info "last lines of $LOG_DIR/process_$FAILED.log:"
  tail -n 20 "$LOG_DIR/process_$FAILED.log" >&2 || true
  rc=${STATUS[FAILED]}
  exit $((rc == 0 ? 1 : rc))
fi
info "all $PROCESSES processes finished successfully"
