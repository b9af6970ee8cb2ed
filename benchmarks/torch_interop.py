"""Importing torchvision beside a CPU torch, for the comparisons against PyTorch code.

PyPI's CUDA-linked torchvision wheel next to torch+cpu registers fake kernels for
`torchvision::nms`/`qnms` even when its `_C` extension failed to load, and the
import then fails with "operator torchvision::nms does not exist". Only model code
is used by the comparisons (pytorch-fid's Inception, the TDSM authors' modules), so
the two op schemas are declared (no kernels) and the import is retried.
"""

from __future__ import annotations

import sys


def import_torchvision(torch):
  """torchvision, or None when it is not installed."""
  try:
    import torchvision  # pylint: disable=g-import-not-at-top
    return torchvision
  except ImportError:
    return None
  except RuntimeError as error:
    if "torchvision::" not in str(error):
      raise
  for name in [name for name in sys.modules if name.split(".")[0] == "torchvision"]:
    del sys.modules[name]
  library = torch.library.Library("torchvision", "DEF")
  for op in ("nms", "qnms"):
    library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
  import_torchvision.library = library  # keep the definitions alive
  import torchvision  # pylint: disable=g-import-not-at-top,redefined-outer-name
  return torchvision
