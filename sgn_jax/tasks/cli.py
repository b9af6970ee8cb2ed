"""The command line of `main.py`: flag parsing with one-message errors.

User errors (a config file argument, a misspelt `--config.key`, a bad value, a
missing flag, and every `sgn_jax.errors.UserError` a task raises) are printed as
`error: <message>` with no traceback and exit status 2. Internal errors keep
their traceback.
"""

from __future__ import annotations

import difflib
import sys

from absl import flags

from sgn_jax import errors
from sgn_jax.training import writers

USAGE_EXIT = 2


def fail(message: str) -> None:
  """Prints `error: message` to stderr and exits with status 2."""
  sys.stderr.write(f"error: {message}\n")
  sys.stderr.flush()
  raise SystemExit(USAGE_EXIT)


def _override_problem(argv, flag_values) -> str | None:
  """The first `--config.a.b=v` of `argv` that names no key of the config file,
  with the nearest valid keys (the config loaded without its overrides)."""
  overrides = [a[2:].split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
  config_args = [a for a in argv[1:] if a.startswith("--config=")]
  if not overrides or not config_args:
    return None
  probe = flags.FlagValues()
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file("config", None, "", flag_values=probe, lock_config=False)
  saved_argv, sys.argv = sys.argv, [argv[0], config_args[-1]]  # config_flags reads sys.argv
  try:
    probe([argv[0], config_args[-1]])
  except Exception:  # pylint: disable=broad-except  (the file itself is the problem)
    return None
  finally:
    sys.argv = saved_argv
  keys = list(writers.flatten(probe.config.to_dict()))
  for override in overrides:
    path = override[len("config."):]
    if path in keys or any(k.startswith(path + ".") for k in keys):
      continue
    near = difflib.get_close_matches(path, keys, n=3, cutoff=0.6)
    file_name = config_args[-1].split("=", 1)[1].split(":", 1)[0]
    hint = (f"; did you mean {' or '.join('--config.' + k for k in near)}?" if near
            else "; every key is described in configs/common.py")
    return f"--{override}: {file_name} has no key {path!r}{hint}"
  return None


def _clean(text: str) -> str:
  """One readable message: a traceback that config_flags embeds in its error is cut to
  the flag and the error's last line; escaped quotes and newlines are undone."""
  text = text.strip()
  if "Traceback (most recent call last)" in text:
    head = text.split(": Error whilst parsing", 1)[0] if text.startswith("flag ") else ""
    last = [l for l in text.splitlines() if l.strip()][-1]
    last = last.split(": ", 1)[1] if ": " in last and last.split(": ", 1)[0].endswith(
        ("Error", "Exception")) else last
    text = f"{head}: {last}" if head else last
  text = text.strip("'\"")
  return text.replace("\\n", " ").replace("\\'", "'").replace('\\"', '"')


def parse_flags(argv, flag_values=flags.FLAGS):
  """absl's flags parser with one-message errors (for `app.run(main, flags_parser=...)`)."""
  try:
    return flag_values(argv)
  except flags.Error as e:
    problem = _override_problem(argv, flag_values)
    fail(problem or _clean(str(e)))
  except (KeyError, AttributeError, ValueError, TypeError) as e:
    problem = _override_problem(argv, flag_values)
    fail(problem or f"{type(e).__name__}: {_clean(str(e))}")
  return None


def load_config(flag_values=flags.FLAGS):
  """`flag_values.config`: the config file is run on first access; its errors (a bad
  `:key=value` argument, an unknown method) are the user's."""
  try:
    return flag_values.config
  except (ValueError, TypeError, KeyError, AttributeError, ImportError, OSError) as e:
    argument = next((a for a in sys.argv[1:] if a.startswith("--config=")), "--config")
    fail(f"{argument}: {_clean(str(e))}")
  return None


def run_user_errors(fn, *args):
  """`fn(*args)`; a `UserError` becomes `fail(message)`."""
  try:
    return fn(*args)
  except errors.UserError as e:
    fail(str(e))
  return None
