"""The exploration stage's files: one reader and one writer each.

* **patch file** ``patches/{tomogram}.npz`` (``milopyp patches``): ``patches`` float32
  ``(N, C, size, size)`` indexed ``[y, x]`` (channels ``tilt, slice`` = P_t, P_s with a tilt
  series, else ``slice``), ``channels`` (C names), ``xyz`` (N, 3) x, y, z tomogram voxels,
  ``score`` (N,), ``tomogram`` (name) and ``voxel_size_a`` (Å);
* **embeddings file** ``embeddings/{tomogram}.npz`` (``milopyp embed``): ``embeddings``
  float32 (N, D) and the patch file's ``xyz``, ``score``, ``tomogram``, ``voxel_size_a``;
* **points table** ``explore/points.csv`` (``milopyp cluster``): :data:`POINT_COLUMNS`, one
  row per candidate; ``point_id`` is what ``selection.json`` refers to;
* **exploration model** ``explore/model.pt`` (``milopyp train-explore``): a plain dict,
  ``torch.load(path, weights_only=True)``, with ``format`` (:data:`MODEL_FORMAT`),
  the architecture (``in_channels``, ``width``, ``dim``, ``pred_dim``, ``stem``), ``model``
  (SimSiam state_dict, CPU tensors) and metadata: ``patch_size`` [H, W], ``channels``,
  ``hparams``, ``history``, ``sources``, ``milopyp_version``, ``torch_version``. Files
  without ``stem`` (older ones) load with the ImageNet stem.

Readers raise :class:`~milopyp.errors.MilopypError` naming the file and the command that
writes it; writers are atomic. torch is imported only by the model functions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from milopyp.errors import MilopypError
from milopyp.io.atomic import atomic_path
from milopyp.io.mrc import tomogram_name

#: columns of points.csv, in order
POINT_COLUMNS = ("point_id", "tomogram", "x", "y", "z", "score", "cluster",
                 "umap_x", "umap_y", "umap3_x", "umap3_y", "umap3_z")
#: format tag of the exploration model file (the version after the slash)
MODEL_FORMAT = "milopyp-explore-model/1"


@dataclass
class PatchFile:
    """A patch file's content (see the module docstring)."""

    path: str
    patches: np.ndarray  # (N, C, H, W) float32
    channels: list[str]  # C names, [] when the file has none
    xyz: np.ndarray  # (N, 3) float64, x, y, z voxels
    score: np.ndarray | None  # (N,)
    tomogram: str
    voxel_size_a: float | None


@dataclass
class EmbeddingFile:
    """An embeddings file's content (see the module docstring)."""

    path: str
    embeddings: np.ndarray  # (N, D) float32
    xyz: np.ndarray  # (N, 3) float64, x, y, z voxels
    score: np.ndarray | None  # (N,)
    tomogram: str
    voxel_size_a: float | None


def _load_npz(path, want: tuple[str, ...], producer: str) -> dict[str, np.ndarray]:
    if not Path(path).is_file():
        raise MilopypError(f"{path}: file not found; run `{producer}` first")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except (OSError, ValueError) as err:
        raise MilopypError(
            f"{path}: not a readable .npz file ({err}); re-run `{producer}`"
        ) from err
    missing = [k for k in want if k not in data]
    if missing:
        raise MilopypError(
            f"{path}: missing arrays {missing} (found {sorted(data)}); give a file written by "
            f"`{producer}`"
        )
    return data


def _scalar_str(value, default: str) -> str:
    try:
        return str(np.asarray(value).item())
    except (ValueError, TypeError):
        return default


def _common(path, data: dict, n: int, producer: str) -> dict[str, Any]:
    """xyz, score, tomogram and voxel_size_a of a patch or embeddings file of ``n`` rows."""
    xyz = np.asarray(data["xyz"], dtype=np.float64)
    if xyz.size != 3 * n:
        raise MilopypError(
            f"{path}: expected xyz (N, 3) with N = {n}, got shape {xyz.shape}; re-run `{producer}`"
        )
    stem = tomogram_name(path)
    vs = data.get("voxel_size_a")
    return {
        "path": str(path),
        "xyz": xyz.reshape(n, 3),
        "score": _score(data, n),
        "tomogram": _scalar_str(data.get("tomogram", stem), stem),
        "voxel_size_a": None if vs is None else float(np.asarray(vs).item()),
    }


def _score(data: dict, n: int) -> np.ndarray | None:
    return np.asarray(data["score"], dtype=np.float64).reshape(n) if "score" in data else None


def read_patches(path: str | os.PathLike) -> PatchFile:
    """Read and check a patch file: 4-D finite patches, one xyz row each."""
    data = _load_npz(path, ("patches", "xyz"), "milopyp patches")
    p = data["patches"]
    if p.ndim != 4:
        raise MilopypError(
            f"{path}: expected patches (N, C, H, W), got shape {p.shape}; re-run `milopyp patches`"
        )
    if len(p) and not np.isfinite(p).all():
        raise MilopypError(f"{path}: patches contain NaN or inf; check the input tomogram")
    channels = [str(c) for c in np.atleast_1d(data["channels"])] if "channels" in data else []
    return PatchFile(patches=p.astype(np.float32, copy=False), channels=channels,
                     **_common(path, data, len(p), "milopyp patches"))


