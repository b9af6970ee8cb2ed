#!/usr/bin/env bash
# Create, set up, train on and tear down a Cloud TPU pod slice (TPU VM).
#
# Every worker VM of the slice runs the same `python main.py ...` command with
# LNRD_DISTRIBUTED=auto, so main.py calls `jax.distributed.initialize()` and
# JAX discovers the coordinator, the number of processes and this worker's
# process id from the TPU metadata server.
#
# Run `launch/tpu_pod.sh --help` for usage.  `--dry-run` (or DRY_RUN=1) prints
# every command instead of running it.
set -euo pipefail

readonly SCRIPT_NAME=${0##*/}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly ROOT

# ---------------------------------------------------------------------------
# Defaults (each can be set through the environment or a flag).
# ---------------------------------------------------------------------------
GCLOUD=${GCLOUD:-gcloud}
NAME=${LNRD_TPU_NAME:-lnrd-tpu}
ZONE=${LNRD_TPU_ZONE:-us-central2-b}
PROJECT=${LNRD_TPU_PROJECT:-}
ACCELERATOR_TYPE=${LNRD_TPU_ACCELERATOR_TYPE:-v4-32}
RUNTIME_VERSION=${LNRD_TPU_VERSION:-tpu-ubuntu2204-base}
QUEUED=${LNRD_TPU_QUEUED:-0}
QUEUED_RESOURCE_ID=${LNRD_TPU_QUEUED_RESOURCE_ID:-}
QR_TRACK=${LNRD_TPU_QR_TRACK:-alpha}          # gcloud release track for queued-resources
SPOT=${LNRD_TPU_SPOT:-0}
RESERVED=${LNRD_TPU_RESERVED:-0}
RESERVATION=${LNRD_TPU_RESERVATION:-}
BEST_EFFORT=${LNRD_TPU_BEST_EFFORT:-0}
VALID_UNTIL=${LNRD_TPU_VALID_UNTIL:-}
WAIT=0
WAIT_TIMEOUT=${LNRD_TPU_WAIT_TIMEOUT:-3600}
CONFIG=${LNRD_CONFIG:-}
WORKDIR=${LNRD_WORKDIR:-}
DATA_DIR=${LNRD_DATA_DIR:-}
REPO=${LNRD_REPO:-}                           # git URL; empty = copy this checkout
REF=${LNRD_REF:-HEAD}
JAX_SPEC=${LNRD_JAX_SPEC:-jax[tpu]}
REMOTE_DIR=${LNRD_REMOTE_DIR:-lnrd}           # relative paths are under $HOME
REMOTE_VENV=${LNRD_REMOTE_VENV:-lnrd-venv}
REMOTE_LOG_DIR=${LNRD_REMOTE_LOG_DIR:-lnrd-logs}
WORKER=${LNRD_TPU_WORKER:-}
LINES=${LNRD_LOG_LINES:-100}
FOLLOW=1
FORCE=0
PROCS=0
DRY_RUN=${DRY_RUN:-0}
ENVS=()
SSH_FLAGS=()
TAR_EXCLUDES=()
EXTRA=()
SUBCOMMAND=""
_env=""
_x=""

usage() {
  cat <<EOF
Usage: $SCRIPT_NAME [options] SUBCOMMAND [options] [-- EXTRA_ARGS...]

Manage a Cloud TPU VM / pod slice and run main.py on all of its workers.

Subcommands:
  create   Create the TPU VM (skipped if it exists).  With --queued, --spot,
           --reserved, --reservation, --best-effort or --valid-until, a queued
           resource is requested instead ('gcloud $QR_TRACK compute tpus
           queued-resources create ... --node-id NAME').  EXTRA_ARGS are
           passed to gcloud.
  setup    On all workers (idempotent): create a venv if missing, then
           'pip install -U "$JAX_SPEC" -e SRC', where SRC is a clone of --repo
           (at --ref) or, without --repo, a tarball of this checkout copied
           with 'scp --worker=all'.  Skipped on workers where that source
           version is already installed (--force reinstalls).
  run      Start 'LNRD_DISTRIBUTED=auto python main.py --config=CONFIG
           --workdir=WORKDIR [--config.dataset.data_dir=DATA_DIR] EXTRA_ARGS'
           under nohup (in its own process group, with a unique LNRD_RUN_ID)
           on all workers; each worker logs to
           ~/$REMOTE_LOG_DIR/train_worker<N>.log (symlinked as train.log) and
           records the pid and run id in ~/$REMOTE_LOG_DIR/train.pid.
  logs     Follow the training log of worker 0 (or --worker=N).
  stop     Kill the run recorded in train.pid on all workers, and nothing
           else (idempotent).
  delete   Delete the TPU VM, or the queued resource with --queued (--quiet).
  status   Describe the TPU VM / queued resource; with --procs also show the
           recorded training process on every worker.

Options (environment variable in brackets):
  --name NAME              TPU VM name / node id [LNRD_TPU_NAME] ($NAME)
  --zone ZONE              zone [LNRD_TPU_ZONE] ($ZONE)
  --project PROJECT        GCP project [LNRD_TPU_PROJECT] (gcloud default)
  --accelerator-type TYPE  [LNRD_TPU_ACCELERATOR_TYPE] ($ACCELERATOR_TYPE)
  --version VERSION        TPU runtime [LNRD_TPU_VERSION] ($RUNTIME_VERSION)
  --queued                 use a queued resource [LNRD_TPU_QUEUED=1]
  --queued-resource-id ID  queued resource id [LNRD_TPU_QUEUED_RESOURCE_ID]
                           (default: NAME)
  --spot | --reserved | --best-effort
                           provisioning model of the queued resource
  --reservation NAME       specific reservation (implies --queued)
  --valid-until DURATION   e.g. 6h: give up the queued request after this
  --wait                   create: wait until the TPU is READY / ACTIVE
  --config PATH[:ARG]      main.py config [LNRD_CONFIG], e.g. configs/mnist_sym.py
  --workdir gs://...       shared work dir [LNRD_WORKDIR]
  --data-dir gs://...      TFDS data dir [LNRD_DATA_DIR]
  --env KEY=VALUE          extra environment for main.py (repeatable); the
                           values go to the workers in a mode-600 file (scp),
                           never on a command line, and are never printed
  --repo URL               git URL to install from [LNRD_REPO]
                           (default: copy this checkout as a tarball)
  --ref REF                git branch / tag / commit [LNRD_REF] ($REF)
  --jax-spec SPEC          JAX requirement [LNRD_JAX_SPEC] ($JAX_SPEC)
  --tar-exclude PATTERN    also leave PATTERN out of the tarball (repeatable)
  --remote-dir DIR         source dir on the workers [LNRD_REMOTE_DIR] (~/$REMOTE_DIR)
  --remote-venv DIR        venv on the workers [LNRD_REMOTE_VENV] (~/$REMOTE_VENV)
  --remote-log-dir DIR     log dir on the workers [LNRD_REMOTE_LOG_DIR] (~/$REMOTE_LOG_DIR)
  --worker N|all           worker(s) to talk to (logs: 0, otherwise: all)
  --lines N                logs: lines of history to show ($LINES)
  --no-follow              logs: print and exit instead of following
  --procs                  status: also list training processes on the workers
  --force                  setup: reinstall even if up to date
  --ssh-flag FLAG          extra flag for 'gcloud ... ssh/scp', e.g.
                           --ssh-flag=--tunnel-through-iap (repeatable)
  --dry-run                print the commands instead of running them [DRY_RUN=1]
  -h, --help               show this help

Example (TPU pod end to end):
  export LNRD_TPU_NAME=my-v4-32 LNRD_TPU_ZONE=us-central2-b
  $SCRIPT_NAME create --accelerator-type v4-32
  $SCRIPT_NAME setup
  $SCRIPT_NAME run --config configs/mnist_sym.py:method=ce \\
      --workdir gs://BUCKET/runs/mnist --data-dir gs://BUCKET/tensorflow_datasets \\
      -- --config.seed=1
  $SCRIPT_NAME logs
  $SCRIPT_NAME stop
  $SCRIPT_NAME delete
EOF
}

# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------------------
# Argument parsing: options may come before or after the subcommand.
# ---------------------------------------------------------------------------
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --name | --name=*) optval NAME "$@"; shift "$NSHIFT" ;;
    --zone | --zone=*) optval ZONE "$@"; shift "$NSHIFT" ;;
    --project | --project=*) optval PROJECT "$@"; shift "$NSHIFT" ;;
    --accelerator-type | --accelerator-type=*) optval ACCELERATOR_TYPE "$@"; shift "$NSHIFT" ;;
    --version | --version=* | --runtime-version | --runtime-version=*)
      optval RUNTIME_VERSION "$@"; shift "$NSHIFT" ;;
    --queued) QUEUED=1; shift ;;
    --queued-resource-id | --queued-resource-id=*) optval QUEUED_RESOURCE_ID "$@"; shift "$NSHIFT" ;;
    --spot) SPOT=1; shift ;;
    --reserved) RESERVED=1; shift ;;
    --best-effort) BEST_EFFORT=1; shift ;;
    --reservation | --reservation=*) optval RESERVATION "$@"; shift "$NSHIFT" ;;
    --valid-until | --valid-until=*) optval VALID_UNTIL "$@"; shift "$NSHIFT" ;;
    --wait) WAIT=1; shift ;;
    --wait-timeout | --wait-timeout=*) optval WAIT_TIMEOUT "$@"; shift "$NSHIFT" ;;
    --config | --config=*) optval CONFIG "$@"; shift "$NSHIFT" ;;
    --workdir | --workdir=*) optval WORKDIR "$@"; shift "$NSHIFT" ;;
    --data-dir | --data-dir=*) optval DATA_DIR "$@"; shift "$NSHIFT" ;;
    --env | --env=*) optval _env "$@"; shift "$NSHIFT"; add_env "$_env" ;;
    --repo | --repo=*) optval REPO "$@"; shift "$NSHIFT" ;;
    --ref | --ref=*) optval REF "$@"; shift "$NSHIFT" ;;
    --jax-spec | --jax-spec=*) optval JAX_SPEC "$@"; shift "$NSHIFT" ;;
    --tar-exclude | --tar-exclude=*) optval _x "$@"; shift "$NSHIFT"; TAR_EXCLUDES+=("$_x") ;;
    --remote-dir | --remote-dir=*) optval REMOTE_DIR "$@"; shift "$NSHIFT" ;;
    --remote-venv | --remote-venv=*) optval REMOTE_VENV "$@"; shift "$NSHIFT" ;;
    --remote-log-dir | --remote-log-dir=*) optval REMOTE_LOG_DIR "$@"; shift "$NSHIFT" ;;
    --worker | --worker=*) optval WORKER "$@"; shift "$NSHIFT" ;;
    --lines | --lines=*) optval LINES "$@"; shift "$NSHIFT" ;;
    --no-follow) FOLLOW=0; shift ;;
    --procs) PROCS=1; shift ;;
    --force) FORCE=1; shift ;;
    --ssh-flag | --ssh-flag=*)
      if [[ $1 == *=* ]]; then SSH_FLAGS+=("${1#*=}"); shift
      elif (($# >= 2)); then SSH_FLAGS+=("$2"); shift 2
      else die "option --ssh-flag requires a value"; fi ;;
    --) shift; EXTRA=("$@"); break ;;
    -*) die "unknown option: $1 (see $SCRIPT_NAME --help)" ;;
    *)
      [[ -z $SUBCOMMAND ]] || die "unexpected argument: '$1' (extra main.py arguments go after '--')"
      SUBCOMMAND=$1; shift ;;
  esac
