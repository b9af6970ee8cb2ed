"""Training infrastructure shared by `sgn_jax` and `lnrd`.

loop: the one training loop (`run`, `jit_step`, `NonFiniteLossError`) every task
uses; mesh: device mesh and shardings; distributed: multi-process start-up;
ema: EMA updates and schedules; checkpointing: orbax CheckpointManager with
resume and preemption; writers: metric writers (TensorBoard via clu when
present); progress: steps/s, images/s and ETA reporting; train_state: the
train state pytree and its replicated init.
"""
