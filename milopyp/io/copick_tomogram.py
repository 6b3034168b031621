"""One run's tomogram of a copick project as an MRC file: the stage of ``milopyp
copick-tomogram``.

The workflow reads a copick campaign's tomograms through this step (one MRC per run, named
after the run), so that every later step reads MRC as usual. The voxel size written is the
project's voxel spacing of that tomogram (never assumed). The MRC is a float32 copy of the
OME-Zarr's full-resolution level: it needs ``4 * nz * ny * nx`` bytes of disk and memory.
Kept apart from :mod:`milopyp.io.copick` (the copick reader and writer) because it is the one
place that joins the two formats.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def run(copick_config: str | os.PathLike, run_name: str, voxel_spacing_a: float, tomo_type: str,
        output: str | os.PathLike) -> None:
    """Write the ``tomo_type`` tomogram (e.g. ``wbp``, ``denoised``) at ``voxel_spacing_a`` (Å)
    of run ``run_name`` of the copick project ``copick_config`` (its config.json) as a float32
    MRC ``[z, y, x]`` at ``output``; a z larger than x or y is logged as a warning."""
    from milopyp.io import copick as cp
    from milopyp.io.atomic import prepare_outputs
    from milopyp.io.mrc import check_axes, write_tomogram

    prepare_outputs(output)
    root = cp.open_project(copick_config)
    data, voxel_size_a = cp.read_tomogram(root, run_name, voxel_spacing_a, tomo_type,
                                          copick_config)
    message = check_axes(data.shape, f"{copick_config} run {run_name}")
    if message:
        log.warning("%s", message)
    write_tomogram(output, data, voxel_size_a)
    log.info("%s run %s (%s, %g Å, shape %s) -> %s", copick_config, run_name, tomo_type,
             voxel_size_a, data.shape, output)
