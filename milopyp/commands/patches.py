"""``milopyp patches``: cut the 2D network inputs of every candidate of one tomogram.

Writes ``patches/{tomogram}.npz`` with ``patches`` float32 ``(N, C, size, size)`` (channels
``tilt, slice`` = P_t, P_s with a tilt series, else ``slice``), ``channels``, ``xyz`` (N, 3),
``score`` (N,), ``tomogram`` (file stem) and ``voxel_size_a``. See :mod:`milopyp.patches`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from milopyp.errors import MilopypError

HELP = "cut 2D inputs (tilt-series patch average, central slices) per candidate"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tomogram", required=True, help="tomogram (MRC) the candidates refer to")
    parser.add_argument(
        "--candidates",
        required=True,
        help="candidate table (.csv/.tsv/.txt/.star), x y z in tomogram voxels",
    )
    parser.add_argument(
        "--tilt-series",
        default=None,
        help="aligned tilt series (MRC stack, tilt axis along y) of this tomogram",
    )
    parser.add_argument(
        "--angles", default=None, help="tilt angles (.tlt); default <tilt-series stem>.tlt/.rawtlt"
    )
    parser.add_argument("--size", type=int, default=64, help="patch size in pixels (64)")
    parser.add_argument(
        "--slices", type=int, default=3, help="z-slices averaged for the slice patch (3)"
    )
    parser.add_argument(
        "--max-angle",
        type=float,
        default=15.0,
        help="average tilt images with |angle| <= this, degrees (15)",
    )
    parser.add_argument(
        "--voxel-size", type=float, default=None, help="tomogram voxel size in Å (default: header)"
    )
    parser.add_argument(
        "--tilt-pixel-size",
        type=float,
        default=None,
        help="tilt-series pixel size in Å (default: header)",
    )
    parser.add_argument(
        "--geometry",
        default=None,
        metavar="JSON",
        help="geometry record of `milopyp check-geometry` (projection sign, binning, offset, "
        "contrast); default: sign +1, no offset, binned by the header pixel sizes",
    )
    parser.add_argument(
        "--invert-tilt-series",
        action="store_true",
        help="negate the tilt series (protein dark -> bright), to match a tomogram that "
        "`milopyp preprocess --invert` inverted",
    )
    parser.add_argument("-o", "--output", required=True, help="patch file to write (.npz)")


def _match_pixel_size(stack: np.ndarray, tilt_px: float, tomo_px: float, path) -> np.ndarray:
    """Bin the tilt series to the tomogram's voxel size (integer factors only)."""
    from milopyp.patches import bin_tilt_series

    ratio = tomo_px / tilt_px
    if abs(ratio - 1) <= 0.01:
        return stack
    factor = round(ratio)
    if factor >= 2 and abs(ratio - factor) <= 0.02 * factor:
        log.info("binning %s by %d (%.3g Å -> %.3g Å per pixel)", path, factor, tilt_px, tomo_px)
        return bin_tilt_series(stack, factor)
    raise MilopypError(
        f"{path}: tilt-series pixel size {tilt_px:g} Å does not match the tomogram voxel size "
        f"{tomo_px:g} Å (ratio {ratio:.3g}, not a whole number); bin the tilt series to the "
        f"tomogram's pixel size, or pass --tilt-pixel-size / --voxel-size if a header is wrong"
    )


def _apply_geometry(stack: np.ndarray, path) -> tuple[np.ndarray, dict]:
    """Bin (and, for inverted contrast, negate) the tilt series as the geometry record says;
    return it with the projection settings for :func:`milopyp.patches.make_patches`."""
    from milopyp.io.geometry import read_geometry
    from milopyp.patches import bin_tilt_series

    record = read_geometry(path)
    if record["contrast"] == "inverted":
        stack = -stack
    stack = bin_tilt_series(stack, int(record["bin"]))
    log.info(
        "%s: sign %+d, bin %d, offset %.2f, %.2f voxels, contrast %s", path, record["sign"],
        record["bin"], record["offset_x_vox"], record["offset_y_vox"], record["contrast"],
    )
    offset = (float(record["offset_x_vox"]), float(record["offset_y_vox"]))
    return stack, {"sign": int(record["sign"]), "offset_xy": offset}


def main(args: argparse.Namespace) -> None:
    from milopyp.io.atomic import atomic_path, prepare_outputs
    from milopyp.io.coords import check_inside, read_coordinates, xyz_array
    from milopyp.io.mrc import read_tilt_series, read_tomogram
    from milopyp.patches import make_patches

    if args.size < 8:
        raise MilopypError(f"--size must be >= 8 pixels, got {args.size}")
    if args.slices < 1:
        raise MilopypError(f"--slices must be >= 1, got {args.slices}")
    prepare_outputs(args.output)
    tomo_path = Path(args.tomogram)
    name = tomo_path.stem
    tomogram, voxel_size_a = read_tomogram(tomo_path, voxel_size_a=args.voxel_size)
    cand = read_coordinates(
        args.candidates, tomogram=name, voxel_size_a=voxel_size_a, shape_zyx=tomogram.shape
    )
    if len(cand) == 0:
        raise MilopypError(
            f"{args.candidates}: no candidates in {args.candidates}; lower "
            f"candidates.threshold_std or check particle_diameter"
        )
    names = cand["tomogram"].unique()
    if len(names) == 1 and names[0] != name:  # e.g. a preprocessed copy with another stem
        log.info("%s: using the candidates' tomogram name %r", args.tomogram, names[0])
        name = str(names[0])
    check_inside(cand, tomogram.shape, args.candidates)
    xyz = xyz_array(cand)
    score = (
        cand["score"].to_numpy(dtype=np.float64)
        if "score" in cand.columns
        else np.full(len(cand), np.nan)
    )

    stack = angles = None
    geometry = {"sign": 1, "offset_xy": (0.0, 0.0)}
    if args.tilt_series is not None:
        stack, angles, tilt_px = read_tilt_series(
            args.tilt_series, args.angles, pixel_size_a=args.tilt_pixel_size
        )
        if args.invert_tilt_series:
            stack = -stack
        if args.geometry is not None:
            stack, geometry = _apply_geometry(stack, args.geometry)
        else:
            stack = _match_pixel_size(stack, tilt_px, voxel_size_a, args.tilt_series)
    elif args.angles is not None or args.geometry is not None:
        raise MilopypError(
            "--angles/--geometry given without --tilt-series; give the tilt series too"
        )

    patches, channels = make_patches(
        tomogram,
        xyz,
        size=args.size,
        n_slices=args.slices,
        tilt_series=stack,
        angles_deg=angles,
        max_angle_deg=args.max_angle,
        **geometry,
    )
    with atomic_path(args.output) as tmp, open(tmp, "wb") as fh:  # file object: no suffix added
        np.savez(
            fh,
            patches=patches.astype(np.float32),
            channels=np.array(channels),
            xyz=xyz.astype(np.float64),
            score=score,
            tomogram=np.array(name),
            voxel_size_a=np.float64(voxel_size_a),
        )
    log.info(
        "%s: %d patches %s (%s) -> %s",
        name,
        len(xyz),
        patches.shape[1:],
        ", ".join(channels),
        args.output,
    )