done

is_true "$DRY_RUN" && DRY_RUN=1 || DRY_RUN=0
is_true "$QUEUED" && QUEUED=1 || QUEUED=0
is_true "$SPOT" && SPOT=1 || SPOT=0
is_true "$RESERVED" && RESERVED=1 || RESERVED=0
is_true "$BEST_EFFORT" && BEST_EFFORT=1 || BEST_EFFORT=0
# Any provisioning option other than on-demand needs a queued resource.
if ((SPOT || RESERVED || BEST_EFFORT)) || [[ -n $RESERVATION || -n $VALID_UNTIL ]]; then
  QUEUED=1
fi
QUEUED_RESOURCE_ID=${QUEUED_RESOURCE_ID:-$NAME}

[[ -n $SUBCOMMAND ]] || { usage >&2; die "missing subcommand"; }
[[ -n $NAME ]] || die "--name must not be empty"
[[ -n $ZONE ]] || die "--zone must not be empty"
[[ $LINES =~ ^[0-9]+$ ]] || die "--lines expects a number, got '$LINES'"
[[ $WAIT_TIMEOUT =~ ^[0-9]+$ ]] || die "--wait-timeout expects seconds, got '$WAIT_TIMEOUT'"
[[ -z $WORKER || $WORKER == all || $WORKER =~ ^[0-9]+(,[0-9]+)*$ ]] ||
  die "--worker expects a number, a comma-separated list or 'all', got '$WORKER'"

