"""lnrd: label-noise robust diffusion models (TDSM, Na et al., ICLR 2024) in JAX.

Builds on `sgn_jax` for label-noise models, data and training infrastructure.

  edm               preconditionings (EDM, VP, VE), sigma sampling, lambda, DSM loss
  weights           transition-aware weights w(x_t, y~, y, t), paper and released forms
  tdsm_loss         the TDSM loss with its estimators (exact, official, topk, sampled)
  networks          SongUNet (DDPM++/NCSN++), DhariwalUNet (ADM), MLP; PyTorch converter
  augment           EDM's non-leaky augmentation pipe
  time_classifier   time-dependent classifiers, forward-corrected NLL, VolMinNet T
  noisy_classifier  task "noisy_classifier"
  diffusion         task "diffusion" (DSM / TDSM training)
  sampler, generate EDM sampler and task "generate"
  gmm_demo          task "gmm_demo" (the quick start)
"""

__version__ = "0.1.0"
