"""The config boundary: only task modules (`*/tasks/*.py`) read a config.

Library modules (everything else in `lnrd/` and `sgn_jax/`) take explicit
arguments or small frozen dataclasses: they never import `ml_collections` or
`configs`, and no line reads an attribute of a `config` / `cfg` object (or of a
name bound to one, such as `c = config.classifier`). Strings and comments that
only mention `--config.x` (error messages naming the fix) do not count.
"""

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG_NAMES = frozenset({"config", "cfg"})


def config_reading_lines(source: str) -> set[int]:
  """Lines whose code reads `config.x` / `config["x"]` / `config.get(...)`, where
  `config` is a name in CONFIG_NAMES or an alias assigned from such a read."""
  tree = ast.parse(source)
  lines: set[int] = set()

  def rooted(node, aliases) -> bool:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
      node = node.func if isinstance(node, ast.Call) else node.value
    return isinstance(node, ast.Name) and (node.id in CONFIG_NAMES or node.id in aliases)

  def visit_function(body_nodes, aliases):
    aliases = set(aliases)
    for node in body_nodes:
      for sub in ast.walk(node):
        if isinstance(sub, ast.Assign) and isinstance(sub.value, (ast.Attribute, ast.Subscript)) \
            and rooted(sub.value, aliases):
          aliases.update(t.id for t in sub.targets if isinstance(t, ast.Name))
      for sub in ast.walk(node):
        if isinstance(sub, (ast.Attribute, ast.Subscript)) and rooted(sub, aliases):
          if isinstance(sub.value, ast.Name):  # count the innermost read once per line
            lines.add(sub.lineno)
    return aliases

  visit_function(tree.body, set())
  return lines


def library_modules():
  for package in ("lnrd", "sgn_jax"):
    for path in sorted((REPO / package).rglob("*.py")):
      if "tasks" not in path.relative_to(REPO).parts:
        yield path


def test_the_counter_sees_reads_and_aliases_not_strings():
  source = ("def f(config):\n"
            "  c = config.classifier\n"
            "  x = c.batch_size\n"
            "  raise ValueError('--config.optim.lr=0.1')\n"
            "  return config.get('seed')\n"
            "jax_config = 1\n")
  assert config_reading_lines(source) == {2, 3, 5}


@pytest.mark.parametrize("path", list(library_modules()), ids=lambda p: str(p.relative_to(REPO)))
def test_library_modules_do_not_read_a_config(path):
  source = path.read_text()
  assert not config_reading_lines(source), (
      f"{path} reads a config on lines {sorted(config_reading_lines(source))}: only task "
      "modules (*/tasks/*.py) may; pass explicit arguments or a frozen dataclass instead")
  tree = ast.parse(source)
  imported = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      imported.update(a.name.split(".")[0] for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      imported.add(node.module.split(".")[0])
  assert not imported & {"ml_collections", "configs"}, f"{path} imports {imported}"
