"""Behaviour of the flow/depth heads: shapes, temporal grouping, convex upsampling, overfitting."""

from __future__ import annotations

import logging

import pytest
import torch

from heads import DepthHead, HeadConfig, MotionVectorHead, count_parameters, flow_loss
from heads.blocks import TemporalExpand, backward_warp, convex_upsample, video_to_latent_index


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny convs gain nothing from threads, and on a busy 2-core box oversubscription costs ~8x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_cfg(**kw) -> HeadConfig:
    base = dict(in_channels=64, num_taps=4, features=16, temporal_heads=2)
    base.update(kw)
    return HeadConfig(**base)


def taps_for(cfg: HeadConfig, b: int = 1, f: int = 3, h: int = 2, w: int = 2, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, cfg.in_channels, f, h, w, generator=g) for _ in range(cfg.num_taps)]


def frames_for(cfg: HeadConfig, b: int, f: int, h: int, w: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t, sf = cfg.num_frames(f), cfg.spatial_factor
    return torch.rand(b, t, 3, sf * h, sf * w, generator=g)


@pytest.mark.parametrize("head_cls", [MotionVectorHead, DepthHead])
@pytest.mark.parametrize("spatial_factor,grid", [(32, 2), (16, 4)])
def test_tiny_output_shapes(head_cls, spatial_factor: int, grid: int) -> None:
    torch.manual_seed(0)
    cfg = tiny_cfg(spatial_factor=spatial_factor)
    head = head_cls(cfg)
    out = head(taps_for(cfg, b=2, f=3, h=grid, w=grid), frames_for(cfg, 2, 3, grid, grid))
    expected = (2, 9, 2, 64, 64) if head_cls is MotionVectorHead else (2, 9, 64, 64)
    assert out.shape == expected
    assert torch.isfinite(out).all()


def test_5b_geometry_shapes_on_meta_device() -> None:
    """C=3072, 13x15x15 grid -> 49 frames at 480x480, built on `meta` so no memory is spent."""
    cfg = HeadConfig()
    with torch.device("meta"):
        flow, depth = MotionVectorHead(cfg), DepthHead(cfg)
        taps = [torch.empty(1, 3072, 13, 15, 15) for _ in range(cfg.num_taps)]
        frames = torch.empty(1, 49, 3, 480, 480)
        assert flow(taps, frames).shape == (1, 49, 2, 480, 480)
        assert depth(taps, frames).shape == (1, 49, 480, 480)
    # Small enough for 49x480^2 on one GPU: a few million parameters per head.
    for head in (flow, depth):
        assert 2e6 < count_parameters(head) < 20e6


def test_summary_lists_submodules(caplog: pytest.LogCaptureFixture) -> None:
    head = MotionVectorHead(tiny_cfg())
    with caplog.at_level(logging.INFO, logger="heads.blocks"):
        rows = head.summary()
    assert {"neck", "branch", "upsample", "refiner", "total"} <= set(rows)
    assert rows["total"] == sum(v for k, v in rows.items() if k != "total") == count_parameters(head)
    assert "MotionVectorHead trainable parameters" in caplog.text


def test_video_to_latent_index_grouping() -> None:
    assert [video_to_latent_index(t, 4) for t in range(10)] == [0, 1, 1, 1, 1, 2, 2, 2, 2, 3]


def test_temporal_expand_copies_own_latent_frame_at_init() -> None:
    x = torch.randn(2, 3, 5, 4, 4)
    y = TemporalExpand(5, 4)(x)
    assert y.shape == (2, 9, 5, 4, 4)
    for t in range(9):
        torch.testing.assert_close(y[:, t], x[:, video_to_latent_index(t, 4)])


@pytest.mark.parametrize("head_cls", [MotionVectorHead, DepthHead])
@pytest.mark.parametrize("k", [0, 1, 2])
def test_latent_frame_k_only_drives_its_video_frames(head_cls, k: int) -> None:
    """With temporal mixing zero-initialised, latent k affects exactly video frames 4k-3..4k (0 for k=0)."""
    torch.manual_seed(0)
    cfg = tiny_cfg()
    head = head_cls(cfg).eval()
    taps, frames = taps_for(cfg, f=3), frames_for(cfg, 1, 3, 2, 2)
    changed = [t.clone() for t in taps]
    for t in changed:
        t[:, :, k] += torch.randn_like(t[:, :, k])
    with torch.no_grad():
        diff = (head(taps, frames) - head(changed, frames)).abs()
    per_frame = diff.flatten(2).amax(dim=2)[0] if diff.dim() == 5 else diff.flatten(2).amax(dim=2)[0]
    expected = {0} if k == 0 else set(range(4 * k - 3, 4 * k + 1))
    moved = {t for t in range(9) if per_frame[t] > 1e-6}
    assert moved == expected


def _reference_temporal_attention(block, x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """TemporalAttention written out position by position: pre-norm self-attention over the frames of
    one sample at one pixel (plus the sin/cos frame code), then a pre-norm MLP, both residual."""
    from heads.blocks import sinusoidal_embedding

    n, c, h, w = x.shape
    heads, d = block.heads, c // block.heads
    out = torch.empty_like(x)
    code = sinusoidal_embedding(num_frames, c)
    for b in range(n // num_frames):
        for i in range(h):
            for j in range(w):
                seq = x[b * num_frames:(b + 1) * num_frames, :, i, j]  # (F, C)
                q, k, v = block.qkv(block.norm1(seq) + code).split(c, dim=1)
                attended = []
                for m in range(heads):
                    qm, km, vm = (z[:, m * d:(m + 1) * d] for z in (q, k, v))
                    attended.append(torch.softmax(qm @ km.T / d**0.5, dim=1) @ vm)
                seq = seq + block.proj(torch.cat(attended, dim=1))
                out[b * num_frames:(b + 1) * num_frames, :, i, j] = seq + block.mlp(block.norm2(seq))
    return out


def test_temporal_mixing_once_trained_links_latent_frames() -> None:
    """Non-zero output projections (as after training) let latent 2 reach every video frame, frame 0
    included, and only through the temporal blocks (the same head without them keeps frame 0 apart);
    each block is attention across the frames of one sample at one pixel, never across samples."""
    torch.manual_seed(0)
    cfg = tiny_cfg()
    head = MotionVectorHead(cfg).eval()
    for name, p in head.named_parameters():
        if "temporal" in name:
            torch.nn.init.normal_(p, std=0.2)
    no_temporal = MotionVectorHead(tiny_cfg(temporal_levels=0)).eval()
    missing, unexpected = no_temporal.load_state_dict(head.state_dict(), strict=False)
    assert not missing and unexpected and all("temporal" in k for k in unexpected)

    taps, frames = taps_for(cfg, b=2, f=3), frames_for(cfg, 2, 3, 2, 2)
    changed = [t.clone() for t in taps]
    for t in changed:
        t[1, :, 2] += 1.0  # latent 2 of sample 1 only
    with torch.no_grad():
        diff = (head(taps, frames) - head(changed, frames)).abs().flatten(2).amax(dim=2)  # (B, T)
        plain = (no_temporal(taps, frames) - no_temporal(changed, frames)).abs().flatten(2).amax(dim=2)
    assert (diff[1] > 1e-4).all(), diff[1]  # every frame of sample 1, frame 0 included
    assert diff[0].max() == 0, diff[0]  # sample 0 untouched
    assert (plain[1, :5] == 0).all() and (plain[1, 5:] > 1e-4).all(), plain[1]  # without mixing: frames 5..8 only

    block = head.neck.temporal_in[str(cfg.num_taps - 1)]
    x = torch.randn(2 * 3, cfg.features, 2, 3)
    with torch.no_grad():
        torch.testing.assert_close(block(x, 3), _reference_temporal_attention(block, x, 3), atol=1e-5, rtol=1e-5)


def test_samples_in_a_batch_are_independent() -> None:
    torch.manual_seed(0)
    cfg = tiny_cfg()
    head = DepthHead(cfg).eval()
    taps, frames = taps_for(cfg, b=2), frames_for(cfg, 2, 3, 2, 2)
    changed = [t.clone() for t in taps]
    for t in changed:
        t[1] += 1.0
    with torch.no_grad():
        torch.testing.assert_close(head(taps, frames)[0], head(changed, frames)[0])


def test_convex_upsampling_of_constant_flow_is_constant_times_factor() -> None:
    torch.manual_seed(0)
    field = torch.tensor([1.5, -2.0])[None, :, None, None].expand(2, 2, 5, 7)
    logits = 3.0 * torch.randn(2, 9 * 8 * 8, 5, 7)
    up = convex_upsample(field, logits, factor=8, value_scale=8.0)
    assert up.shape == (2, 2, 40, 56)
    torch.testing.assert_close(up[:, 0], torch.full((2, 40, 56), 12.0))
    torch.testing.assert_close(up[:, 1], torch.full((2, 40, 56), -16.0))


def test_rgb_path_required_when_configured() -> None:
    cfg = tiny_cfg()
    with pytest.raises(ValueError, match="rgb_refine"):
        MotionVectorHead(cfg)(taps_for(cfg))
    out = MotionVectorHead(tiny_cfg(rgb_refine=False))(taps_for(cfg))  # no frames needed without it
    assert out.shape == (1, 9, 2, 64, 64)


def test_wrong_tap_geometry_is_rejected() -> None:
    cfg = tiny_cfg()
    with pytest.raises(ValueError, match="expected 4 tapped grids"):
        DepthHead(cfg)(taps_for(cfg)[:3], frames_for(cfg, 1, 3, 2, 2))
    with pytest.raises(ValueError, match="in_channels|expected"):
        DepthHead(tiny_cfg(in_channels=32))(taps_for(cfg), frames_for(cfg, 1, 3, 2, 2))


def test_backward_warp_convention() -> None:
    """I_t(p) = I_{t-1}(p + f): content moving +2 px right has backward flow (-2, 0)."""
    prev = torch.rand(1, 3, 16, 16)
    cur = torch.roll(prev, shifts=2, dims=-1)
    flow = torch.zeros(1, 2, 16, 16)
    flow[:, 0] = -2.0
    torch.testing.assert_close(backward_warp(prev, flow)[..., 2:], cur[..., 2:])


def _square_clip(t: int = 5, size: int = 32, step: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """A bright square on a textured background moving `step` px right per frame; exact backward flow."""
    g = torch.Generator().manual_seed(0)
    bg = 0.3 + 0.2 * torch.rand(3, size, size, generator=g)
    frames, flow = bg.repeat(t, 1, 1, 1), torch.zeros(t, 2, size, size)
    for i in range(t):
        x0 = 6 + step * i
        frames[i, :, 10:20, x0 : x0 + 10] = torch.tensor([0.9, 0.2, 0.1])[:, None, None]
        if i > 0:
            flow[i, 0, 10:20, x0 : x0 + 10] = -step
    return frames[None], flow[None]


@pytest.mark.parametrize("stride,widths", [(1, (8, 16, 16)), (2, (16, 16))], ids=["full-res", "half-res"])
def test_flow_head_with_rgb_path_overfits_a_translated_square(stride: int, widths: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    # 5 frames of 32x32 (grid 2x2 at 16 px/token) keep this at ~0.1 s/step on two CPU cores.
    cfg = tiny_cfg(num_taps=2, features=16, temporal_levels=1, spatial_factor=16, rgb_channels=widths,
                   rgb_refine_stride=stride)
    head = MotionVectorHead(cfg)
    taps = taps_for(cfg, f=2)
    frames, target = _square_clip()
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    losses = []
    for _ in range(50):
        loss, _ = flow_loss(head(taps, frames), target, None)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.35 * losses[0], losses[::10]


@pytest.mark.parametrize("head_cls", [MotionVectorHead, DepthHead])
def test_memory_options_do_not_change_results(head_cls) -> None:
    """Frame chunking, checkpointing and the channels-last layout change speed and memory only."""
    torch.manual_seed(0)
    cfg = tiny_cfg()
    head = head_cls(cfg).train()
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.05 * torch.randn_like(p))  # wake the zero-initialised layers
    taps, frames = taps_for(cfg, b=2), frames_for(cfg, 2, 3, 2, 2)
    ref = head(taps, frames)
    grads_ref = torch.autograd.grad(ref.square().mean(), list(head.parameters()))
    head.set_memory_options(frame_chunk=4, gradient_checkpointing=True)
    out = head(taps, frames)
    grads = torch.autograd.grad(out.square().mean(), list(head.parameters()))
    torch.testing.assert_close(out, ref)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    head.set_memory_options(channels_last=True)
    assert head.refiner.out.weight.is_contiguous(memory_format=torch.channels_last)
    out = head(taps, frames)
    grads = torch.autograd.grad(out.square().mean(), list(head.parameters()))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_half_resolution_rgb_path_is_full_size_and_starts_as_the_identity() -> None:
    """Its residual is zero at init (so stride changes nothing until trained) and full size after."""
    torch.manual_seed(0)
    half = MotionVectorHead(tiny_cfg(rgb_refine_stride=2))
    plain = MotionVectorHead(tiny_cfg(rgb_refine=False))
    plain.load_state_dict({k: v for k, v in half.state_dict().items() if not k.startswith("refiner.")})
    taps, frames = taps_for(half.cfg, b=1), frames_for(half.cfg, 1, 3, 2, 2)
    torch.testing.assert_close(half(taps, frames), plain(taps))
    with torch.no_grad():
        half.refiner.out.bias.fill_(0.5)
    assert torch.allclose(half(taps, frames) - plain(taps), torch.tensor(0.5))
    assert half.refiner.down[0][0][0].in_channels == 12 and len(half.refiner.down) == 3  # strides 2, 4, 8


def test_rgb_refine_stride_must_be_a_power_of_two_within_the_neck_stride() -> None:
    for bad in (3, 16):
        with pytest.raises(ValueError, match="rgb_refine_stride"):
            tiny_cfg(rgb_refine_stride=bad)
