"""sgn_jax: learning from noisy labels in JAX.

Robust classification via regression (SGN, Englesson & Azizpour, ICLR 2024), its
baselines, and the shared infrastructure of this library: label-noise models
(`sgn_jax.noise`), in-memory datasets and device-resident batching
(`sgn_jax.data`), classifier networks (`sgn_jax.models`), and the training
utilities (`sgn_jax.training`: mesh, EMA, checkpoints, metric writers).

`sgn_jax` never imports `lnrd`; `lnrd` builds on it.
"""

__version__ = "0.1.0"
