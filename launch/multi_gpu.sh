#!/usr/bin/env bash
# Train on one host with several GPUs.
#
# By default main.py runs as ONE process that sees all (or the selected) GPUs.
# JAX is single-controller: one Python process drives every local device, and
# the jitted/sharded training step is spread over all GPUs of the host, so no
# per-GPU processes or jax.distributed are needed on a single machine.
#
# With --processes N it instead starts N processes on this host, one per GPU,
# joined through jax.distributed (JAX_COORDINATOR_ADDRESS=localhost:PORT,
# JAX_NUM_PROCESSES=N, JAX_PROCESS_ID=i, CUDA_VISIBLE_DEVICES=<its GPU>): the
# same layout as a multi-host cluster, useful to test the multi-process path.
#
# Run `launch/multi_gpu.sh --help` for usage.  `--dry-run` (or DRY_RUN=1)
# prints every command instead of running it.
set -euo pipefail

readonly SCRIPT_NAME=${0##*/}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly ROOT

VENV=${LNRD_VENV:-$ROOT/.venv}
JAX_SPEC=${LNRD_JAX_SPEC:-jax[cuda12]}
CONFIG=${LNRD_CONFIG:-}
WORKDIR=${LNRD_WORKDIR:-}
DATA_DIR=${LNRD_DATA_DIR:-}
LOG_DIR=${LNRD_LOG_DIR:-}
GPUS=${LNRD_GPUS:-}
PROCESSES=${LNRD_PROCESSES:-0}
PORT=${LNRD_PORT:-12355}
GRACE=${LNRD_GRACE:-10}
DRY_RUN=${DRY_RUN:-0}
ENVS=()
EXTRA=()
_env=""
SUBCOMMAND=""

usage() {
  cat <<EOF
Usage: $SCRIPT_NAME [options] SUBCOMMAND [options] [-- MAIN_PY_ARGS...]

Subcommands:
  setup   Create the venv if missing, then
          'pip install -U "$JAX_SPEC" -e ROOT' (ROOT = $ROOT).
  run     Run 'python main.py --config=CONFIG --workdir=WORKDIR
          [--config.dataset.data_dir=DATA_DIR] MAIN_PY_ARGS' as ONE process
          that drives all visible GPUs (JAX single-controller), logging to
          WORKDIR/train.log through tee.  With --processes N: N processes,
          one per GPU, logging to WORKDIR/process_i.log.

Options (environment variable in brackets):
  --config PATH[:ARG]  main.py config [LNRD_CONFIG] (or --config=... after --)
  --workdir DIR        work dir, local or gs:// [LNRD_WORKDIR] (required)
  --data-dir DIR       TFDS data dir [LNRD_DATA_DIR]
  --gpus 0,1,2,3       GPUs to use, exported as CUDA_VISIBLE_DEVICES [LNRD_GPUS]
                       (default: all)
  --processes N        N processes, one per GPU, instead of one process
                       [LNRD_PROCESSES]
  --port PORT          coordinator port for --processes [LNRD_PORT] ($PORT)
  --log-dir DIR        where logs go [LNRD_LOG_DIR] (default: WORKDIR, or
                       \${TMPDIR:-/tmp}/lnrd_logs when WORKDIR is gs://; that
                       one is refused if it is a symlink or not your own dir)
  --env KEY=VALUE      extra environment for main.py (repeatable); exported to
                       the process(es), never printed (only KEY is shown)
  --grace SECONDS      --processes: SIGTERM-to-SIGKILL delay on failure ($GRACE)
  --venv DIR           virtualenv [LNRD_VENV] ($VENV)
  --jax-spec SPEC      JAX requirement for setup [LNRD_JAX_SPEC] ($JAX_SPEC)
  --dry-run            print the commands instead of running them [DRY_RUN=1]
  -h, --help           show this help
  PYTHON               environment variable: interpreter for run (default:
                       VENV/bin/python if it exists, else python3) and for
                       creating the venv (default: python3)

Examples:
  $SCRIPT_NAME setup
  $SCRIPT_NAME run --config configs/mnist_sym.py:method=ce --workdir workdirs/mnist
  $SCRIPT_NAME run --gpus 0,1 --config configs/mnist_sym.py --workdir /tmp/w -- --config.seed=1
  $SCRIPT_NAME run --processes 4 --config configs/mnist_sym.py --workdir /tmp/w
EOF
}

# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --config | --config=*) optval CONFIG "$@"; shift "$NSHIFT" ;;
    --workdir | --workdir=*) optval WORKDIR "$@"; shift "$NSHIFT" ;;
    --data-dir | --data-dir=*) optval DATA_DIR "$@"; shift "$NSHIFT" ;;
    --gpus | --gpus=*) optval GPUS "$@"; shift "$NSHIFT" ;;
    --processes | --processes=*) optval PROCESSES "$@"; shift "$NSHIFT" ;;
    --port | --port=*) optval PORT "$@"; shift "$NSHIFT" ;;
    --log-dir | --log-dir=*) optval LOG_DIR "$@"; shift "$NSHIFT" ;;
    --grace | --grace=*) optval GRACE "$@"; shift "$NSHIFT" ;;
    --env | --env=*) optval _env "$@"; shift "$NSHIFT"; add_env "$_env" ;;
    --venv | --venv=*) optval VENV "$@"; shift "$NSHIFT" ;;
    --jax-spec | --jax-spec=*) optval JAX_SPEC "$@"; shift "$NSHIFT" ;;
    --) shift; EXTRA=("$@"); break ;;
    -*) die "unknown option: $1 (see $SCRIPT_NAME --help)" ;;
    *)
      [[ -z $SUBCOMMAND ]] || die "unexpected argument: '$1' (main.py arguments go after '--')"
      SUBCOMMAND=$1; shift ;;
  esac
