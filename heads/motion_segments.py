"""Bodies from the motion itself: moving pixels split into segments, and the segments in free flight.

The verifier judges gravity on *bodies*, not pixels.  At 128 px a thrown ball covers a few dozen
pixels, most of them on an edge where a pixel's own track is noisy; the mean acceleration of the
segment is steady where single pixels are not.  A segment is a 4-connected patch of moving pixels
cut where the distance jumps (a body in front of another); it is in free flight when

- its mean acceleration points along the vertical (down *or* up) and is not small,
- nothing touches it: no point at rest and no other body within a few pixel footprints of its
  ring (a ball on the floor, a block pushed by its neighbour, a plank on its hinge are excluded),
- and the same segment one frame earlier (found through the flow) passes both tests with about
  the same acceleration: a collision changes the acceleration within a frame, flight keeps it.

Nothing here knows g: the vertical acceleration of free flight is what the caller measures.
Only distance, flow and the intrinsics are needed; no object ids, masks or poses.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from heads.physics_kinematics import Kinematics

DEPTH_GAP = 0.03
"""m: neighbouring moving pixels farther apart in distance belong to different bodies."""
MIN_SEGMENT = 3
"""Pixels with a valid acceleration a segment needs; smaller ones are stray edge pixels."""
CONTACT_FOOTPRINTS = 2.5
"""A point of the ring closer than this many pixel footprints (distance / fx) touches the body."""
CONTACT_SLACK = 0.005
"""m added to the contact distance (rendering and interpolation noise)."""
FREE_MIN_ACCEL = 1.5
"""m/s^2: free flight accelerates at least this much (a slide or a roll at constant speed does not);
far below any gravity a clip could plausibly show, so it selects without assuming g."""
VERTICAL_SHARE = 0.8
"""|a . down| / |a| above this = acceleration along the vertical (either sign)."""
STEADY_SHARE = 0.3
"""Consecutive accelerations of a free body differ by less than this share of the larger one."""


class FreeFlight(NamedTuple):
    """One body in free flight at one frame: its frame, valid pixels and vertical acceleration
    (m/s^2 along 'down'; positive = falling faster).  ``free_flight`` gives the acceleration as a
    0-dim tensor that keeps its graph to the distance and flow (stage 2's reward differentiates it)."""

    frame: int
    pixels: int
    vertical: float | torch.Tensor


def label_segments(mask: torch.Tensor, distance: torch.Tensor, gap: float = DEPTH_GAP) -> torch.Tensor:
    """(H, W) bool mask, (H, W) distance -> int64 labels (0 outside the mask): 4-connected
    components whose neighbours differ in distance by less than ``gap``; a component's label is its
    smallest 1-based pixel index.  Union-find by rounds (hook every link's larger root under the
    smaller one, then compress paths), so noisy predicted motion settles in a few rounds."""
    h, w = mask.shape
    index = torch.arange(h * w, device=mask.device).view(h, w)
    right = mask[:, :-1] & mask[:, 1:] & ((distance[:, :-1] - distance[:, 1:]).abs() < gap)
    down = mask[:-1] & mask[1:] & ((distance[:-1] - distance[1:]).abs() < gap)
    u = torch.cat([index[:, :-1][right], index[:-1][down]])
    v = torch.cat([index[:, 1:][right], index[1:][down]])
    parent = index.flatten().clone()
    while True:
        pu, pv = parent[u], parent[v]
        split = pu != pv
        if not split.any():
            break
        parent.scatter_reduce_(0, torch.maximum(pu, pv)[split], torch.minimum(pu, pv)[split], reduce="amin")
        while not torch.equal(parent[parent], parent):
            parent = parent[parent]
    return torch.where(mask, parent.view(h, w) + 1, torch.zeros_like(index))


def touches(segment: torch.Tensor, others: torch.Tensor, points: torch.Tensor, distance: torch.Tensor,
            fx: float) -> bool:
    """Whether a point of ``others`` in the 2-pixel ring around ``segment`` lies within
    CONTACT_FOOTPRINTS pixel footprints of a point of the segment.  points (3, H, W)."""
    ring = F.max_pool2d(segment[None, None].float(), 5, 1, 2)[0, 0].bool() & ~segment & others
    if not ring.any():
        return False
    gaps = torch.cdist(points[:, ring].T, points[:, segment].T).min(dim=1).values
    return bool((gaps < CONTACT_FOOTPRINTS * distance[ring] / fx + CONTACT_SLACK).any())


def _untouched_vertical(kin: Kinematics, t: int, labels: torch.Tensor, moving: torch.Tensor,
                        static: torch.Tensor, down: torch.Tensor, distance: torch.Tensor,
                        fx: float) -> dict[int, tuple[int, torch.Tensor]]:
    """{label: (pixels, mean acceleration / (1 - (down.r)^2))} of frame t's segments that accelerate
    along the vertical and touch nothing.  The accelerations lack their component along the ray
    (``heads.plausibility.off_ray_acceleration``): free flight then shows g (down - (down.r) r), so
    the test is against 'down' off the segment's mean ray r, and the scale restores g."""
    a, ok = kin["acceleration"][0, t], kin["acceleration_valid"][0, t] & moving[t]
    points, valid = kin["points"][0, t], kin["points_valid"][0, t]
    sizes = torch.bincount(labels.flatten())
    bodies = (labels > 0) & (sizes[labels] >= MIN_SEGMENT)  # stray single pixels are no body
    found = {}
    for lab in labels[ok].unique().tolist():
        segment = labels == lab
        inside = segment & ok
        if int(inside.sum()) < MIN_SEGMENT:
            continue
        mean = a[:, inside].mean(dim=1)
        ray = points[:, inside].detach().mean(dim=1)
        ray = ray / ray.norm()
        along = float(down @ ray)
        size = float(mean.detach().norm())
        if size < FREE_MIN_ACCEL or abs(float(mean.detach() @ off_ray(down, ray))) < VERTICAL_SHARE * size:
            continue
        if touches(segment, (static[t] | (bodies & ~segment)) & valid, points, distance[t], fx):
            continue
        found[lab] = (int(inside.sum()), mean / (1.0 - along * along))
    return found


def off_ray(down: torch.Tensor, ray: torch.Tensor) -> torch.Tensor:
    """The unit vector of 'down' less its component along the (unit) ray."""
    rest = down - (down @ ray) * ray
    return rest / rest.norm().clamp_min(1e-9)


def source_pixels(flow: torch.Tensor, where: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) of the pixel nearest to p + f(p) in the previous frame, for every pixel p of
    ``where`` (H, W) bool; flow (2, H, W) backward, clamped to the image."""
    h, w = where.shape
    ys, xs = where.nonzero(as_tuple=True)
    return ((ys + flow[1][where]).round().long().clamp(0, h - 1),
            (xs + flow[0][where]).round().long().clamp(0, w - 1))


def _earlier_label(kin: Kinematics, t: int, segment: torch.Tensor, earlier: torch.Tensor) -> int:
    """The label of frame t-1 that most of the segment's tracks come from (0 if none)."""
    link = kin["link_valid"][0, t] & segment
    if not link.any():
        return 0
    source = earlier[source_pixels(kin["flow"][0, t], link)]
    source = source[source > 0]
    return int(source.mode().values) if source.numel() else 0


def free_flight(kin: Kinematics, moving: torch.Tensor, static: torch.Tensor, down: torch.Tensor,
                fx: float) -> list[FreeFlight]:
    """Every (frame, body) in free flight (module docstring) of one clip (batch 0 of ``kin``);
    moving/static (T, H, W) bool, down (3,) unit vector in the camera frame."""
    distance = kin["points"][0].norm(dim=1)
    labels = [label_segments(moving[t], distance[t]) for t in range(moving.shape[0])]
    candidates = [_untouched_vertical(kin, t, labels[t], moving, static, down, distance, fx)
                  for t in range(moving.shape[0])]
    steady = set()
    for t in range(1, len(labels)):
        for lab, (_, mean) in candidates[t].items():
            before = _earlier_label(kin, t, labels[t] == lab, labels[t - 1])
            if before not in candidates[t - 1]:
                continue
            mean, previous = mean.detach(), candidates[t - 1][before][1].detach()
            if float((mean - previous).norm()) < STEADY_SHARE * max(float(mean.norm()), float(previous.norm())):
                steady |= {(t, lab), (t - 1, before)}
    return [FreeFlight(t, candidates[t][lab][0], candidates[t][lab][1] @ down) for t, lab in sorted(steady)]
