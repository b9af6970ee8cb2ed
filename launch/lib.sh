# Helpers shared by the launch/ scripts; sourced, not run.
# The sourcing script sets SCRIPT_NAME and DRY_RUN first.
# shellcheck shell=bash

die() {
  printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2
  exit 2
}

info() {
  printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2
}

# Shell-quote each argument (single quotes where needed) and join with spaces.
quote() {
  local out="" a q
  for a in "$@"; do
    if [[ -n $a && $a != *[!A-Za-z0-9_./:=@%+,-]* ]]; then
      q=$a
    else
      q="'${a//\'/\'\\\'\'}'"
    fi
    out+="${out:+ }$q"
  done
  printf '%s\n' "$out"
}

# Run a command, or only print it with --dry-run.
run() {
  if [[ $DRY_RUN == 1 ]]; then
    quote "$@"
  else
    info "+ $(quote "$@")"
    "$@"
  fi
}

# optval VAR "$@": read the value of option $1 ("--opt=value" or "--opt value")
# into VAR and set NSHIFT (read by the caller) to the number of arguments consumed.
# shellcheck disable=SC2034
NSHIFT=1
# shellcheck disable=SC2034
optval() {
  local var=$1
  shift
  if [[ $1 == --*=* ]]; then
    printf -v "$var" '%s' "${1#*=}"
    NSHIFT=1
  elif (($# >= 2)) && [[ $2 != --* ]]; then
    printf -v "$var" '%s' "$2"
    NSHIFT=2
  else
    die "option ${1%%=*} requires a value"
  fi
}

is_true() {
  case ${1,,} in
    1 | true | yes | on) return 0 ;;
    *) return 1 ;;
  esac
}

# ---------------------------------------------------------------------------
# --env KEY=VALUE: values may be secrets (tokens, keys).  They are never
# printed and never put on a command line (visible in `ps`, shell history and
# logs); only the KEY names are shown.  The sourcing script declares ENVS=().
# ---------------------------------------------------------------------------

# add_env KEY=VALUE: check and record one --env argument (not echoed on error:
# a malformed argument may be the secret itself).
add_env() {
  [[ $1 =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] ||
    die "--env expects KEY=VALUE with KEY a variable name (the argument is not shown)"
  ENVS+=("$1")
}

# The KEY names of the --env arguments, space-separated.
env_keys() {
  local e keys=""
  for e in ${ENVS[@]+"${ENVS[@]}"}; do keys+="${keys:+ }${e%%=*}"; done
  printf '%s\n' "$keys"
}

# Say which --env variables main.py gets (names only): a comment line on stdout
# in a dry run, a message on stderr otherwise.
announce_envs() {
  ((${#ENVS[@]})) || return 0
  if [[ $DRY_RUN == 1 ]]; then
    printf '# environment for main.py (values not shown): %s\n' "$(env_keys)"
  else
    info "environment for main.py (values not shown): $(env_keys)"
  fi
}

# Export the --env variables into this shell, to be inherited by the processes
# it starts.  Call it in the subshell that execs the process, so that a KEY
# cannot overwrite a variable of the script itself.
export_envs() {
  local e
  for e in ${ENVS[@]+"${ENVS[@]}"}; do
    export "${e%%=*}=${e#*=}" || die "cannot pass --env ${e%%=*} (a read-only variable of $SCRIPT_NAME)"
  done
}

# Write the --env variables as `export KEY='VALUE'` lines to the new file $1,
# readable by the current user only.
write_env_file() {
  local e
  (
    umask 077
    for e in ${ENVS[@]+"${ENVS[@]}"}; do
      printf 'export %s=%s\n' "${e%%=*}" "$(quote "${e#*=}")"
    done >"$1"
  )
}

# private_dir DIR HINT: use DIR, a DEFAULT path in a shared, predictable place
# such as /tmp, only if it is a real directory owned by the current user; create
# it (mode 700) if it does not exist.  Anyone can plant a symlink at such a path
# to make the script write where they want, so refuse anything else (HINT says
# which option to pass instead).
private_dir() {
  local d=$1 hint=$2
  if [[ ! -e $d && ! -L $d ]]; then
    if [[ $DRY_RUN == 1 ]]; then
      quote mkdir -m 700 "$d"
      return 0
    fi
    # mkdir fails if a symlink was planted in the meantime.
    mkdir -m 700 -- "$d" 2>/dev/null || true
  fi
  if [[ -L $d || ! -d $d || ! -O $d ]]; then
    die "refusing to use '$d': it is a symlink or not a directory owned by $(id -un) ($hint)"
  fi
}
