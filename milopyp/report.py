"""A small self-contained HTML report: pick counts, score histograms, accuracy, figures.

Pure functions: tables in, PNG bytes / HTML text out; :func:`run`, the ``report`` stage
(``milopyp report`` translates its options into it), reads and writes the files. The page
needs no network: images are embedded as ``data:`` URIs and the style sheet is inline, so it
can be mailed or copied off a cluster and opened offline.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from milopyp.errors import MilopypError

log = logging.getLogger(__name__)

#: at most this many tomograms get their own histogram curve; beyond, one overall histogram
MAX_CURVES = 12


def count_table(picks: pd.DataFrame, candidates: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per tomogram: ``n_picks``, ``mean_score``, ``median_score`` (+ ``n_candidates``).

    ``tomograms`` are the union of both tables' names (a tomogram without picks has 0).
    The last row, ``all``, sums the counts and summarises all scores.
    """
    names = set(picks["tomogram"].astype(str))
    if candidates is not None:
        names |= set(candidates["tomogram"].astype(str))
    rows = []
    score = (
        pd.to_numeric(picks["score"], errors="coerce")
        if "score" in picks.columns
        else pd.Series(np.nan, index=picks.index)
    )
    tomo = picks["tomogram"].astype(str)
    for name in [*sorted(names), None]:
        mask = np.ones(len(picks), bool) if name is None else (tomo == name).to_numpy()
        s = score[mask].dropna()
        row = {
            "tomogram": "all" if name is None else name,
            "n_picks": int(mask.sum()),
            "mean_score": float(s.mean()) if len(s) else math.nan,
            "median_score": float(s.median()) if len(s) else math.nan,
        }
        if candidates is not None:
            c_tomo = candidates["tomogram"].astype(str)
            row["n_candidates"] = int(len(candidates) if name is None else (c_tomo == name).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def fiber_table(fibers: pd.DataFrame) -> pd.DataFrame:
    """Fibres, points and total length (voxels, 2-voxel steps summed) per tomogram, then a
    ``total`` row. ``fibers``: ``tomogram, fiber_id, x, y, z`` (voxels)."""
    rows = []
    for name, sub in fibers.groupby(fibers["tomogram"].astype(str), sort=True):
        length = 0.0
        for _, f in sub.groupby("fiber_id"):
            xyz = f[["x", "y", "z"]].to_numpy(np.float64)
            length += float(np.linalg.norm(np.diff(xyz, axis=0), axis=1).sum())
        rows.append({"tomogram": name, "fibres": int(sub["fiber_id"].nunique()),
                     "points": len(sub), "length_vox": round(length, 1)})
    total = {"tomogram": "total", "fibres": sum(r["fibres"] for r in rows),
             "points": sum(r["points"] for r in rows),
             "length_vox": round(sum(r["length_vox"] for r in rows), 1)}
    return pd.DataFrame([*rows, total], columns=["tomogram", "fibres", "points", "length_vox"])


def score_histogram_png(picks: pd.DataFrame, *, bins: int = 30) -> bytes | None:
    """PNG bytes of the pick-score histogram, one step curve per tomogram (up to
    :data:`MAX_CURVES` tomograms, else one overall histogram); None without finite scores.
    """
    if "score" not in picks.columns:
        return None
    score = pd.to_numeric(picks["score"], errors="coerce").to_numpy(np.float64)
    finite = np.isfinite(score)
    if not finite.any():
        return None
    from matplotlib.figure import Figure  # no pyplot: renders with Agg, no global state

    lo, hi = float(score[finite].min()), float(score[finite].max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    fig = Figure(figsize=(6.4, 3.6), dpi=100)
    ax = fig.add_subplot()
    tomo = picks["tomogram"].astype(str).to_numpy()
    names = sorted(set(tomo[finite]))
    if 1 < len(names) <= MAX_CURVES:
        for name in names:
            ax.hist(score[finite & (tomo == name)], bins=edges, histtype="step", label=name)
        ax.legend(fontsize="small", frameon=False)
        ax.set_title("pick scores per tomogram")
    else:
        ax.hist(score[finite], bins=edges, color="#1f77b4")
        ax.set_title("pick scores" + (f" ({names[0]})" if len(names) == 1 else " (all)"))
    ax.set_xlabel("score")
    ax.set_ylabel("picks")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """``data:<mime>;base64,...`` for embedding bytes in HTML."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _cell(value) -> str:
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "–"
        return f"{value:.3f}" if abs(value) < 1e4 else f"{value:.4g}"
    return html.escape(str(value))


def html_table(df: pd.DataFrame) -> str:
    """``df`` as a plain HTML table (floats with 3 decimals, NaN as a dash)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        cells = "".join(
            f'<td class="{"num" if isinstance(v, (int, float, np.number)) else "txt"}">'
            f"{_cell(v)}</td>"
            for v in row
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.9em; }
img { max-width: 100%; height: auto; }
.note { color: #555; }
.warning { border-left: 4px solid #c62828; background: #fdecea; padding: 0.5em 0.8em; }
"""


def model_summary(state: dict) -> tuple[pd.DataFrame, list[str]]:
    """What a localiser file (:func:`milopyp.io.localizer.read_localizer`'s dict) says about
    its training: a two-column table (``item``, ``value``) and the warnings to show above
    everything else (the model did not learn its target,
    :func:`milopyp.localize.calibrate.not_learned_note`). Fields a file predates show "not
    recorded"."""
    from milopyp.localize.calibrate import (
        FIBER_MIN_CONTRAST,
        FIBER_THRESHOLD_FRACTION,
        MIN_LABEL_CONTRAST,
        not_learned_note,
    )

    cal = dict(state.get("calibration") or {})
    shape = str(dict(state.get("settings") or {}).get("shape", "globular"))
    fibre = shape == "fiber"
    # the labels' heat-map peaks before any profile weighing (fibres are not weighed)
    label = cal.get("label_peak_median" if fibre else "label_heat_median")
    background = cal.get("background_peak_median")
    separated = cal.get("separated")

    def show(value, fmt="{:.4g}"):
        return "not recorded" if value is None else fmt.format(value)

    rows = [
        ("shape", shape),
        ("labels (calibration tomograms)", show(cal.get("n_labels"), "{:d}")),
        ("voxel size trained at (Å)", show(state.get("voxel_size_a"), "{:g}")),
        ("automatic threshold", show(cal.get("threshold"))),
        ("threshold rule", cal.get("rule", f"{FIBER_THRESHOLD_FRACTION:g} x label median, at "
                                   "least the heat map's bulk" if fibre else "not recorded")),
        ("labels' median score (the threshold's scale)", show(cal.get("label_peak_median"))),
        ("labels' median heat-map peak", show(label)),
        ("median heat-map peak at random places", show(background)),
        (f"contrast (at least {FIBER_MIN_CONTRAST if fibre else MIN_LABEL_CONTRAST:g} x)",
         show(label / background if label is not None and background else None, "{:.1f} x")),
        ("learned the target", "not checked" if separated is None else
         ("yes" if separated else "NO")),
        ("test-time flips", show(cal.get("flips"), "{:d}")),
    ]
    note = not_learned_note(cal, shape)
    warnings = [f"{note[0].upper()}{note[1:]}."] if note else []
    return pd.DataFrame(rows, columns=["item", "value"]), warnings


def render_report(
    *,
    title: str,
    counts: pd.DataFrame,
    histogram_png: bytes | None = None,
    metrics: pd.DataFrame | None = None,
    figures: Sequence[tuple[str, bytes, str]] = (),
    sources: Sequence[str] = (),
    fibers: pd.DataFrame | None = None,
    fiber_metrics: pd.DataFrame | None = None,
    model: pd.DataFrame | None = None,
    warnings: Sequence[str] = (),
) -> str:
    """The report page. ``figures``: ``(caption, bytes, mime type)``; ``sources``: input
    file names listed at the end; ``fibers``: per-tomogram fibre counts
    (:func:`fiber_table`); ``fiber_metrics``: :func:`milopyp.evaluate.evaluate_fibers`;
    ``model`` and ``warnings``: :func:`model_summary` (warnings go first, under the title).
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *(f'<p class="warning">{html.escape(w)}</p>' for w in warnings),
        "<h2>Picks per tomogram</h2>",
        html_table(counts),
        "<h2>Score distribution</h2>",
    ]
    if histogram_png is not None:
        parts.append(
            f'<figure><img alt="histogram of pick scores" src="{data_uri(histogram_png)}">'
            "</figure>"
        )
    else:
        parts.append('<p class="note">No pick scores to show.</p>')
    if fibers is not None:
        parts += ["<h2>Traced fibres per tomogram</h2>", html_table(fibers)]
    if metrics is not None:
        parts += ["<h2>Accuracy against ground truth</h2>", html_table(metrics)]
    if fiber_metrics is not None:
        parts += ["<h2>Fibres against ground truth</h2>", html_table(fiber_metrics)]
    if model is not None:
        parts += ["<h2>Model</h2>", html_table(model)]
    if figures:
        parts.append("<h2>Figures</h2>")
        for caption, data, mime in figures:
            parts.append(
                f'<figure><img alt="{html.escape(caption)}" src="{data_uri(data, mime)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    if sources:
        items = "".join(f"<li>{html.escape(s)}</li>" for s in sources)
        parts.append(f'<h2>Inputs</h2><ul class="note">{items}</ul>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


MIME = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
}


def read_tables(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """Point tables as one (a 0-byte file counts as a table without rows)."""
    from milopyp.export import combine_picks
    from milopyp.io.coords import empty_points, read_coordinates

    frames = []
    for p in paths:
        if Path(p).is_file() and Path(p).stat().st_size == 0:
            frames.append(empty_points(["score"]))
        else:
            frames.append(read_coordinates(p))
    return combine_picks(frames)


def read_metrics(path: str | os.PathLike) -> pd.DataFrame:
    """A metrics table of ``milopyp evaluate``."""
    if not Path(path).is_file():
        raise MilopypError(f"{path}: metrics table not found; run `milopyp evaluate` first")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise MilopypError(
            f"{path}: not a readable metrics table ({err}); give the CSV of `milopyp evaluate`"
        ) from None
    if "tomogram" not in df.columns:
        raise MilopypError(
            f"{path}: no `tomogram` column (found {list(df.columns)}); give the CSV written by "
            f"`milopyp evaluate`"
        )
    return df


def read_figure(path: str | os.PathLike) -> tuple[str, bytes, str]:
    """``(name, bytes, MIME type)`` of an image to embed."""
    p = Path(path)
    mime = MIME.get(p.suffix.lower())
    if mime is None:
        raise MilopypError(
            f"{p}: cannot embed a {p.suffix or 'suffix-less'} file; give images "
            f"({', '.join(MIME)})"
        )
    if not p.is_file():
        raise MilopypError(f"{p}: figure not found; check the path")
    return p.name, p.read_bytes(), mime


def run(picks: Sequence[str | os.PathLike], output: str | os.PathLike, *,
        candidates: Sequence[str | os.PathLike] | None = None,
        metrics: str | os.PathLike | None = None,
        fibers: Sequence[str | os.PathLike] | None = None,
        fiber_metrics: str | os.PathLike | None = None,
        figures: Sequence[str | os.PathLike] = (), title: str = "milopyp report",
        model: str | os.PathLike | None = None) -> None:
    """Write the HTML report ``output`` of the pick tables ``picks`` (and ``candidates``),
    the metrics tables of ``milopyp evaluate`` (``metrics``; ``fiber_metrics`` with
    ``--fibers``), the traced ``fibers``, the images ``figures`` and what the localiser
    file ``model`` says about its training (:func:`model_summary`)."""
    from milopyp.io.atomic import prepare_outputs, write_text

    prepare_outputs(output)
    pick_table = read_tables(picks)
    candidate_table = read_tables(candidates) if candidates else None
    metrics_table = read_metrics(metrics) if metrics else None
    fiber_metrics_table = read_metrics(fiber_metrics) if fiber_metrics else None
    fiber_rows = fiber_table(read_tables(fibers)) if fibers else None
    images = [read_figure(f) for f in figures]
    model_table, warnings = None, []
    if model is not None:
        from milopyp.io.localizer import read_localizer

        model_table, warnings = model_summary(read_localizer(model))
        for warning in warnings:
            log.warning("%s: %s", model, warning)
    counts = count_table(pick_table, candidate_table)
    sources = [*picks, *(candidates or []), *([metrics] if metrics else []), *(fibers or []),
               *([model] if model else [])]
    page = render_report(
        title=title, counts=counts, histogram_png=score_histogram_png(pick_table),
        metrics=metrics_table, figures=images, sources=[str(p) for p in sources],
        fibers=fiber_rows, fiber_metrics=fiber_metrics_table, model=model_table,
        warnings=warnings,
    )
    write_text(output, page)
    log.info("wrote %s (%d picks in %d tomogram(s), %d figure(s))", output, len(pick_table),
             len(counts) - 1, len(images))
