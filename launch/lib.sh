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
