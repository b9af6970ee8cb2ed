r"""Is the compiled train step of two checkouts the same program? (speed without a clock)

    git worktree add /tmp/old <commit>
    python benchmarks/step_program_diff.py --old=/tmp/old --new=.

Lowers the real DSM and TDSM train steps (official, sampled, exact; the shrunk
ddpmpp_mnist U-Net, augmentation on, batch 32, as `benchmarks/tdsm_step_time.py`
builds them) of each checkout to StableHLO, in a subprocess per checkout, strips
source locations and compares: the ops of both, as a multiset (SSA names
dropped), and the text. The same multiset of ops is the same computation; a
refactor that keeps it cannot change the step's speed, on any machine and
under any load, which a wall-clock comparison on a loaded CPU cannot show.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

CASES = (("dsm", ""), ("tdsm", "official"), ("tdsm", "sampled"), ("tdsm", "exact"))

DUMP = r"""
import os, re, sys
repo, out = sys.argv[1], sys.argv[2]
sys.path.insert(0, repo)
import jax, numpy as np
from benchmarks import tdsm_step_time
from sgn_jax.training import mesh as mesh_lib
mesh = mesh_lib.create_mesh(jax.devices()[:1])
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (256, 28, 28, 1), dtype=np.uint8)
labels = rng.integers(0, 10, 256).astype(np.int32)
overrides = dict(model_channels=16, channel_mult=(1, 2, 2), num_blocks=1)
for method, est in %r:
  step, state, inputs = tdsm_step_time.build_step(
      "ddpmpp_mnist", (32, 32, 1), 10, 32, mesh, images, labels, method=method,
      estimator=est or None, overrides=overrides, augment=True)
  text = step.lower(state, inputs).as_text(debug_info=False)
  text = re.sub(r"#?loc\d*(\([^)]*\))?", "", text)
  open(os.path.join(out, f"{method}_{est}.mlir"), "w").write(text)
""" % (CASES,)


def _ops(text: str) -> collections.Counter:
  return collections.Counter(re.sub(r"%[\w#]+", "%", line).strip()
                             for line in text.splitlines() if line.strip())


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--old", required=True)
  parser.add_argument("--new", default=".")
  args = parser.parse_args()
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  with tempfile.TemporaryDirectory() as tmp:
    for name, repo in (("old", args.old), ("new", args.new)):
      os.makedirs(os.path.join(tmp, name))
      subprocess.run([sys.executable, "-c", DUMP, os.path.abspath(repo),
                      os.path.join(tmp, name)], env=env, check=True)
    for method, est in CASES:
      texts = [open(os.path.join(tmp, n, f"{method}_{est}.mlir")).read() for n in ("old", "new")]
      same_ops = _ops(texts[0]) == _ops(texts[1])
      lines = [t.splitlines() for t in texts]
      moved = sum(a != b for a, b in zip(*lines)) + abs(len(lines[0]) - len(lines[1]))
      print(f"{method} {est or '-'}: {len(lines[0])} lines; same ops: {same_ops}; "
            f"identical text: {texts[0] == texts[1]} ({moved} lines differ in place)")


if __name__ == "__main__":
  main()
