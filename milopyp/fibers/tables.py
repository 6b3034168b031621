"""Fibre tables: traced fibres as ``tomogram, fiber_id, x, y, z`` rows, tracing a whole pick
table, and the overlapping extraction points along fibres with RELION priors."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from milopyp.fibers.tracing import Fiber, trace

log = logging.getLogger(__name__)

#: columns of a fibre table, in this order
FIBER_COLUMNS = ("tomogram", "fiber_id", "x", "y", "z")


def fibers_frame(fibers: list[Fiber], tomogram: str) -> pd.DataFrame:
    """Fibre table ``tomogram, fiber_id, x, y, z`` (voxels) of ``fibers``; ids 0..K-1 in
    list order, rows in order along each fibre."""
    if not fibers:
        return _empty_fibers()
    ids = np.concatenate([np.full(len(f.points), i, np.int64) for i, f in enumerate(fibers)])
    xyz = np.concatenate([f.points for f in fibers])
    return pd.DataFrame({"tomogram": str(tomogram), "fiber_id": ids,
                         "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]})


def trace_table(picks: pd.DataFrame, *, link_distance_vox: float, **kwargs) -> pd.DataFrame:
    """Trace the picks of each tomogram of a point table (``tomogram, x, y, z[, score]``,
    voxels); returns ``tomogram, fiber_id, x, y, z`` with ``fiber_id`` 0..K-1 per tomogram.

    Keyword arguments as :func:`~milopyp.fibers.trace`; a ``score`` column is used as the
    weights when every pick of the tomogram has a finite score (else a warning, unweighted).
    Logs what each tomogram gave.
    """
    frames = []
    names = picks["tomogram"].astype(str).to_numpy() if len(picks) else np.array([], str)
    for name in dict.fromkeys(names):
        sub = picks[names == name]
        scores = pd.to_numeric(sub["score"], errors="coerce").to_numpy(np.float64) \
            if "score" in sub.columns else None
        if scores is not None and not np.all(np.isfinite(scores)):
            log.warning("some picks of %s have no score; fitting unweighted", name)
            scores = None
        xyz = sub.loc[:, ["x", "y", "z"]].to_numpy(np.float64)
        result = trace(xyz, link_distance_vox=link_distance_vox, scores=scores, **kwargs)
        log.info("%s: %d picks (link %.3g voxels): %s", name, len(sub), link_distance_vox,
                 result.summary())
        frames.append(fibers_frame(result.fibers, name))
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else _empty_fibers()


def _empty_fibers() -> pd.DataFrame:
    return pd.DataFrame({"tomogram": pd.Series(dtype=str), "fiber_id": pd.Series(dtype=np.int64),
                         **{c: pd.Series(dtype=np.float64) for c in ("x", "y", "z")}})


# --------------------------------------------------------------------------- segments


def relion_tilt_psi(tangent) -> tuple[np.ndarray, np.ndarray]:
    """RELION priors (degrees) that put a particle's z axis along ``tangent`` (N, 3), x,y,z.

    RELION's Euler angles (rot, tilt, psi) are ZYZ; ``A = Euler_angles2matrix(rot, tilt,
    psi)`` carries the reference onto the particle (``x_particle = A x_reference``; ``A`` is
    the transpose of scipy's ``Rotation.from_euler("ZYZ", [rot, tilt, psi])`` matrix). Its
    last column, the image of the reference z axis (a helix's axis), is
    ``(-cos(psi) sin(tilt), sin(psi) sin(tilt), cos(tilt))`` whatever rot is: rot is the
    free angle about the fibre. So ``tilt = arccos(t_z)`` in [0, 180] and ``psi = 180 -
    atan2(t_y, t_x)`` in (-180, 180] (as PySeg's ``vect_to_zrelion``); fibres lying in the
    x-y plane have tilt 90.
    """
    t = np.asarray(tangent, dtype=np.float64).reshape(-1, 3)
    t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    tilt = np.degrees(np.arccos(np.clip(t[:, 2], -1.0, 1.0)))
    psi = 180.0 - np.degrees(np.arctan2(t[:, 1], t[:, 0]))
    psi = np.where(psi > 180.0, psi - 360.0, psi)
    return tilt, psi


def segment_points(
    fibers: pd.DataFrame, spacing_vox: float, *, voxel_size_a: float | None = None
) -> pd.DataFrame:
    """Overlapping extraction points every ``spacing_vox`` voxels along each fibre.

    ``fibers``: a fibre table (``tomogram, fiber_id, x, y, z``; voxels; rows in order along
    each fibre, as :func:`trace_table` writes). Along each fibre's polyline the points sit at
    arc lengths ``o, o + spacing, ...`` with ``o`` centring them (a fibre shorter than the
    spacing gets one point, at its middle). Returns ``tomogram, fiber_id, x, y, z`` (voxels),
    ``rlnAngleTilt, rlnAnglePsi`` and the same values as ``rlnAngleTiltPrior,
    rlnAnglePsiPrior`` (degrees, see :func:`relion_tilt_psi`; the tangent points along
    increasing row order, so the fibre's polarity is arbitrary), and with ``voxel_size_a``
    (Å) ``rlnHelicalTrackLengthAngst``: the point's arc length from the fibre's first point.
    """
    if not (np.isfinite(spacing_vox) and spacing_vox > 0):
        raise ValueError(f"segment_points: spacing_vox must be > 0, got {spacing_vox}")
    cols = ["rlnAngleTilt", "rlnAnglePsi", "rlnAngleTiltPrior", "rlnAnglePsiPrior"]
    cols += ["rlnHelicalTrackLengthAngst"] if voxel_size_a is not None else []
    rows = [_empty_fibers().assign(**{c: pd.Series(dtype=np.float64) for c in cols})]
    keys = fibers["tomogram"].astype(str) + "\0" + fibers["fiber_id"].astype(str)
    for key in dict.fromkeys(keys):
        sub = fibers[keys == key]
        pos, tangent, s = _polyline_samples(sub[["x", "y", "z"]].to_numpy(np.float64),
                                            float(spacing_vox))
        tilt, psi = relion_tilt_psi(tangent)
        values = [tilt, psi, tilt, psi] + ([s * voxel_size_a] if voxel_size_a is not None else [])
        rows.append(pd.DataFrame({"tomogram": str(sub["tomogram"].iloc[0]),
                                  "fiber_id": sub["fiber_id"].iloc[0], "x": pos[:, 0],
                                  "y": pos[:, 1], "z": pos[:, 2], **dict(zip(cols, values))}))
    return pd.concat(rows[1:], ignore_index=True) if len(rows) > 1 else rows[0]


def _polyline_samples(xyz: np.ndarray, spacing: float):
    """Positions (n, 3), unit tangents (n, 3) and arc lengths (n,) every ``spacing`` voxels."""
    if len(xyz) == 1:
        return xyz.copy(), np.array([[1.0, 0.0, 0.0]]), np.zeros(1)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xyz, axis=0), axis=1))])
    total = arc[-1]
    n = int(np.floor(total / spacing + 1e-9)) + 1
    s = (total - (n - 1) * spacing) / 2 + spacing * np.arange(n)

    def at(a):
        return np.column_stack([np.interp(np.clip(a, 0, total), arc, xyz[:, k]) for k in range(3)])

    h = min(spacing, total) / 2
    pos, tangent = at(s), at(s + h) - at(s - h)
    norm = np.linalg.norm(tangent, axis=1, keepdims=True)
    fallback = (xyz[-1] - xyz[0]) / max(total, 1e-12)
    tangent = np.where(norm > 1e-12, tangent / np.maximum(norm, 1e-12), fallback)
    return pos, tangent, s
