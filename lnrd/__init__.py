"""lnrd: label-noise robust diffusion models (TDSM, Na et al., ICLR 2024) in JAX.

Builds on `sgn_jax` for label-noise models, data and training infrastructure.
Library modules take explicit arguments (no config):

  edm               preconditionings (EDM, VP, VE), sigma sampling, lambda, DSM loss,
                    EDM's Adam with warm-up
  weights           transition-aware weights w(x_t, y~, y, t), paper and released forms
  tdsm_loss         the TDSM loss with its estimators (exact, official, topk, sampled)
  diffusion         networks by name, denoiser, DSM/TDSM objectives, the train step factory
  classifier_loss   the time-dependent classifier's loss: forward-corrected NLL, VolMinNet T
  time_classifier   the time-dependent classifier's train step factory, state, evaluation and
                    VolMinNet's optimiser (re-exports its networks, loss and converter)
  networks          SongUNet (DDPM++/NCSN++), DhariwalUNet (ADM), MLP, the time-dependent
                    classifiers (time_classifiers); PyTorch converters
  augment           EDM's non-leaky augmentation pipe
  sampler           EDM's Heun/Euler sampler, affine mix, sharded sampling
  images            uint8 <-> model range, padding, PNG
  runs              reading runs: the classifier export, a diffusion run's EMA network
  evaluation        samples in resumable batches, feature nets, the paper's metric table
  discovery         suspects of mislabelling by the own-label weight
  metrics/          FID, IS, Density/Coverage, CAS, FID Inception, sharded evaluation

Tasks (`lnrd.tasks.*`: `train_and_evaluate(config, workdir)`, the only readers of a
config): noisy_classifier, diffusion, generate, evaluate, discover, pipeline, gmm_demo.
"""

__version__ = "0.1.0"
