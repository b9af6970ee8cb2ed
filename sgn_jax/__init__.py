"""sgn_jax: learning from noisy labels in JAX.

Robust classification via regression (SGN, Englesson & Azizpour, ICLR 2024), its
baselines, and the shared infrastructure of this library: label-noise models
(`sgn_jax.noise`), in-memory datasets and device-resident batching
(`sgn_jax.data`), classifier networks (`sgn_jax.models`), the classification
train step and run (`sgn_jax.classification`), the run folder and its record
(`sgn_jax.runs`), and the training utilities (`sgn_jax.training`: the one
training loop, mesh, EMA, checkpoints, metric writers, progress). Library
modules take explicit arguments; `sgn_jax.tasks` (task "classify") alone reads
a config.

`sgn_jax` never imports `lnrd`; `lnrd` builds on it.
"""

__version__ = "0.1.0"