# Remote paths are relative to $HOME on the workers; accept a leading "~/".
for _v in REMOTE_DIR REMOTE_VENV REMOTE_LOG_DIR; do
  _p=${!_v}
  _p=${_p#\~/}
  case $_p in
    "" | / | . | .. | "~") _o=${_v,,}; die "refusing to use '${!_v}' as --${_o//_/-} (use a dedicated directory)" ;;
  esac
  printf -v "$_v" '%s' "$_p"
done
unset _v _p

# ---------------------------------------------------------------------------
# gcloud helpers
# ---------------------------------------------------------------------------
GCLOUD_LOC=("--zone=$ZONE")
[[ -z $PROJECT ]] || GCLOUD_LOC+=("--project=$PROJECT")

tpu_vm() { run "$GCLOUD" compute tpus tpu-vm "$@"; }
queued() { run "$GCLOUD" "$QR_TRACK" compute tpus queued-resources "$@"; }

# Quiet existence checks (real mode only; in a dry run they are not needed).
node_exists() {
  "$GCLOUD" compute tpus tpu-vm describe "$NAME" "${GCLOUD_LOC[@]}" --format='value(name)' >/dev/null 2>&1
}
qr_exists() {
  "$GCLOUD" "$QR_TRACK" compute tpus queued-resources describe "$QUEUED_RESOURCE_ID" \
    "${GCLOUD_LOC[@]}" --format='value(name)' >/dev/null 2>&1
}

