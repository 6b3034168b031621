"""The explorer page in a real browser (Debian's Chromium driven by Playwright).

Needs /usr/bin/chromium (`bash scripts/install-browser.sh`, apt-get) and the `playwright`
Python package; never `playwright install`. Skipped, with the reason, when either is missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.slow


def _playwright():
    # `make test` installs both and sets MILOPYP_REQUIRE_BROWSER: there a missing browser fails.
    missing = pytest.fail if os.environ.get("MILOPYP_REQUIRE_BROWSER") else pytest.skip
    if not os.path.exists(CHROMIUM):
        missing(f"{CHROMIUM} missing: run `bash scripts/install-browser.sh` (apt-get chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright Python package is not installed (pip install playwright)")
    return sync_playwright


def synthetic_points(n: int = 300, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """4 clusters as well-separated blobs at the corners of the UMAP plane, and patches with
    a different picture per cluster (disc, ring, bars)."""
    rng = np.random.default_rng(seed)
    cluster = np.arange(n) % 4
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    uv = centres[cluster] + rng.normal(scale=0.7, size=(n, 2))
    size = 24
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - 11.5, xx - 11.5)
    shapes = np.stack([r < 6, (r > 5) & (r < 8), abs(yy - 11.5) < 3, abs(xx - 11.5) < 3]) * 3.0
    patches = (shapes[cluster] + rng.normal(size=(n, size, size))).astype(np.float32)
    points = pd.DataFrame(
        {
            "point_id": np.arange(n),
            "tomogram": np.where(np.arange(n) < n // 2, "tomo_000", "tomo_001"),
            "x": rng.integers(0, 56, n).astype(float),
            "y": rng.integers(0, 40, n).astype(float),
            "z": rng.integers(0, 24, n).astype(float),
            "score": rng.random(n),
            "cluster": cluster,
            "umap_x": uv[:, 0],
            "umap_y": uv[:, 1],
        }
    )
    return points, patches


def test_explorer_selection_round_trip(tmp_path):
    sync_playwright = _playwright()
    from milopyp.visualize.explorer import explorer_html

    points, patches = synthetic_points()
    page_path = tmp_path / "explorer.html"
    page_path.write_text(explorer_html(points, thumbnails=patches), encoding="utf-8")
    url = page_path.as_uri()
    ids = {c: points.point_id[points.cluster == c].tolist() for c in range(4)}

    requests: list[str] = []
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                accept_downloads=True, viewport={"width": 1280, "height": 900}
            )
            page = context.new_page()
            page.on("request", lambda req: requests.append(req.url))
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']")

            def client(u: float, v: float) -> tuple[float, float]:
                p = page.evaluate("([u, v]) => window.milopypExplorer.toClient(u, v)", [u, v])
                return p["x"], p["y"]

            def blob_box(c: int, pad: float = 8.0):
                sub = points[points.cluster == c]
                xs, ys = zip(*(client(u, v) for u, v in zip(sub.umap_x, sub.umap_y)))
                return min(xs) - pad, min(ys) - pad, max(xs) + pad, max(ys) + pad

            # hover: the tooltip shows the thumbnail of the point under the mouse
            p0 = points.iloc[0]
            page.mouse.move(*client(p0.umap_x, p0.umap_y))
            tooltip = page.locator("#tooltip")
            tooltip.wait_for(state="visible")
            assert tooltip.locator("img").get_attribute("src").startswith("data:image/png;base64,")
            assert "cluster 0" in tooltip.inner_text()

            # box drag around cluster 2 (a real mouse drag on the canvas)
            x0, y0, x1, y1 = blob_box(2)
            page.mouse.move(x0, y0)
            page.mouse.down()
            page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=4)
            page.mouse.move(x1, y1, steps=4)
            page.mouse.up()
            sel = page.evaluate("window.milopypExplorer.selection()")
            assert sel["points"] == sorted(ids[2])

            # shift + lasso around cluster 3 adds to the selection
            page.click("#mode-lasso")
            x0, y0, x1, y1 = blob_box(3, pad=10)
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            # a closed free-hand-like path around the blob: corners, with bulges mid-edge
            ring = [
                (x0, y0),
                (cx, y0 - 4),
                (x1, y0),
                (x1 + 4, cy),
                (x1, y1),
                (cx, y1 + 4),
                (x0, y1),
                (x0 - 4, cy),
                (x0, y0 + 2),
            ]
            page.keyboard.down("Shift")
            page.mouse.move(*ring[0])
            page.mouse.down()
            for x, y in ring[1:]:
                page.mouse.move(x, y, steps=2)
            page.mouse.up()
            page.keyboard.up("Shift")

            # a click on one point of cluster 3 deselects it
            p3 = points[points.cluster == 3].iloc[5]
            page.mouse.click(*client(p3.umap_x, p3.umap_y))

            # whole clusters 0 and 1 by their toggles
            page.click('.cluster-toggle[data-cluster="0"]')
            page.click('.cluster-toggle[data-cluster="1"]')
            page.mouse.move(5, 5)
            shot = tmp_path / "explorer.png"
            page.screenshot(path=str(shot))
            summary = page.locator("#selection-summary").inner_text()
            assert "2 cluster(s) + 149 point(s) = 299 candidates" in summary, summary

            with page.expect_download() as info:
                page.click("#save-selection")
            download = info.value
            assert download.suggested_filename == "selection.json"
            saved = tmp_path / "selection.json"
            download.save_as(saved)

            # negatives: a cluster's "not" box, and a clicked point marked "not this"
            page.click("#clear-selection")
            page.click('.cluster-toggle[data-cluster="0"]')
            page.click('.cluster-negative[data-cluster="1"]')
            p2 = points[points.cluster == 2].iloc[3]
            page.mouse.click(*client(p2.umap_x, p2.umap_y))
            page.click("#mark-negative")
            page.click('.cluster-negative[data-cluster="0"]')  # moves 0 to the negatives...
            page.click('.cluster-toggle[data-cluster="0"]')    # ...and back
            assert not page.is_checked('.cluster-negative[data-cluster="0"]')
            page.mouse.move(5, 5)
            assert "Not this: 1 cluster(s) + 1 point(s) = 76 candidates" in page.locator(
                "#negative-summary").inner_text()
            with page.expect_download() as info:
                page.click("#save-selection")
            with_negatives = tmp_path / "selection-negatives.json"
            info.value.save_as(with_negatives)
            context.close()
        finally:
            browser.close()

    selection = json.loads(saved.read_text())
    expected_points = sorted(set(ids[2]) | (set(ids[3]) - {int(p3.point_id)}))
    assert selection == {
        "clusters": [0, 1],
        "points": expected_points,
        "source": "milopyp explorer",
        "n_points": 75 + 75 + 149,
    }
    assert json.loads(with_negatives.read_text()) == {
        "clusters": [0],
        "points": [],
        "source": "milopyp explorer",
        "n_points": 75,
        "negatives": {"clusters": [1], "points": [int(p2.point_id)], "n_points": 76},
    }
    assert not errors, errors
    foreign = [u for u in requests if u != url and not u.startswith(("data:", "blob:"))]
    assert foreign == [], foreign
    assert url in requests
    assert Path(shot).stat().st_size > 10_000
    # keep the screenshot for a person to look at when asked (MILOPYP_KEEP_SCREENSHOT=dir)
    keep = os.environ.get("MILOPYP_KEEP_SCREENSHOT")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / "explorer.png").write_bytes(shot.read_bytes())
