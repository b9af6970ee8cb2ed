"""Errors a user causes, told apart from the library's own.

A `UserError` comes from what the user gave: a config value, the data, the
workdir, a run that does not match. `main.py` prints it as one message, with no
traceback, and exits with status 2; every other exception is an internal error
and keeps its traceback.

Each user error is also an instance of the built-in type a caller would catch
(`ValueError`, `FileNotFoundError`, ...): `user_input()` re-raises the
`ValueError` / `OSError` raised while a task checks its inputs (config, data,
workdir, other runs) as such a subclass, so `except ValueError` keeps working.
"""

from __future__ import annotations

import contextlib
import functools


class UserError(Exception):
  """Raised for what the user gave (config, data, workdir, run mismatch)."""


@functools.lru_cache(maxsize=None)
def _user_type(base: type) -> type:
  if issubclass(base, UserError):
    return base
  return type(f"User{base.__name__}", (UserError, base), {"__module__": __name__})


def as_user_error(error: BaseException) -> BaseException:
  """`error` as an instance of a UserError subclass of its own type (same args and
  attributes); a UserError is returned as it is."""
  if isinstance(error, UserError):
    return error
  args = error.args
  if isinstance(error, OSError) and error.filename is not None and error.errno is not None:
    args = (error.errno, error.strerror, error.filename)
  try:
    converted = _user_type(type(error))(*args)
  except Exception:  # pylint: disable=broad-except  (an unusual constructor)
    converted = _user_type(ValueError)(str(error))
  converted.__dict__.update(getattr(error, "__dict__", {}))
  return converted


@contextlib.contextmanager
def user_input():
  """`ValueError` and `OSError` raised inside are the user's (see the module doc)."""
  try:
    yield
  except (ValueError, OSError) as e:
    raise as_user_error(e) from e
