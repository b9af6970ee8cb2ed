"""Training infrastructure shared by `sgn_jax` and `lnrd`.

mesh: device mesh and shardings; distributed: multi-process start-up;
ema: EMA updates; checkpointing: orbax CheckpointManager with resume and
preemption; writers: metric writers (TensorBoard via clu when present);
progress: steps/s and ETA reporting.
"""
