"""The command line of `main.py`: flag parsing with one-message errors.

User errors (a config file argument, a misspelt `--config.key`, a bad value, a
missing flag, and every `sgn_jax.errors.UserError` a task raises) are printed as
`error: <message>` with no traceback and exit status 2. Internal errors keep
their traceback.
"""

from __future__ import annotations

import ast
import difflib
import os
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


CONFIG_HOW = ("give a config file of configs/, e.g. --config=configs/mnist_sym.py, "
              "optionally with arguments after a colon: "
              "--config=configs/mnist_sym.py:method=ce,rate=0.4")


def _config_argument(argv) -> str | None:
  """The value of the last `--config=VALUE` (or `--config VALUE`) of `argv`."""
  value = None
  for i, arg in enumerate(argv[1:], 1):
    if arg == "--":
      break
    if arg.startswith("--config="):
      value = arg[len("--config="):]
    elif arg == "--config" and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def _binds(tree: ast.AST, name: str) -> bool:
  """Whether the module `tree` defines, assigns or imports `name` (or imports *)."""
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      if node.name == name:
        return True
    elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and node.id == name:
      return True
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
      if any(a.name == "*" or (a.asname or a.name.split(".")[0]) == name for a in node.names):
        return True
  return False


def config_file_problem(argv) -> str | None:
  """What is wrong with the file of `--config=FILE[:ARGS]` in `argv`, before anything
  runs it: no such file, a folder, unreadable, not Python, no `get_config`."""
  value = _config_argument(argv)
  if value is None:
    return None  # absl names the missing required flag
  path = value.split(":", 1)[0]
  if not path:
    return f"--config={value!r} names no config file; {CONFIG_HOW}"
  flag = f"--config={path}"
  if not os.path.exists(path):
    return f"{flag}: no such file (looked in {os.getcwd()}); {CONFIG_HOW}"
  if os.path.isdir(path):
    return f"{flag} is a folder, not a config file; {CONFIG_HOW}"
  try:
    with open(path, "rb") as f:
      source = f.read()
  except OSError as e:
    return f"{flag} cannot be read ({e.strerror or e}); {CONFIG_HOW}"
  try:
    tree = ast.parse(source, filename=path)
  except (SyntaxError, ValueError, UnicodeDecodeError) as e:
    where = f" (line {e.lineno}: {e.msg})" if isinstance(e, SyntaxError) and e.lineno else ""
    return (f"{flag} is not a Python file{where}: a config file is Python code that defines "
            f"get_config(arg=None); {CONFIG_HOW}")
  if not _binds(tree, "get_config"):
    return (f"{flag} defines no get_config(arg=None), which a config file must (it returns "
            f"the config); {CONFIG_HOW}")
  return None


def _stray_arguments(rest) -> str | None:
  """The one-line error for positional arguments absl left over (main.py takes none)."""
  if len(rest) <= 1:
    return None
  stray = rest[1:]
  return (f"unexpected argument {stray[0]!r}" + (f" (and {len(stray) - 1} more)" if len(stray) > 1
                                                 else "")
          + ": main.py takes only flags: --config=FILE.py[:key=value,...] --workdir=DIR "
          "[--config.key=value ...]; config arguments go after the colon of --config (e.g. "
          "--config=configs/mnist_sym.py:rate=0.2), single values as --config.key=value "
          "(no spaces around '=')")


def parse_flags(argv, flag_values=flags.FLAGS):
  """absl's flags parser with one-message errors (for `app.run(main, flags_parser=...)`)."""
  problem = config_file_problem(argv)
  if problem:
    fail(problem)
  try:
    rest = flag_values(argv)
  except flags.Error as e:
    problem = _override_problem(argv, flag_values)
    fail(problem or _clean(str(e)))
  except (KeyError, AttributeError, ValueError, TypeError) as e:
    problem = _override_problem(argv, flag_values)
    fail(problem or f"{type(e).__name__}: {_clean(str(e))}")
  else:
    problem = _stray_arguments(rest)
    if problem:
      fail(problem)
    return rest
  return None


def load_config(flag_values=flags.FLAGS):
  """`flag_values.config`: the config file is run on first access; its errors (a bad
  `:key=value` argument, an unknown method) are the user's."""
  try:
    config = flag_values.config
    config.task  # pylint: disable=pointless-statement  (a file that failed to load raises here)
    return config
  except (ValueError, TypeError, KeyError, AttributeError, ImportError, OSError) as e:
    argument = next((a for a in sys.argv[1:] if a.startswith("--config=")), "--config")
    fail(f"{argument}: {' '.join(_clean(str(e)).split())}")
  return None


def run_user_errors(fn, *args):
  """`fn(*args)`; a `UserError` becomes `fail(message)`."""
  try:
    return fn(*args)
  except errors.UserError as e:
    fail(str(e))
  return None
