r"""Prepares a TFDS dataset once, e.g. offline from a folder of archives.

    python -m sgn_jax.data.prepare --dataset=mnist --data_dir=DIR \
        --manual_dir=../shared/data/mnist

Prints the directory it prepared. Exit status 1 (with the actionable message)
when the data cannot be found.
"""

from __future__ import annotations

import argparse
import sys
import time

from sgn_jax.data import dataset as dataset_lib
from sgn_jax.data.dataset import DataCorruptError
from sgn_jax.data.dataset import DataNotFoundError

# Streamed datasets (too large for memory): name -> module with `prepare`.
STREAMED = {"clothing1m": "clothing1m", "mini_webvision": "webvision"}


def main(argv: list[str] | None = None) -> int:
  """Parses the command line, runs `tfds_source.prepare`, returns exit status."""
  tfds_names = sorted(n for n, i in dataset_lib.DATASETS.items() if i.tfds_name)
  tfds_names += sorted(STREAMED)
  parser = argparse.ArgumentParser(
      prog="python -m sgn_jax.data.prepare",
      description="Prepare a TFDS dataset (offline with --manual_dir).")
  parser.add_argument("--dataset", required=True, choices=tfds_names)
  parser.add_argument("--data_dir", default=None,
                      help="TFDS data dir (default $TFDS_DATA_DIR or "
                      "~/tensorflow_datasets).")
  parser.add_argument("--manual_dir", default=None,
                      help="folder with the manually downloaded files.")
  parser.add_argument("--download", action=argparse.BooleanOptionalAction,
                      default=False, help="allow TFDS to download.")
  args = parser.parse_args(argv)

  start = time.time()
  try:
    if args.dataset in STREAMED:  # manual-download builders of the streamed datasets
      import importlib  # pylint: disable=g-import-not-at-top
      module = importlib.import_module(f"sgn_jax.data.{STREAMED[args.dataset]}")
      builder = module.prepare(args.data_dir, args.manual_dir)
      path = getattr(builder, "data_dir", args.data_dir)
    else:
      from sgn_jax.data import tfds_source  # pylint: disable=g-import-not-at-top
      path = tfds_source.prepare(args.dataset, data_dir=args.data_dir,
                                 manual_dir=args.manual_dir,
                                 download=args.download)
  except (DataNotFoundError, DataCorruptError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"{args.dataset} is prepared in {path} ({time.time() - start:.1f} s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
