"""Frozen WAN 2.2 TI2V-5B backbone (via diffsynth): presets, loading, encoders, feature taps.

Modules (import them directly; importing this package does not import diffsynth):
    presets    model geometry (``get_preset("ti2v_5b" | "tiny")``) -- the only place with dimensions
    models     build DiT / VAE / text encoder from a preset (seeded random, or params on meta)
    loading    load from a local Wan2.2-TI2V-5B directory with clear errors
    features   explicit DiT loop returning tapped block outputs (TI2V per-token timesteps)
    flow_matching   the Wan flow-matching loss with diffsynth's weight of each timestep
    backbone   ``FrozenBackbone`` wrapper (frozen, eval, no_grad extraction, bf16 autocast on CUDA)
    encoders   VAE / text encoding with on-disk caches (``cache``)
    attention  explicit attention-backend choice (never SageAttention for training)
    flops, benchmark   analytic FLOPs, forward timing and MFU
    progress   diffsynth's own progress bars folded into ours, or silenced (``diffsynth_progress``)
"""