def write_patches(path: str | os.PathLike, patches: np.ndarray, channels: list[str], xyz,
                  score, tomogram: str, voxel_size_a: float) -> None:
    """Write a patch file atomically; ``score`` None is written as NaN."""
    n = len(patches)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # file object: no suffix added
        np.savez(
            fh,
            patches=np.asarray(patches, dtype=np.float32),
            channels=np.array(channels),
            xyz=np.asarray(xyz, dtype=np.float64).reshape(n, 3),
            score=np.full(n, np.nan) if score is None else np.asarray(score, np.float64),
            tomogram=np.array(tomogram),
            voxel_size_a=np.float64(voxel_size_a),
        )


def read_embeddings(path: str | os.PathLike) -> EmbeddingFile:
    """Read and check an embeddings file: (N, D) embeddings, one xyz row each."""
    data = _load_npz(path, ("embeddings", "xyz"), "milopyp embed")
    emb = np.asarray(data["embeddings"], dtype=np.float32)
    if emb.ndim != 2 or data["xyz"].size != 3 * len(emb):
        raise MilopypError(
            f"{path}: expected embeddings (N, D) and xyz (N, 3) with the same N, got "
            f"{emb.shape} and {data['xyz'].shape}; re-run `milopyp embed`"
        )
    return EmbeddingFile(embeddings=emb, **_common(path, data, len(emb), "milopyp embed"))


def write_embeddings(path: str | os.PathLike, embeddings: np.ndarray, source: PatchFile) -> None:
    """Write the embeddings (N, D) of the patch file ``source`` atomically, with its xyz,
    score (when it has one), tomogram and voxel size (when it has one)."""
    write_embedding_rows(path, embeddings, source.xyz, source.score, source.tomogram,
                         source.voxel_size_a)


def write_embedding_rows(path: str | os.PathLike, embeddings: np.ndarray, xyz, score,
                         tomogram: str, voxel_size_a: float | None) -> None:
    """Write one tomogram's candidates' embeddings (N, D) atomically in the format of
    :func:`read_embeddings` (``milopyp cluster`` writes its clustering features so, one file
    per tomogram); ``score`` and ``voxel_size_a`` None are left out."""
    extra = {"xyz": xyz, "score": score, "tomogram": np.array(tomogram),
             "voxel_size_a": voxel_size_a}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, embeddings=np.asarray(embeddings, dtype=np.float32),
                 **{k: v for k, v in extra.items() if v is not None})


def write_points(path: str | os.PathLike, points: pd.DataFrame) -> None:
    """Write points.csv atomically: the :data:`POINT_COLUMNS` of ``points``, in that order."""
    with atomic_path(path) as tmp:
        points[list(POINT_COLUMNS)].to_csv(tmp, index=False)


def read_points(path: str | os.PathLike, columns=POINT_COLUMNS) -> pd.DataFrame:
    """Read points.csv; MilopypError when it is missing or lacks one of ``columns`` (all of
    :data:`POINT_COLUMNS` by default)."""
    if not Path(path).is_file():
        raise MilopypError(f"{path}: points table not found; run `milopyp cluster` first")
    try:
        points = pd.read_csv(path, dtype={"tomogram": str})
    except (OSError, ValueError) as err:
        raise MilopypError(
            f"{path}: not a readable CSV table ({err}); re-run `milopyp cluster`"
        ) from err
    missing = [c for c in columns if c not in points.columns]
    if missing:
        raise MilopypError(
            f"{path}: no column(s) {missing}; found {list(points.columns)}; give the "
            "explore/points.csv written by `milopyp cluster`"
        )
    return points


def model_state(model, **meta: Any) -> dict[str, Any]:
    """The content of a model file: format, architecture, weights (CPU) and ``meta``."""
    from milopyp.explore.simsiam import architecture

    return {
        "format": MODEL_FORMAT,
        **architecture(model),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **meta,
    }


def model_from_state(state: dict[str, Any]):
    """Rebuild the SimSiam saved by :func:`model_state` (CPU, eval mode)."""
    from milopyp.explore.simsiam import build_simsiam

    if not str(state.get("format", "")).startswith(MODEL_FORMAT.split("/")[0] + "/"):
        raise ValueError(f"not a milopyp exploration model (format {state.get('format')!r})")
    model = build_simsiam(state["in_channels"], state["width"], state["dim"], state["pred_dim"],
                          state.get("stem", "imagenet"))
    model.load_state_dict(state["model"])
    return model.eval()


def write_model(path: str | os.PathLike, model, **meta: Any) -> None:
    """Write the exploration model file of ``model`` (a SimSiam) with ``meta`` atomically."""
    import torch

    state = model_state(model, **meta)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def read_model(path: str | os.PathLike):
    """Read a model file -> (SimSiam on the CPU in eval mode, the file's dict)."""
    import torch

    if not Path(path).is_file():
        raise MilopypError(f"{path}: model file not found; run `milopyp train-explore` first")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = model_from_state(state)
    except Exception as err:  # corrupt, truncated or foreign file
        raise MilopypError(
            f"{path}: not a readable milopyp exploration model ({err}); "
            "re-run `milopyp train-explore`"
        ) from err
    return model, state