# ssh WORKERS REMOTE_COMMAND: run a bash command line on the given workers.
ssh_workers() {
  local workers=$1 cmd=$2
  tpu_vm ssh "$NAME" "${GCLOUD_LOC[@]}" "--worker=$workers" ${SSH_FLAGS[@]+"${SSH_FLAGS[@]}"} --command "$cmd"
}

# Remote path: relative paths are under $HOME on the worker.
# shellcheck disable=SC2016  # $HOME is expanded on the worker
rpath() {
  if [[ $1 == /* ]]; then quote "$1"; else printf '"$HOME"/%s\n' "$(quote "$1")"; fi
}

# Start of every remote command: strict mode and the paths used on the workers.
remote_prelude() {
  join_lines 'set -euo pipefail' "SRC=$(rpath "$REMOTE_DIR")" "VENV=$(rpath "$REMOTE_VENV")" \
    "LOG_DIR=$(rpath "$REMOTE_LOG_DIR")" "$@"
}

# The run's pid file on each worker: "PID RUN_ID".  `run` starts main.py with
# setsid (so PID is also its process group) and LNRD_RUN_ID=RUN_ID in its
# environment; `stop` and `status` act on that process group only, and only
# while PID is still this run (its /proc/PID/environ has LNRD_RUN_ID=RUN_ID; a
# reused pid does not), never on other users' or runs' `python main.py`.
# run_alive sets PF_PID and PF_RID and succeeds if that run is still alive.
# shellcheck disable=SC2016  # expanded on the worker
PID_DEF=(
  'PIDFILE=$LOG_DIR/train.pid'
  'run_alive() { PF_PID=""; PF_RID=""; [ -f "$PIDFILE" ] || return 1; read -r PF_PID PF_RID < "$PIDFILE" || true; case $PF_PID in "" | *[!0-9]*) return 1 ;; esac; [ -n "$PF_RID" ] || return 1; if [ -e "/proc/$PF_PID" ]; then grep -qzxF "LNRD_RUN_ID=$PF_RID" "/proc/$PF_PID/environ" 2>/dev/null; else kill -0 -- "-$PF_PID" 2>/dev/null; fi; }'
)

# Join shell statements into a one-line command.
join_lines() {
  local out="" s
  for s in "$@"; do out+="${out:+; }$s"; done
  printf '%s\n' "$out"
}

wait_ready() {
  local deadline=$((SECONDS + WAIT_TIMEOUT)) state
  if [[ $DRY_RUN == 1 ]]; then
    info "(dry run) would poll the state until READY/ACTIVE"
    return 0
  fi
  while :; do
    if ((QUEUED)); then
      state=$("$GCLOUD" "$QR_TRACK" compute tpus queued-resources describe "$QUEUED_RESOURCE_ID" \
        "${GCLOUD_LOC[@]}" --format='value(state.state)' 2>/dev/null || true)
    else
      state=$("$GCLOUD" compute tpus tpu-vm describe "$NAME" "${GCLOUD_LOC[@]}" \
        --format='value(state)' 2>/dev/null || true)
    fi
    info "state: ${state:-unknown}"
    case $state in
      READY | ACTIVE) return 0 ;;
      FAILED | SUSPENDED | DELETING) die "TPU ended up in state $state" ;;
    esac
    ((SECONDS < deadline)) || die "timed out after ${WAIT_TIMEOUT}s waiting for the TPU"
    sleep 30
  done
}

# ---------------------------------------------------------------------------
# Subcommands
# ---------------------------------------------------------------------------
cmd_create() {
  if ((QUEUED)); then
    if [[ $DRY_RUN == 0 ]] && qr_exists; then
      info "queued resource '$QUEUED_RESOURCE_ID' already exists; not creating it again"
    else
      local args=(create "$QUEUED_RESOURCE_ID" "--node-id=$NAME" "${GCLOUD_LOC[@]}"
        "--accelerator-type=$ACCELERATOR_TYPE" "--runtime-version=$RUNTIME_VERSION")
      ((SPOT)) && args+=(--spot)
      ((RESERVED)) && args+=(--reserved)
      ((BEST_EFFORT)) && args+=(--best-effort)
      [[ -z $RESERVATION ]] || args+=("--reservation=$RESERVATION")
      [[ -z $VALID_UNTIL ]] || args+=("--valid-until-duration=$VALID_UNTIL")
      queued "${args[@]}" ${EXTRA[@]+"${EXTRA[@]}"}
      info "requested queued resource '$QUEUED_RESOURCE_ID' (node '$NAME'); '$SCRIPT_NAME --queued status' shows its state"
    fi
  else
    if [[ $DRY_RUN == 0 ]] && node_exists; then
      info "TPU VM '$NAME' already exists; not creating it again"
    else
      tpu_vm create "$NAME" "${GCLOUD_LOC[@]}" "--accelerator-type=$ACCELERATOR_TYPE" \
        "--version=$RUNTIME_VERSION" ${EXTRA[@]+"${EXTRA[@]}"}
    fi
  fi
  if ((WAIT)); then wait_ready; fi
}

# shellcheck disable=SC2016  # the $... below are expanded on the worker
cmd_setup() {
  local tarball="" tmpdir="" lines
  lines=("$(remote_prelude)" "JAX_SPEC=$(quote "$JAX_SPEC")" "FORCE=$FORCE")
  if [[ -n $REPO ]]; then
    # Clone (or update) the repository: main.py and configs/ live in the
    # checkout, not in the installed package, so `pip install git+URL` alone
    # would not be enough to run training.
    lines+=(
      "REPO=$(quote "$REPO")"
      "REF=$(quote "$REF")"
      'command -v git >/dev/null || { sudo apt-get -qq update && sudo DEBIAN_FRONTEND=noninteractive apt-get -qq install -y git; }'
      'if [ ! -d "$SRC/.git" ]; then git clone -q "$REPO" "$SRC"; fi'
      'git -C "$SRC" remote set-url origin "$REPO"'
      'git -C "$SRC" fetch -q origin "$REF"'
      'git -C "$SRC" checkout -q --force FETCH_HEAD'
      'KEY="git:$(git -C "$SRC" rev-parse HEAD) jax:$JAX_SPEC"'
    )
  else
    tarball=lnrd-src.tar.gz
    lines+=(
      "TARBALL=\$HOME/$tarball"
      'KEY="tar:$( { tar -tzf "$TARBALL" | LC_ALL=C sort; tar -xzOf "$TARBALL"; } | sha256sum | cut -c1-16) jax:$JAX_SPEC"'
    )
  fi
  lines+=(
    'STAMP=$VENV/.lnrd-setup-stamp'
    'if [ "$FORCE" = 0 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$KEY" ] && "$VENV/bin/python" -c "import jax, lnrd" 2>/dev/null; then echo "$(hostname): already set up ($KEY), skipping"; exit 0; fi'
  )
  if [[ -z $REPO ]]; then
    lines+=('rm -rf "$SRC"' 'mkdir -p "$SRC"' 'tar -xzf "$TARBALL" -C "$SRC"')
  fi
  lines+=(
    # Ubuntu images may lack ensurepip; install python3-venv on demand.
    'if [ ! -x "$VENV/bin/pip" ]; then python3 -m venv "$VENV" || { sudo apt-get -qq update && sudo DEBIAN_FRONTEND=noninteractive apt-get -qq install -y python3-venv && python3 -m venv "$VENV"; }; fi'
    '"$VENV/bin/pip" install -q -U pip'
    # One resolver call, so that jax/libtpu and this package's pins agree.
    '"$VENV/bin/pip" install -U "$JAX_SPEC" -e "$SRC"'
    'echo "$KEY" > "$STAMP"'
    'echo "$(hostname): set up $KEY in $VENV"'
  )

  if [[ -n $tarball ]]; then
    if [[ $DRY_RUN == 1 ]]; then
      tmpdir=${TMPDIR:-/tmp}/lnrd-tpu-setup
      run mkdir -p "$tmpdir"
    else
      tmpdir=$(mktemp -d)
      # shellcheck disable=SC2064  # expand $tmpdir now
      trap "rm -rf '$tmpdir'" EXIT
    fi
    local excludes=(--exclude=.git --exclude=.venv --exclude=venv --exclude=workdirs
      --exclude=__pycache__ --exclude='*.egg-info' --exclude=.pytest_cache
      --exclude=.whl --exclude=./build --exclude=./dist --exclude=./tensorflow_datasets)
    local x
    for x in ${TAR_EXCLUDES[@]+"${TAR_EXCLUDES[@]}"}; do excludes+=("--exclude=$x"); done
    run tar -czf "$tmpdir/$tarball" "${excludes[@]}" -C "$ROOT" .
    tpu_vm scp "$tmpdir/$tarball" "$NAME:$tarball" "${GCLOUD_LOC[@]}" "--worker=${WORKER:-all}" \
      ${SSH_FLAGS[@]+"${SSH_FLAGS[@]}"}
  fi
  ssh_workers "${WORKER:-all}" "$(join_lines "${lines[@]}")"
  if [[ -n $tarball && $DRY_RUN == 1 ]]; then
    run rm -rf "$tmpdir"
  fi
}

# shellcheck disable=SC2016  # the $... below are expanded on the worker
cmd_run() {
  local have_config=0 a
  [[ -n $CONFIG ]] && have_config=1
  for a in ${EXTRA[@]+"${EXTRA[@]}"}; do [[ $a == --config=* ]] && have_config=1; done
  ((have_config)) || die "run needs --config (e.g. --config configs/mnist_sym.py)"
  [[ -n $WORKDIR ]] || die "run needs --workdir (a gs:// path shared by all workers)"
  if [[ $WORKDIR != gs://* ]]; then
    info "warning: --workdir '$WORKDIR' is not on GCS; every worker would write its own local copy"
  fi
  if [[ -n $DATA_DIR && $DATA_DIR != gs://* ]]; then
    info "warning: --data-dir '$DATA_DIR' is not on GCS; it must exist on every worker"
  fi

  local train=(main.py)
  [[ -z $CONFIG ]] || train+=("--config=$CONFIG")
  train+=("--workdir=$WORKDIR")
  [[ -z $DATA_DIR ]] || train+=("--config.dataset.data_dir=$DATA_DIR")
  train+=(${EXTRA[@]+"${EXTRA[@]}"})
  local run_id
  run_id=$(new_run_id)

  # --env values: written to a local file readable only by this user, copied
  # to the workers with scp, sourced there and deleted at once; never on a
  # command line (ps, shell history, logs) and never printed (only the KEYs).
  local lines=("$(remote_prelude "${PID_DEF[@]}")") env_name="" tmpdir="" env_file=""
  if ((${#ENVS[@]})); then
    env_name=.lnrd-env-$run_id
    if [[ $DRY_RUN == 1 ]]; then
      env_file=${TMPDIR:-/tmp}/lnrd-env.XXXXXXXXXX/env
    else
      tmpdir=$(mktemp -d)
      # shellcheck disable=SC2064  # expand $tmpdir now
      trap "rm -rf '$tmpdir'" EXIT
      env_file=$tmpdir/env
      write_env_file "$env_file"
    fi
    lines+=(
      "ENV_FILE=\$HOME/$env_name"
      'trap '"'"'rm -f "$ENV_FILE"'"'"' EXIT'
      'if [ ! -f "$ENV_FILE" ]; then echo "$(hostname): $ENV_FILE is missing (the --env values)" >&2; exit 1; fi'
      'set -a; . "$ENV_FILE"; set +a; rm -f "$ENV_FILE"'
    )
  fi
  lines+=(
    'if run_alive; then echo "$(hostname): training is already running (pid $PF_PID, run $PF_RID; use the stop subcommand first)" >&2; exit 1; fi'
    'W=$(curl -sf -m 5 -H Metadata-Flavor:Google http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number || hostname)'
    'mkdir -p "$LOG_DIR"'
    'LOG=$LOG_DIR/train_worker$W.log'
    'ln -sfn "$LOG" "$LOG_DIR/train.log"'
    'echo "=== $(date -u +%FT%TZ) starting training on $(hostname)" >> "$LOG"'
    'cd "$SRC"'
    'SETSID=; if command -v setsid >/dev/null; then SETSID=setsid; fi'
    "RUN_ID=$(quote "$run_id")"
    "LNRD_DISTRIBUTED=auto LNRD_RUN_ID=\$RUN_ID \$SETSID nohup \"\$VENV/bin/python\" $(quote "${train[@]}") >> \"\$LOG\" 2>&1 < /dev/null & echo \"\$! \$RUN_ID\" > \"\$PIDFILE\""
    'echo "$(hostname): started training (pid $!, run $RUN_ID), log $LOG"'
  )
  info "run id: $run_id"
  if [[ -n $env_name ]]; then
    announce_envs
    tpu_vm scp "$env_file" "$NAME:$env_name" "${GCLOUD_LOC[@]}" "--worker=${WORKER:-all}" \
      ${SSH_FLAGS[@]+"${SSH_FLAGS[@]}"}
  fi
  local rc=0
  ssh_workers "${WORKER:-all}" "$(join_lines "${lines[@]}")" || rc=$?
  if ((rc)) && [[ -n $env_name ]]; then
    # Do not leave the values behind on workers where the command did not run.
    ssh_workers "${WORKER:-all}" "rm -f \"\$HOME\"/$env_name" >/dev/null 2>&1 || true
  fi
  return "$rc"
}

# A unique id for a run: UTC time and 32 random bits.
new_run_id() {
  printf '%s-%s\n' "$(date -u +%Y%m%dT%H%M%SZ)" "$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
}

# shellcheck disable=SC2016  # the $... below are expanded on the worker
cmd_logs() {
  local tail_cmd
  if ((FOLLOW)); then
    tail_cmd="tail -n $LINES -F \"\$LOG_DIR/train.log\""
  else
    tail_cmd="tail -n $LINES \"\$LOG_DIR/train.log\""
  fi
  ssh_workers "${WORKER:-0}" "$(remote_prelude "$tail_cmd")"
}

# shellcheck disable=SC2016  # the $... below are expanded on the worker
cmd_stop() {
  # Signal the recorded process group (falling back to the pid without setsid).
  local lines=(
    "$(remote_prelude "${PID_DEF[@]}")"
    'if ! run_alive; then rm -f "$PIDFILE"; echo "$(hostname): no training process running"; exit 0; fi'
    'kill -TERM -- "-$PF_PID" 2>/dev/null || kill -TERM "$PF_PID" 2>/dev/null || true'
    'for _ in $(seq 30); do run_alive || break; sleep 1; done'
    'if run_alive; then kill -KILL -- "-$PF_PID" 2>/dev/null || kill -KILL "$PF_PID" 2>/dev/null || true; sleep 1; fi'
    'rm -f "$PIDFILE"'
    # A killed process can leave libtpu's lock file behind.
    'rm -f /tmp/libtpu_lockfile 2>/dev/null || true'
    'echo "$(hostname): training stopped (pid $PF_PID, run $PF_RID)"'
  )
  ssh_workers "${WORKER:-all}" "$(join_lines "${lines[@]}")"
}

cmd_delete() {
  # Without --queued, still delete a queued resource of that id if there is one
  # (its node would otherwise be re-created or left behind).
  if ((!QUEUED)) && [[ $DRY_RUN == 0 ]] && qr_exists; then
    QUEUED=1
  fi
  if ((QUEUED)); then
    if [[ $DRY_RUN == 0 ]] && ! qr_exists; then
      info "queued resource '$QUEUED_RESOURCE_ID' does not exist; nothing to delete"
      return 0
    fi
    # --force also deletes the TPU VM that belongs to the queued resource.
    queued delete "$QUEUED_RESOURCE_ID" "${GCLOUD_LOC[@]}" --quiet --force
  else
    if [[ $DRY_RUN == 0 ]] && ! node_exists; then
      info "TPU VM '$NAME' does not exist; nothing to delete"
      return 0
    fi
    tpu_vm delete "$NAME" "${GCLOUD_LOC[@]}" --quiet
  fi
}

# shellcheck disable=SC2016  # the $... below are expanded on the worker
cmd_status() {
  if ((QUEUED)); then
    queued describe "$QUEUED_RESOURCE_ID" "${GCLOUD_LOC[@]}"
  fi
  tpu_vm describe "$NAME" "${GCLOUD_LOC[@]}" \
    '--format=table(name.basename(),state,health,acceleratorType,runtimeVersion)'
  if ((PROCS)); then
    ssh_workers "${WORKER:-all}" "$(remote_prelude "${PID_DEF[@]}" \
      'if run_alive; then echo "$(hostname): run $PF_RID: $(ps -o pid=,etime=,args= -p "$PF_PID" || echo "pid $PF_PID")"; else echo "$(hostname): no training process running"; fi')"
  fi
}

case $SUBCOMMAND in
  create) cmd_create ;;
  setup) cmd_setup ;;
  run) cmd_run ;;
  logs) cmd_logs ;;
  stop) cmd_stop ;;
  delete) cmd_delete ;;
  status) cmd_status ;;
  *) die "unknown subcommand: '$SUBCOMMAND' (expected create, setup, run, logs, stop, delete or status)" ;;
esac
