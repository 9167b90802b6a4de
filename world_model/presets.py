"""Model geometry of the WAN 2.2 TI2V backbone: the ONE place where dimensions live.

Every other module (features, heads, caches, benchmarks) asks a :class:`BackbonePreset` for
latent channels, compression factors, patch size, text width or tap blocks instead of hard-coding
them, so the ``tiny`` preset used on CPU and the real ``ti2v_5b`` geometry share all code paths.

The ``ti2v_5b`` numbers are those of diffsynth 2.1.12's model registry entry for
``Wan-AI/Wan2.2-TI2V-5B`` (``diffsynth/configs/model_configs.py``); ``tiny`` keeps the same
classes and the same latent channel count (48, so VAE and DiT stay compatible) with small widths.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class DiTConfig:
    """Constructor arguments of ``diffsynth.models.wan_video_dit.WanModel``."""

    dim: int
    """Hidden width of every transformer block (3072 for TI2V-5B)."""
    ffn_dim: int
    """Inner width of the feed-forward MLP."""
    num_heads: int
    """Attention heads; ``dim // num_heads`` is the head width the 3-D RoPE splits."""
    num_layers: int
    """Number of ``DiTBlock``s."""
    in_dim: int
    """Latent channels going in (must equal the VAE's ``z_dim``; TI2V fuses the image in-latent)."""
    out_dim: int
    """Latent channels coming out (the velocity prediction)."""
    patch_size: tuple[int, int, int]
    """(frames, height, width) patch of the Conv3d patch embedding."""
    text_dim: int
    """Width of the text-encoder context fed to ``text_embedding``."""
    freq_dim: int = 256
    """Width of the sinusoidal timestep embedding."""
    eps: float = 1e-6
    """Norm epsilon."""
    has_image_input: bool = False
    """CLIP image cross-attention (Wan 2.1 I2V only)."""
    seperated_timestep: bool = True
    """Per-token timesteps (diffsynth's spelling). Needed for TI2V's clean first frame."""
    require_vae_embedding: bool = False
    """Concatenate a VAE image embedding on channels (Wan 2.1 I2V); TI2V does not."""
    require_clip_embedding: bool = False
    """Use CLIP image features; TI2V does not."""
    fuse_vae_embedding_in_latents: bool = True
    """TI2V: the first latent frame *is* the clean image latent."""

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} not divisible by num_heads {self.num_heads}")
        if (self.dim // self.num_heads) % 2:
            raise ValueError("head width must be even for rotary embeddings")

    def wan_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``WanModel(**kwargs)``."""
        kw = asdict(self)
        kw["patch_size"] = tuple(self.patch_size)
        return kw


@dataclass(frozen=True)
class VAEConfig:
    """Geometry of ``WanVideoVAE38`` (Wan 2.2 VAE)."""

    z_dim: int = 48
    """Latent channels."""
    dim: int = 160
    """Encoder base width (``VideoVAE38_(dim=...)``)."""
    dec_dim: int = 256
    """Decoder base width. ``WanVideoVAE38(dim=16)`` alone keeps a 256-wide decoder (0.55 B
    parameters), so tiny presets must shrink it too."""
    spatial_compression: int = 16
    """Pixels per latent cell per axis (2x patchify + 3 spatial downsamples)."""
    temporal_compression: int = 4
    """Video frames per latent frame after the first (causal: frame 0 is encoded alone)."""


@dataclass(frozen=True)
class TextEncoderConfig:
    """Geometry of ``WanTextEncoder`` (umt5-xxl encoder) and its tokenizer."""

    vocab: int = 256384
    dim: int = 4096
    dim_attn: int = 4096
    dim_ffn: int = 10240
    num_heads: int = 64
    num_layers: int = 24
    num_buckets: int = 32
    shared_pos: bool = False
    seq_len: int = 512
    """Tokens per prompt; the pipeline pads/truncates to this and the DiT cross-attends to it."""

    def wan_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``WanTextEncoder(**kwargs)`` (dropout off: it is frozen)."""
        kw = asdict(self)
        kw.pop("seq_len")
        kw["dropout"] = 0.0
        return kw


@dataclass(frozen=True)
class BackbonePreset:
    """Everything about the backbone's shape that code outside ``world_model`` may need."""

    name: str
    dit: DiTConfig
    vae: VAEConfig
    text: TextEncoderConfig
    default_taps: tuple[int, ...]
    """0-based block indices whose outputs feed the heads by default."""
    fps: float
    """Frame rate of the videos the backbone generates (frames per second). Generated frame i is at
    time i / fps, so derivatives of a rollout use dt = 1 / fps, and ground truth is resampled to this
    rate before it is compared with a rollout. No default: every preset must say what it was trained at."""
    scheduler_shift: float = 5.0
    """Wan flow-matching shift: sigma' = s*sigma / (1 + (s-1)*sigma)."""
    num_train_timesteps: int = 1000
    """timestep = sigma * num_train_timesteps (diffsynth ``FlowMatchScheduler('Wan')``)."""
    hub_id: str = ""
    """Where the weights come from (informational; nothing is ever downloaded)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.dit.in_dim != self.vae.z_dim:
            raise ValueError("DiT in_dim must equal VAE z_dim")
        if self.dit.text_dim != self.text.dim:
            raise ValueError("DiT text_dim must equal text-encoder dim")
        bad = [t for t in self.default_taps if not 0 <= t < self.dit.num_layers]
        if bad:
            raise ValueError(f"tap blocks {bad} outside 0..{self.dit.num_layers - 1}")

    # ---- convenience accessors (the names other packages use) ----
    @property
    def latent_channels(self) -> int:
        return self.vae.z_dim

    @property
    def spatial_compression(self) -> int:
        return self.vae.spatial_compression

    @property
    def temporal_compression(self) -> int:
        return self.vae.temporal_compression

    @property
    def patch_size(self) -> tuple[int, int, int]:
        return tuple(self.dit.patch_size)  # type: ignore[return-value]

    @property
    def text_dim(self) -> int:
        return self.dit.text_dim

    @property
    def text_len(self) -> int:
        return self.text.seq_len

    @property
    def num_layers(self) -> int:
        return self.dit.num_layers

    @property
    def hidden_dim(self) -> int:
        return self.dit.dim

    @property
    def token_stride(self) -> tuple[int, int, int]:
        """Video pixels per token along (time after frame 0, height, width): (4, 32, 32) for 5B."""
        pf, ph, pw = self.patch_size
        s = self.spatial_compression
        return (self.temporal_compression * pf, s * ph, s * pw)

    # ---- shape arithmetic ----
    def check_video_size(self, frames: int, height: int, width: int) -> None:
        """Raise ValueError unless (T, H, W) maps onto whole latents and whole DiT patches."""
        tc = self.temporal_compression
        _, sh, sw = self.token_stride
        if frames < 1 or (frames - 1) % tc:
            raise ValueError(f"frames must be 1 + {tc}k, got {frames}")
        if height % sh or width % sw:
            raise ValueError(f"height/width must be multiples of {sh}/{sw}, got {height}x{width}")

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, T', H', W') of the VAE latents of a (3, T, H, W) video: T' = 1 + (T-1)//4."""
        self.check_video_size(frames, height, width)
        s = self.spatial_compression
        return (self.latent_channels, 1 + (frames - 1) // self.temporal_compression,
                height // s, width // s)

    def token_grid(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(F', H', W') token grid of the DiT for a video; tokens are ordered (f, h, w)."""
        _, t, h, w = self.latent_shape(frames, height, width)
        pf, ph, pw = self.patch_size
        return (t // pf, h // ph, w // pw)

    def num_tokens(self, frames: int, height: int, width: int) -> int:
        f, h, w = self.token_grid(frames, height, width)
        return f * h * w

    def video_frames_of_latent(self, k: int) -> range:
        """Video frame indices that latent frame k encodes (causal VAE grouping).

        Latent frame 0 encodes video frame 0 alone; latent frame k >= 1 encodes frames
        4k-3 ... 4k. Targets must be mapped by this grouping, not by interpolating 49 -> 13.
        """
        if k < 0:
            raise ValueError("latent frame index must be >= 0")
        if k == 0:
            return range(0, 1)
        tc = self.temporal_compression
        return range(tc * (k - 1) + 1, tc * k + 1)

    def taps(self, taps: tuple[int, ...] | list[int] | None = None) -> tuple[int, ...]:
        """Validated tap list (``None`` -> the preset default)."""
        chosen = tuple(self.default_taps if taps is None else taps)
        bad = [t for t in chosen if not 0 <= t < self.num_layers]
        if bad or not chosen:
            raise ValueError(f"tap blocks {list(chosen)} must be non-empty within 0..{self.num_layers - 1}")
        return tuple(sorted(set(chosen)))


TI2V_5B = BackbonePreset(
    name="ti2v_5b",
    dit=DiTConfig(dim=3072, ffn_dim=14336, num_heads=24, num_layers=30, in_dim=48, out_dim=48,
                  patch_size=(1, 2, 2), text_dim=4096, freq_dim=256, eps=1e-6),
    vae=VAEConfig(z_dim=48, dim=160, dec_dim=256),
    text=TextEncoderConfig(),
    # Four taps spread over depth: early (7), two in the middle third (12, 17 — DiffTrack finds
    # correspondence strongest near block 17 of 30) and the last block (29).
    default_taps=(7, 12, 17, 29),
    fps=24.0,  # Wan2.2 TI2V-5B generates 24 fps video (720p at 24 fps in its model card)
    hub_id="Wan-AI/Wan2.2-TI2V-5B",
)

TINY = BackbonePreset(
    name="tiny",
    dit=DiTConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=4, in_dim=48, out_dim=48,
                  patch_size=(1, 2, 2), text_dim=32, freq_dim=32, eps=1e-6),
    vae=VAEConfig(z_dim=48, dim=16, dec_dim=16),
    text=TextEncoderConfig(vocab=512, dim=32, dim_attn=32, dim_ffn=64, num_heads=2,
                           num_layers=2, num_buckets=8, seq_len=16),
    default_taps=(0, 1, 2, 3),
    fps=24.0,  # stands in for TI2V-5B, so the evaluation resamples ground truth exactly as it would there
)

PRESETS: dict[str, BackbonePreset] = {p.name: p for p in (TI2V_5B, TINY)}


def get_preset(name: str | BackbonePreset) -> BackbonePreset:
    """Look a preset up by name (a preset passes through unchanged)."""
    if isinstance(name, BackbonePreset):
        return name
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown backbone preset {name!r}; known: {sorted(PRESETS)}") from None
