"""Tasks of the TDSM paper: `train_and_evaluate(config, workdir)`, the only readers of a config.

  noisy_classifier  lnrd.tasks.noisy_classifier  the time-dependent noisy-label classifier
  diffusion         lnrd.tasks.diffusion         DSM / TDSM training
  generate          lnrd.tasks.generate          samples per class (npz + PNG)
  evaluate          lnrd.tasks.evaluate          FID, IS, Density/Coverage, CW-*, CAS
  discover          lnrd.tasks.discover          suspects of mislabelling
  pipeline          lnrd.tasks.pipeline          [corrector ->] classifier -> diffusion -> evaluate
  gmm_demo          lnrd.tasks.gmm_demo          DSM vs TDSM on a 2-D mixture (quick start)

Each validates its config before any data or compute, converts it once into the
library's explicit arguments, and reads other runs through `lnrd.runs`.
"""
