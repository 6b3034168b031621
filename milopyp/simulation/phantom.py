"""Phantom construction of the simulator: density ``[z, y, x]`` and its ground-truth rows.

Filaments first (they cross the volume), then vesicles, the globular particles, and last
the spikes on the vesicles and the free spikes (own random stream, so adding spikes moves
nothing else), all without overlap (``_Placer``).
Coordinates are x,y,z in voxels; density 1 = protein, 0 = ice. See :mod:`milopyp.simulate`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from milopyp.simulation.filaments import _crossing_filaments, _draw_filament, _filament_curve
from milopyp.simulation.parameters import GLOBULAR_SPECIES
from milopyp.simulation.templates import (
    _add_rotated,
    _extent_radius_vox,
    _random_rotations,
    species_templates,
    spike_template,
)

log = logging.getLogger(__name__)


@dataclass
class _Filament:
    points: np.ndarray  # (M, 3) x,y,z voxels, spacing ~0.5 voxel
    tree: cKDTree
    radius_vox: float


@dataclass
class _Vesicle:
    centre: np.ndarray  # (3,) x,y,z
    radius_vox: float


def _draw_vesicle(
    volume, centre_xyz, radius_vox: float, thickness_vox: float, voxel_size_a: float
) -> None:
    """Add a bilayer shell: two Gaussian leaflets ``0.75 * thickness`` apart."""
    shape = np.asarray(volume.shape)
    c = np.asarray(centre_xyz)[::-1]
    reach = radius_vox + thickness_vox + 2
    lo = np.maximum(np.floor(c - reach).astype(int), 0)
    hi = np.minimum(np.ceil(c + reach).astype(int) + 1, shape)
    if np.any(hi <= lo):
        return
    z, y, x = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    r = np.sqrt((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2)
    sep = 0.375 * thickness_vox
    sigma = max(0.6, 8.0 / voxel_size_a)
    dens = np.exp(-((r - radius_vox - sep) ** 2) / (2 * sigma**2))
    dens += np.exp(-((r - radius_vox + sep) ** 2) / (2 * sigma**2))
    volume[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] += dens.astype(volume.dtype)


class _Placer:
    """Rejection sampling of non-overlapping spheres among filaments and vesicles.

    Placed spheres are indexed by a KD-tree (rebuilt every ``_REBUILD`` placements; the newest
    ones are checked directly), so a batch of candidates is tested in one vectorised step.
    """

    _REBUILD = 64

    def __init__(self, rng, shape_zyx, gap_vox: float):
        self.rng = rng
        self.shape = np.asarray(shape_zyx)
        self.gap = gap_vox
        self.centres = np.zeros((0, 3))
        self.radii = np.zeros(0)
        self.tree: cKDTree | None = None
        self.n_tree = 0  # centres[:n_tree] are in the tree
        self.filaments: list[_Filament] = []
        self.vesicles: list[tuple[_Vesicle, float]] = []  # (vesicle, half thickness)

    def _touches_spheres(self, cand: np.ndarray, radius: float) -> np.ndarray:
        """Boolean ``(M,)``: candidates closer to a placed sphere than the radii + gap."""
        bad = np.zeros(len(cand), dtype=bool)
        if self.tree is not None:
            reach = radius + float(self.radii[: self.n_tree].max()) + self.gap
            lists = self.tree.query_ball_point(cand, reach, return_sorted=False)
            lengths = np.fromiter((len(v) for v in lists), dtype=np.int64, count=len(lists))
            if lengths.sum():
                ci = np.repeat(np.arange(len(cand)), lengths)
                ni = np.concatenate([np.asarray(v, dtype=np.int64) for v in lists if v])
                d2 = ((cand[ci] - self.centres[ni]) ** 2).sum(-1)
                hit = d2 < (self.radii[ni] + radius + self.gap) ** 2
                bad |= np.bincount(ci[hit], minlength=len(cand)) > 0
        tail = self.centres[self.n_tree :]
        if len(tail):
            d2 = ((cand[:, None, :] - tail[None]) ** 2).sum(-1)
            bad |= np.any(d2 < (self.radii[self.n_tree :][None] + radius + self.gap) ** 2, axis=1)
        return bad

    def clear(self, cand: np.ndarray, radius: float, skip_vesicle: int | None = None) -> np.ndarray:
        """Boolean ``(M,)``: candidates (x,y,z) of ``radius`` that touch nothing placed
        (vesicle number ``skip_vesicle`` excepted: a spike's own membrane)."""
        ok = ~self._touches_spheres(cand, radius)
        for fil in self.filaments:
            dist, _ = fil.tree.query(cand, distance_upper_bound=fil.radius_vox + radius + self.gap)
            ok &= ~np.isfinite(dist)
        for k, (ves, half_t) in enumerate(self.vesicles):
            if k == skip_vesicle:
                continue
            r = np.sqrt(((cand - ves.centre) ** 2).sum(-1))
            ok &= np.abs(r - ves.radius_vox) >= half_t + radius + self.gap
        return ok

    def add(self, centre: np.ndarray, radius: float) -> None:
        """Record a sphere (x,y,z centre, radius in voxels) as placed."""
        self.centres = np.vstack([self.centres, centre])
        self.radii = np.append(self.radii, radius)
        if len(self.centres) - self.n_tree >= self._REBUILD:
            self.tree = cKDTree(self.centres)
            self.n_tree = len(self.centres)

    def place(
        self, radius: float, *, tries: int = 4000, batch: int = 64, rng=None
    ) -> np.ndarray | None:
        """A random centre (x,y,z) with the sphere fully inside the volume, or None.

        Draws from ``rng`` (default: the placer's own stream)."""
        rng = self.rng if rng is None else rng
        upper = self.shape[::-1] - 1 - radius
        if np.any(upper < radius):
            return None
        for _ in range(max(1, tries // batch)):
            cand = rng.uniform(radius, upper, size=(batch, 3))
            ok = np.flatnonzero(self.clear(cand, radius))
            if ok.size:
                centre = cand[ok[0]]
                self.add(centre, radius)
                return centre
        return None


def _attach_spike(
    rng, placer: _Placer, vesicle: int, radius: float, base_vox: float, batch: int = 32
) -> tuple[np.ndarray, np.ndarray] | None:
    """Centre (x,y,z) and axis of a spike on vesicle number ``vesicle``, or None when full.

    The axis is the outward normal, the base on the membrane's outer surface (vesicle radius
    + half the membrane thickness), the exclusion sphere inside the volume and clear of
    everything else placed.
    """
    ves, half_t = placer.vesicles[vesicle]
    upper = placer.shape[::-1] - 1 - radius
    for _ in range(60):
        axes = rng.standard_normal((batch, 3))
        axes /= np.linalg.norm(axes, axis=1, keepdims=True)
        cand = ves.centre + (ves.radius_vox + half_t + base_vox) * axes
        ok = np.all((cand >= radius) & (cand <= upper), axis=1)
        ok[ok] = placer.clear(cand[ok], radius, skip_vesicle=vesicle)
        hit = np.flatnonzero(ok)
        if hit.size:
            placer.add(cand[hit[0]], radius)
            return cand[hit[0]], axes[hit[0]]
    return None


def _add_spikes(rng, vol, rows: list[dict], placer: _Placer, params, counts, voxel_size_a) -> None:
    """Spikes on the vesicles (shared out in turn), then free spikes, drawn from ``rng``.

    Truth: the template's centre of mass, the Euler angles of its rotation (the spike axis is
    ``R @ (0, 0, 1)``) and, for attached spikes, ``vesicle_id``.
    """
    template, base_vox = spike_template(voxel_size_a, params["sizes_a"].get("spike") or 200.0)
    radius = _extent_radius_vox(template)
    missing: dict[str, int] = {}
    n_ves = len(placer.vesicles)
    if counts["spike"] and not n_ves:
        log.warning("no vesicle to attach %d spikes to; skipped", counts["spike"])
        missing["spike"] = counts["spike"]
    elif counts["spike"]:
        order = rng.permutation(n_ves)
        full: set[int] = set()
        for k in range(counts["spike"]):
            placed = None
            for j in range(n_ves):
                v = int(order[(k + j) % n_ves])
                if v not in full:
                    placed = _attach_spike(rng, placer, v, radius, base_vox)
                    if placed is not None:
                        break
                    full.add(v)
            if placed is None:
                missing["spike"] = missing.get("spike", 0) + 1
                continue
            centre, axis = placed
            euler = [np.arctan2(axis[1], axis[0]), np.arccos(np.clip(axis[2], -1, 1)),
                     rng.uniform(0, 2 * np.pi)]
            rot = Rotation.from_euler("ZYZ", euler)
            _add_rotated(vol, template, centre, rot.as_matrix())
            rows.append(_particle_row("spike", centre, rot, vesicle_id=v))
    rotations = _random_rotations(rng, counts["free_spike"])
    for i in range(counts["free_spike"]):
        centre = placer.place(radius, rng=rng)
        if centre is None:
            missing["free_spike"] = missing.get("free_spike", 0) + 1
            continue
        _add_rotated(vol, template, centre, rotations[i].as_matrix())
        rows.append(_particle_row("free_spike", centre, rotations[i]))
    if missing:
        log.warning("volume too small or too crowded: could not place %s", missing)


def _particle_row(name: str, centre, rot: Rotation, **extra) -> dict:
    rot_deg, tilt, psi = rot.as_euler("ZYZ", degrees=True)
    return {"species": name, "x": centre[0], "y": centre[1], "z": centre[2],
            "rot": rot_deg, "tilt": tilt, "psi": psi, **extra}


def _build_phantom(
    rng, shape_zyx, voxel_size_a: float, params: dict, counts: dict[str, int], spike_rng=None
):
    """Density ``[z, y, x]`` float32 and the truth rows (list of dicts).

    ``rng`` draws filaments, vesicles, globular particles and the background; ``spike_rng``
    (default: ``rng``) the spikes, so presets without spikes do not depend on it.
    """
    nz, ny, nx = shape_zyx
    vol = np.zeros(shape_zyx, dtype=np.float32)
    rows: list[dict] = []
    placer = _Placer(rng, shape_zyx, params["min_gap_a"] / voxel_size_a)
    width = 0.35

    # filaments first (they cross the whole volume)
    r_out = params["sizes_a"]["filament"] / 2 / voxel_size_a
    r_in = params["filament_inner_diameter_a"] / 2 / voxel_size_a
    if params["filament_layout"] == "crossing":
        curves = _crossing_filaments(rng, shape_zyx, counts["filament"], r_out, placer.gap)
    else:
        curves = [_filament_curve(rng, shape_zyx, r_out, 0.5) for _ in range(counts["filament"])]
    for fid, pts in enumerate(curves):
        _draw_filament(vol, pts, r_out, r_in, width)
        placer.filaments.append(_Filament(pts, cKDTree(pts), r_out))
        truth_pts = pts[::4]  # every 2 voxels
        margin = r_out
        lim = np.array([nx, ny, nz]) - 1 - margin
        keep = np.all((truth_pts >= margin) & (truth_pts <= lim), axis=1)
        for x, y, z in truth_pts[keep]:
            rows.append({"species": "filament", "x": x, "y": y, "z": z, "fiber_id": fid})

    # vesicles: shell must not cut a filament; centre inside, shell may leave the slab in z
    half_t = params["membrane_thickness_a"] / 2 / voxel_size_a
    rmin, rmax = (v / voxel_size_a for v in params["vesicle_radius_a"])
    for _ in range(counts["vesicle"]):
        for _attempt in range(200):
            radius = rng.uniform(rmin, rmax)
            lo = np.array(
                [min(radius, (nx - 1) / 2), min(radius, (ny - 1) / 2), min(radius, (nz - 1) / 2)]
            )
            hi = np.array([nx - 1, ny - 1, nz - 1]) - lo
            centre = rng.uniform(lo, hi)
            ok = True
            for fil in placer.filaments:
                d = np.sqrt(((fil.points - centre) ** 2).sum(-1))
                ok &= bool(np.all(np.abs(d - radius) >= half_t + fil.radius_vox + placer.gap))
            for ves, ht in placer.vesicles:
                d = float(np.sqrt(((ves.centre - centre) ** 2).sum()))
                ok &= d >= ves.radius_vox + radius + ht + half_t + placer.gap
            if ok:
                break
        else:
            log.warning("could not place a vesicle without overlap; skipped")
            continue
        _draw_vesicle(vol, centre, radius, 2 * half_t, voxel_size_a)
        placer.vesicles.append((_Vesicle(centre, radius), half_t))
        rows.append(
            {
                "species": "vesicle",
                "x": centre[0],
                "y": centre[1],
                "z": centre[2],
                "radius_a": radius * voxel_size_a,
                **({"vesicle_id": len(placer.vesicles) - 1} if counts["spike"] else {}),
            }
        )

    # particles: all instances shuffled, so no species gets the better spots
    templates = species_templates(voxel_size_a, params)
    names = [s for s in GLOBULAR_SPECIES for _ in range(counts[s])]
    order = rng.permutation(len(names))
    rotations = _random_rotations(rng, len(names))
    mats = rotations.as_matrix()
    eulers = rotations.as_euler("ZYZ", degrees=True) if len(names) else np.zeros((0, 3))
    radii = {s: _extent_radius_vox(t) for s, t in templates.items()}  # = particle_radii_vox
    missing: dict[str, int] = {}
    for i in order:
        name = names[i]
        centre = placer.place(radii[name])
        if centre is None:
            missing[name] = missing.get(name, 0) + 1
            continue
        _add_rotated(vol, templates[name], centre, mats[i])
        rot, tilt, psi = eulers[i]
        rows.append(
            {
                "species": name,
                "x": centre[0],
                "y": centre[1],
                "z": centre[2],
                "rot": rot,
                "tilt": tilt,
                "psi": psi,
            }
        )
    if missing:
        log.warning("volume too small or too crowded: could not place %s", missing)

    # spikes last, from their own stream: adding them moves nothing else (none: no draws)
    if counts["spike"] or counts["free_spike"]:
        _add_spikes(
            rng if spike_rng is None else spike_rng, vol, rows, placer, params, counts,
            voxel_size_a,
        )

    if params["background_std"] > 0:
        noise = rng.standard_normal(shape_zyx, dtype=np.float32)
        noise = ndimage.gaussian_filter(noise, 1.0, truncate=2.5)
        noise *= params["background_std"] / max(float(noise.std()), 1e-12)
        vol += noise
    return vol, rows


