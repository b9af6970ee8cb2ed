"""Host-side datasets: whole datasets in memory as NumPy arrays.

* `load_dataset(cfg)`: config -> `InMemoryDataset` (TFDS, npz, idx archives or
  the synthetic 2-D Gaussian mixture), with CIFAR-N human label sets.
* `split_validation`: deterministic train/validation split of the train rows.
* `DATASETS`: the known datasets and the files offline preparation needs.

TensorFlow is imported only when a TFDS dataset is actually loaded.
"""

from sgn_jax.data.dataset import DATASETS
from sgn_jax.data.dataset import DataNotFoundError
from sgn_jax.data.dataset import DatasetInfo
from sgn_jax.data.dataset import InMemoryDataset
from sgn_jax.data.loading import load_dataset
from sgn_jax.data.loading import split_validation

__all__ = [
    "DATASETS",
    "DataNotFoundError",
    "DatasetInfo",
    "InMemoryDataset",
    "load_dataset",
    "split_validation",
]