done

is_true "$DRY_RUN" && DRY_RUN=1 || DRY_RUN=0
[[ -n $SUBCOMMAND ]] || { usage >&2; die "missing subcommand (setup or run)"; }

abspath() { if [[ $1 == /* || $1 == *://* ]]; then printf '%s\n' "$1"; else printf '%s\n' "$PWD/$1"; fi; }
VENV=$(abspath "$VENV")

cmd_setup() {
  ((${#EXTRA[@]} == 0)) || die "setup takes no extra arguments"
  if [[ -x $VENV/bin/python ]]; then
    info "venv $VENV exists"
  else
    run "${PYTHON:-python3}" -m venv "$VENV"
  fi
  run "$VENV/bin/python" -m pip install -U pip
  # One resolver call, so that the CUDA jaxlib plugin and this package's pins agree.
  run "$VENV/bin/python" -m pip install -U "$JAX_SPEC" -e "$ROOT"
}

# ---------------------------------------------------------------------------
# --processes N: start N processes, wait for all, kill the rest if one fails.
# ---------------------------------------------------------------------------
PIDS=()
STATUS=()
SETSID=()
FAILED=""
STOPPING=0

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
  for s in ${STATUS[@]+"${STATUS[@]}"}; do [[ $s != running ]] || return 0; done
  return 1
}

# Reap the processes that have exited; sets FAILED to the first failure.
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

run_processes() {
  local train=("$@") gpu_list=() i log
  if [[ -n $GPUS ]]; then
    IFS=, read -r -a gpu_list <<<"$GPUS"
  else
    for ((i = 0; i < PROCESSES; i++)); do gpu_list+=("$i"); done
  fi

  local cmds=()
  for ((i = 0; i < PROCESSES; i++)); do
    cmds[i]=$(quote env "JAX_COORDINATOR_ADDRESS=localhost:$PORT" "JAX_NUM_PROCESSES=$PROCESSES" \
      "JAX_PROCESS_ID=$i" "CUDA_VISIBLE_DEVICES=${gpu_list[i]}" "${train[@]}")
  done

  if [[ $DRY_RUN == 1 ]]; then
    for ((i = 0; i < PROCESSES; i++)); do
      log=$(quote "$LOG_DIR/process_$i.log")
      if ((i == 0)); then
        printf '%s 2>&1 | tee %s &\n' "${cmds[i]}" "$log"
      else
        printf '%s > %s 2>&1 &\n' "${cmds[i]}" "$log"
      fi
    done
    echo wait
    return 0
  fi

  # setsid puts each process (and anything it forks) into its own process
  # group, so that the whole group can be signalled.
  if command -v setsid >/dev/null 2>&1; then SETSID=(setsid); fi
  trap 'on_signal INT 130' INT
  trap 'on_signal TERM 143' TERM
  trap 'kill_all KILL' EXIT
  for ((i = 0; i < PROCESSES; i++)); do
    log=$LOG_DIR/process_$i.log
    info "+ ${cmds[i]} > $(quote "$log")"
    # The --env values reach the process through its environment only; the
    # subshell execs it, so $! is its pid (and, with setsid, its process group).
    if ((i == 0)); then
      (export_envs; exec ${SETSID[@]+"${SETSID[@]}"} env "JAX_COORDINATOR_ADDRESS=localhost:$PORT" \
        "JAX_NUM_PROCESSES=$PROCESSES" "JAX_PROCESS_ID=$i" "CUDA_VISIBLE_DEVICES=${gpu_list[i]}" \
        "${train[@]}") > >(tee "$log") 2>&1 &
    else
      (export_envs; exec ${SETSID[@]+"${SETSID[@]}"} env "JAX_COORDINATOR_ADDRESS=localhost:$PORT" \
        "JAX_NUM_PROCESSES=$PROCESSES" "JAX_PROCESS_ID=$i" "CUDA_VISIBLE_DEVICES=${gpu_list[i]}" \
        "${train[@]}") >"$log" 2>&1 &
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
    if any_running; then sleep 0.2; fi
  done

  if [[ -n $FAILED ]]; then
    info "last lines of $LOG_DIR/process_$FAILED.log:"
    tail -n 20 "$LOG_DIR/process_$FAILED.log" >&2 || true
    local rc=${STATUS[FAILED]}
    exit $((rc == 0 ? 1 : rc))
  fi
  info "all $PROCESSES processes finished successfully"
}

cmd_run() {
  local have_config=0 a
  [[ -n $CONFIG ]] && have_config=1
  for a in ${EXTRA[@]+"${EXTRA[@]}"}; do [[ $a == --config=* ]] && have_config=1; done
  ((have_config)) || die "run needs --config (e.g. --config configs/mnist_sym.py)"
  [[ -n $WORKDIR ]] || die "run needs --workdir"
  [[ -z $GPUS || $GPUS =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--gpus expects a list like 0,1,2,3, got '$GPUS'"
  [[ $PROCESSES =~ ^[0-9]+$ ]] || die "--processes expects a positive integer, got '$PROCESSES'"
  [[ $GRACE =~ ^[0-9]+$ ]] || die "--grace expects seconds, got '$GRACE'"
  if ! [[ $PORT =~ ^[0-9]+$ ]] || ((PORT < 1 || PORT > 65535)); then
    die "--port expects a port number, got '$PORT'"
  fi
  if [[ -n $GPUS ]] && ((PROCESSES > 0)); then
    local n_gpus
    n_gpus=$(tr ',' '\n' <<<"$GPUS" | wc -l)
    ((n_gpus == PROCESSES)) ||
      die "--gpus lists $n_gpus GPUs but --processes is $PROCESSES (one GPU per process)"
  fi

  # main.py is started from the repository root; make local paths absolute first.
  WORKDIR=$(abspath "$WORKDIR")
  [[ -z $DATA_DIR ]] || DATA_DIR=$(abspath "$DATA_DIR")
  # The default log dir for a gs:// WORKDIR is a predictable path in a shared
  # place: it is used only if it is a real directory owned by the current user.
  local default_log_dir=""
  if [[ -z $LOG_DIR ]]; then
    if [[ $WORKDIR == *://* ]]; then
      LOG_DIR=$(abspath "${TMPDIR:-/tmp}/lnrd_logs")
      default_log_dir=$LOG_DIR
    else
      LOG_DIR=$WORKDIR
    fi
  fi
  LOG_DIR=$(abspath "$LOG_DIR")

  local python=${PYTHON:-}
  if [[ -z $python ]]; then
    if [[ -x $VENV/bin/python ]]; then python=$VENV/bin/python; else python=python3; fi
  fi
  local train=("$python" main.py)
  [[ -z $CONFIG ]] || train+=("--config=$CONFIG")
  train+=("--workdir=$WORKDIR")
  [[ -z $DATA_DIR ]] || train+=("--config.dataset.data_dir=$DATA_DIR")
  train+=(${EXTRA[@]+"${EXTRA[@]}"})

  run cd "$ROOT"
  [[ $WORKDIR == *://* ]] || run mkdir -p "$WORKDIR"
  if [[ -n $default_log_dir ]]; then
    private_dir "$LOG_DIR" "pass --log-dir DIR"
  elif [[ $LOG_DIR != "$WORKDIR" ]]; then
    run mkdir -p "$LOG_DIR"
  fi
  announce_envs

  if ((PROCESSES > 0)); then
    run_processes "${train[@]}"
    return
  fi

  # One process for all GPUs (see the comment at the top of this file).
  local env_args=()
  [[ -z $GPUS ]] || env_args+=("CUDA_VISIBLE_DEVICES=$GPUS")
  local log=$LOG_DIR/train.log
  local cmd=("${train[@]}")
  ((${#env_args[@]} == 0)) || cmd=(env "${env_args[@]}" "${train[@]}")
  if [[ $DRY_RUN == 1 ]]; then
    printf '%s 2>&1 | tee -a %s\n' "$(quote "${cmd[@]}")" "$(quote "$log")"
  else
    info "+ $(quote "${cmd[@]}") 2>&1 | tee -a $(quote "$log")"
    (export_envs; exec "${cmd[@]}") 2>&1 | tee -a "$log"
  fi
}

case $SUBCOMMAND in
  setup) cmd_setup ;;
  run) cmd_run ;;
  *) die "unknown subcommand: '$SUBCOMMAND' (expected setup or run)" ;;
esac
