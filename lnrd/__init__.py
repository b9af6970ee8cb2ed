"""lnrd: label-noise robust diffusion models (TDSM, Na et al., ICLR 2024) in JAX.

Builds on `sgn_jax` for label-noise models, data and training infrastructure.
"""

__version__ = "0.1.0"
