"""Tasks: `train_and_evaluate(config, workdir)`, the only code that reads a config.

Each task validates its ml_collections config before any data or compute, turns
it once into the explicit arguments of the library (`sgn_jax.classification`,
`sgn_jax.train_data`, `sgn_jax.training.loop`, ...) and writes its run folder.
`main.py` dispatches on `config.task`:

  classify   sgn_jax.tasks.classify   SGN and the nine baselines
"""
