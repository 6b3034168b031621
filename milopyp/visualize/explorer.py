"""The explorer: one self-contained, offline HTML file to look at the embedding and pick
targets.

Design: hand-written HTML + JavaScript with a <canvas> scatter plot, no library and no
network request at all (a Content-Security-Policy meta tag forbids them; thumbnails are PNG
``data:`` URIs). We chose this over Bokeh/Plotly output because the file stays small
(~0.3 MB for 300 points and ~5 MB for 5,000 points with 32 x 32 thumbnails of noisy
patches, against ~1.8 MB of Bokeh before any data), the page has stable element ids that a browser test can drive, and its
behaviour does not change with a plotting library's version.

What the page does:

* scatter of the 2D UMAP, coloured by cluster; wheel zooms, "pan" mode drags the view;
* hover a point: tooltip with its patch thumbnail, id, cluster, tomogram, x, y, z and score;
* drag in "box" or "lasso" mode selects the points inside (shift/ctrl-drag adds), a click on
  a point selects or deselects it;
* a checkbox per cluster (``.cluster-toggle[data-cluster="c"]``) selects the whole cluster;
* negatives, what is *not* the target: a second checkbox per cluster
  (``.cluster-negative[data-cluster="c"]``, "not") marks the whole cluster, and
  ``#mark-negative`` ("Mark as not this") moves the points selected one by one (box, lasso,
  click) to the negatives; negatives are drawn with a cross. A cluster or point is either
  selected or negative, never both;
* ``#save-selection`` downloads ``selection.json``::

      {"clusters": [c, ...], "points": [point_id, ...], "source": "milopyp explorer",
       "n_points": n,
       "negatives": {"clusters": [c, ...], "points": [point_id, ...], "n_points": m}}

  ``clusters`` are the whole clusters ticked, ``points`` the ``point_id`` values (column of
  ``points.csv``) selected one by one (box, lasso, click); the selection is their union and
  ``n_points`` its size (whole clusters counted with all their members, also those not shown
  when the display was capped). ``negatives`` (present only when something is marked) has the
  same form. ``#clear-selection`` empties both.

With more than ``max_points`` points, a per-cluster sample is shown (every cluster keeps a
share) and the page says so; whole-cluster selections still stand for all members.
"""

from __future__ import annotations

import base64
import html
import json

import numpy as np
import pandas as pd

from milopyp.visualize import cluster_colors_hex, png_bytes, resize_patches, to_display

REQUIRED_COLUMNS = ("point_id", "tomogram", "x", "y", "z", "cluster", "umap_x", "umap_y")


def sample_per_cluster(labels: np.ndarray, max_points: int, *, seed: int) -> np.ndarray:
    """Sorted indices of at most ``max_points`` points: all of them when there are few enough,
    else a seeded sample in which each cluster keeps ``min(size, floor)`` points and the rest
    is shared in proportion to size."""
    labels = np.asarray(labels)
    n = len(labels)
    if n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    ids, sizes = np.unique(labels, return_counts=True)
    floor = max(1, min(20, max_points // max(len(ids), 1)))
    quota = np.minimum(sizes, floor)
    rest = max_points - int(quota.sum())
    if rest > 0:
        extra = (sizes - quota) * (rest / max(int((sizes - quota).sum()), 1))
        quota = quota + np.floor(extra).astype(int)
    chosen = []
    for c, q in zip(ids, quota):
        members = np.flatnonzero(labels == c)
        chosen.append(rng.choice(members, size=int(min(q, len(members))), replace=False))
    return np.sort(np.concatenate(chosen))


def thumbnail_uris(patches: np.ndarray, thumb_px: int = 32, levels: int = 32) -> list[str]:
    """Base64 PNG strings (without the ``data:`` prefix) of grey patches (N, h, w), each
    resized to ``thumb_px``, contrast-stretched on its own and quantised to ``levels`` grey
    levels (32 levels make noisy thumbnails ~40 % smaller than 256, with no visible change
    at this size)."""
    p = np.asarray(patches, dtype=np.float32)
    if p.ndim != 3:
        raise ValueError(f"thumbnail_uris: expected patches (N, h, w), got shape {p.shape}")
    if len(p) == 0:
        return []
    tiles = np.round(to_display(resize_patches(p, thumb_px)) * (levels - 1)) / (levels - 1)
    return [base64.b64encode(png_bytes(t)).decode("ascii") for t in tiles]


def explorer_html(
    points: pd.DataFrame,
    *,
    thumbnails: np.ndarray | None = None,
    max_points: int = 5000,
    thumb_px: int = 32,
    seed: int = 0,
    title: str = "milopyp explorer",
) -> str:
    """The explorer page as a string.

    ``points``: one row per candidate with columns ``point_id, tomogram, x, y, z, cluster,
    umap_x, umap_y`` (+ optional ``score``), as in ``points.csv``. ``thumbnails``: grey
    patches (N, h, w) in the same row order, or None (no pictures on hover).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in points.columns]
    if missing:
        raise ValueError(f"explorer_html: points table lacks columns {missing}")
    n_total = len(points)
    if thumbnails is not None and len(thumbnails) != n_total:
        raise ValueError(
            f"explorer_html: {len(thumbnails)} thumbnails for {n_total} points; give one each"
        )
    labels = points["cluster"].to_numpy().astype(int)
    shown = sample_per_cluster(labels, max_points, seed=seed)
    sub = points.iloc[shown]
    ids, sizes = np.unique(labels, return_counts=True)
    shown_counts = dict(zip(*np.unique(labels[shown], return_counts=True)))
    colors = cluster_colors_hex(int(labels.max()) + 1 if n_total else 1)
    tomo_names = sorted(set(points["tomogram"].astype(str)))
    tomo_index = {t: i for i, t in enumerate(tomo_names)}
    score = sub["score"].to_numpy(float) if "score" in sub.columns else np.full(len(sub), np.nan)

    def rounded(a: np.ndarray, nd: int) -> list:
        return [None if not np.isfinite(v) else round(float(v), nd) for v in a]

    data = {
        "title": title,
        "n_total": int(n_total),
        "n_shown": len(sub),
        "capped": bool(len(sub) < n_total),
        "clusters": [
            {
                "id": int(c),
                "size": int(s),
                "shown": int(shown_counts.get(c, 0)),
                "color": colors[int(c)],
            }
            for c, s in zip(ids, sizes)
        ],
        "tomograms": tomo_names,
        "id": [int(v) for v in sub["point_id"]],
        "u": rounded(sub["umap_x"].to_numpy(float), 4),
        "v": rounded(sub["umap_y"].to_numpy(float), 4),
        "c": [int(v) for v in sub["cluster"]],
        "t": [tomo_index[str(v)] for v in sub["tomogram"]],
        "x": rounded(sub["x"].to_numpy(float), 2),
        "y": rounded(sub["y"].to_numpy(float), 2),
        "z": rounded(sub["z"].to_numpy(float), 2),
        "s": rounded(score, 4),
        "thumbs": None
        if thumbnails is None
        else thumbnail_uris(np.asarray(thumbnails)[shown], thumb_px),
    }
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    note = f"{n_total} candidates in {len(ids)} clusters" + (
        f"; showing a per-cluster sample of {len(sub)}" if data["capped"] else ""
    )
    return (
        _TEMPLATE.replace("__TITLE__", html.escape(title))
        .replace("__NOTE__", html.escape(note))
        .replace("__DATA__", payload)
    )


_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; img-src data: blob:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
 body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #222; background: #fafafa; }
 header { padding: 8px 16px; border-bottom: 1px solid #ddd; background: #fff; }
 header h1 { font-size: 18px; margin: 0; display: inline-block; margin-right: 16px; }
 #summary { display: inline-block; color: #555; margin: 0; }
 main { display: flex; gap: 12px; padding: 12px; align-items: flex-start; }
 #plot-wrap { position: relative; flex: 1 1 auto; min-width: 300px; background: #fff;
   user-select: none;
   border: 1px solid #ddd; }
 #scatter { display: block; width: 100%; cursor: crosshair; }
 aside { flex: 0 0 300px; background: #fff; border: 1px solid #ddd; padding: 10px;
   max-height: calc(100vh - 80px); overflow-y: auto; }
 aside h2 { font-size: 14px; margin: 10px 0 4px; }
 .cluster-row { display: flex; align-items: center; gap: 6px; padding: 1px 0; cursor: pointer; }
 .swatch { width: 12px; height: 12px; border-radius: 50%; display: inline-block;
   border: 1px solid #0004; }
 .count { color: #777; margin-left: auto; font-size: 12px; }
 button { margin: 4px 4px 0 0; padding: 4px 10px; }
 #save-selection { font-weight: bold; }
 #selection-summary { margin: 6px 0; }
 #tooltip { position: absolute; display: none; pointer-events: none; background: #fff;
   border: 1px solid #888; padding: 4px; font-size: 12px; box-shadow: 0 2px 6px #0003;
   z-index: 2; }
 #tooltip img, #point-info img { width: 96px; height: 96px; image-rendering: pixelated;
   display: block; }
 #selection-thumbs img { width: 40px; height: 40px; image-rendering: pixelated; margin: 1px; }
 .hint { color: #777; font-size: 12px; margin: 4px 0; }
 .cluster-line { display: flex; align-items: center; }
 .cluster-line .cluster-row { flex: 1 1 auto; }
 .negative-label { color: #a00; font-size: 12px; margin-left: 6px; white-space: nowrap; }
</style>
</head>
<body>
<header><h1>__TITLE__</h1><p id="summary">__NOTE__</p></header>
<main>
 <div id="plot-wrap"><canvas id="scatter" aria-label="UMAP scatter plot"></canvas>
  <div id="tooltip"></div></div>
 <aside>
  <div id="tools">Drag:
   <label><input type="radio" name="mode" id="mode-box" value="box" checked> box</label>
   <label><input type="radio" name="mode" id="mode-lasso" value="lasso"> lasso</label>
   <label><input type="radio" name="mode" id="mode-pan" value="pan"> pan</label>
   <button id="reset-view" type="button">Reset view</button></div>
  <p class="hint">Shift-drag adds to the selection. Click a point to select or deselect it.
   Mouse wheel zooms. Tick a cluster to select all of it; tick "not" (or select points and
   press Mark as not this) to say what is not the target.</p>
  <h2>Clusters</h2>
  <div id="cluster-list"></div>
  <div><button id="clear-selection" type="button">Clear selection</button>
   <button id="mark-negative" type="button">Mark as not this</button>
   <button id="save-selection" type="button">Save selection</button></div>
  <p id="selection-summary">Nothing selected.</p>
  <p id="negative-summary" class="hint"></p>
  <h2>Point</h2>
  <div id="point-info" class="hint">Hover or click a point.</div>
  <h2>Selected patches</h2>
  <div id="selection-thumbs"></div>
 </aside>
</main>
<script type="application/json" id="milopyp-data">__DATA__</script>
<script>
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("milopyp-data").textContent);
  const N = D.id.length;
  const color = {}, size = {};
  D.clusters.forEach(function (c) { color[c.id] = c.color; size[c.id] = c.size; });
  const canvas = document.getElementById("scatter");
  const ctx = canvas.getContext("2d");
  const tooltip = document.getElementById("tooltip");
  const selPts = new Set();       // indices into the shown points
  const selClusters = new Set();  // cluster ids
  const negPts = new Set();       // indices marked "not this"
  const negClusters = new Set();  // cluster ids marked "not this"
  let W = 600, H = 600, view = null, drag = null, path = [];
  const R = 3.5, PICK = 8;

  function fullView() {
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let i = 0; i < N; i++) {
      x0 = Math.min(x0, D.u[i]); x1 = Math.max(x1, D.u[i]);
      y0 = Math.min(y0, D.v[i]); y1 = Math.max(y1, D.v[i]);
    }
    if (!isFinite(x0)) { x0 = 0; x1 = 1; y0 = 0; y1 = 1; }
    const mx = (x1 - x0) * 0.05 || 1, my = (y1 - y0) * 0.05 || 1;
    return {x0: x0 - mx, x1: x1 + mx, y0: y0 - my, y1: y1 + my};
  }
  function sx(u) { return (u - view.x0) / (view.x1 - view.x0) * W; }
  function sy(v) { return H - (v - view.y0) / (view.y1 - view.y0) * H; }
  function du(px) { return view.x0 + px / W * (view.x1 - view.x0); }
  function dv(py) { return view.y0 + (H - py) / H * (view.y1 - view.y0); }
  function isSel(i) { return selClusters.has(D.c[i]) || selPts.has(i); }
  function isNeg(i) { return negClusters.has(D.c[i]) || negPts.has(i); }

  function resize() {
    const dpr = window.devicePixelRatio || 1;
    W = Math.max(300, canvas.parentElement.clientWidth);
    H = Math.max(300, Math.min(W, window.innerHeight - 90));
    canvas.style.height = H + "px";
    canvas.width = Math.round(W * dpr); canvas.height = Math.round(H * dpr);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    draw();
  }

  function draw() {
    ctx.clearRect(0, 0, W, H);
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, W, H);
    ctx.fillStyle = "#999"; ctx.font = "12px sans-serif";
    ctx.fillText("UMAP 1 \u2192", W - 70, H - 6);
    ctx.save(); ctx.translate(12, 70); ctx.rotate(-Math.PI / 2);
    ctx.fillText("UMAP 2 \u2192", 0, 0); ctx.restore();
    const any = selPts.size > 0 || selClusters.size > 0;
    ctx.globalAlpha = any ? 0.25 : 0.85;
    for (let i = 0; i < N; i++) {
      if (any && isSel(i)) continue;
      ctx.fillStyle = color[D.c[i]];
      ctx.beginPath(); ctx.arc(sx(D.u[i]), sy(D.v[i]), R, 0, 2 * Math.PI); ctx.fill();
    }
    ctx.globalAlpha = 1; ctx.lineWidth = 1; ctx.strokeStyle = "#000";
    if (any) {
      for (let i = 0; i < N; i++) {
        if (!isSel(i)) continue;
        ctx.fillStyle = color[D.c[i]];
        ctx.beginPath(); ctx.arc(sx(D.u[i]), sy(D.v[i]), R + 0.5, 0, 2 * Math.PI);
        ctx.fill(); ctx.stroke();
      }
    }
    if (negPts.size > 0 || negClusters.size > 0) {
      ctx.strokeStyle = "#a00"; ctx.lineWidth = 1.5;
      for (let i = 0; i < N; i++) {
        if (!isNeg(i)) continue;
        const px = sx(D.u[i]), py = sy(D.v[i]);
        ctx.beginPath(); ctx.moveTo(px - R, py - R); ctx.lineTo(px + R, py + R);
        ctx.moveTo(px - R, py + R); ctx.lineTo(px + R, py - R); ctx.stroke();
      }
      ctx.lineWidth = 1; ctx.strokeStyle = "#000";
    }
    if (drag && drag.mode !== "pan" && drag.moved) {
      ctx.strokeStyle = "#333"; ctx.setLineDash([4, 3]); ctx.fillStyle = "rgba(0,0,0,0.05)";
      ctx.beginPath();
      if (drag.mode === "box") {
        ctx.rect(drag.x, drag.y, drag.cx - drag.x, drag.cy - drag.y);
      } else {
        path.forEach(function (p, k) { if (k) ctx.lineTo(p[0], p[1]); else ctx.moveTo(p[0], p[1]); });
        ctx.closePath();
      }
      ctx.fill(); ctx.stroke(); ctx.setLineDash([]);
    }
  }

  function local(e) {
    const r = canvas.getBoundingClientRect();
    return [e.clientX - r.left, e.clientY - r.top];
  }
  function nearest(px, py) {
    let best = -1, bd = PICK * PICK;
    for (let i = 0; i < N; i++) {
      const dx = sx(D.u[i]) - px, dy = sy(D.v[i]) - py, d = dx * dx + dy * dy;
      if (d <= bd) { bd = d; best = i; }
    }
    return best;
  }
  function inPolygon(x, y, poly) {
    let inside = false;
    for (let a = 0, b = poly.length - 1; a < poly.length; b = a++) {
      const xa = poly[a][0], ya = poly[a][1], xb = poly[b][0], yb = poly[b][1];
      if ((ya > y) !== (yb > y) && x < (xb - xa) * (y - ya) / (yb - ya) + xa) inside = !inside;
    }
    return inside;
  }
  function fmt(v) { return v === null ? "\u2013" : String(v); }
  function thumb(i) {
    return D.thumbs ? "data:image/png;base64," + D.thumbs[i] : null;
  }
  function esc(s) {
    return String(s).replace(/[&<>"]/g, function (ch) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[ch];
    });
  }
  function describe(i) {
    return "point " + D.id[i] + " \u00b7 cluster " + D.c[i] + "<br>" +
      esc(D.tomograms[D.t[i]]) + " (" + fmt(D.x[i]) + ", " + fmt(D.y[i]) + ", " + fmt(D.z[i]) +
      ")<br>score " + fmt(D.s[i]);
  }
  function setInfo(el, i) {
    el.textContent = "";
    const src = thumb(i);
    if (src) { const img = document.createElement("img"); img.src = src; img.alt = ""; el.appendChild(img); }
    const div = document.createElement("div"); div.innerHTML = describe(i); el.appendChild(div);
  }

  function mode() { return document.querySelector("input[name=mode]:checked").value; }

  canvas.addEventListener("mousedown", function (e) {
    if (e.button !== 0) return;
    const p = local(e);
    drag = {mode: mode(), x: p[0], y: p[1], cx: p[0], cy: p[1], moved: false,
            add: e.shiftKey || e.ctrlKey || e.metaKey, view: Object.assign({}, view)};
    path = [p];
    tooltip.style.display = "none";
    e.preventDefault();
  });
  window.addEventListener("mousemove", function (e) {
    const p = local(e);
    if (drag) {
      drag.cx = p[0]; drag.cy = p[1];
      if (Math.abs(p[0] - drag.x) + Math.abs(p[1] - drag.y) > 3) drag.moved = true;
      if (drag.mode === "pan") {
        const fx = (drag.view.x1 - drag.view.x0) / W, fy = (drag.view.y1 - drag.view.y0) / H;
        view = {x0: drag.view.x0 - (p[0] - drag.x) * fx, x1: drag.view.x1 - (p[0] - drag.x) * fx,
                y0: drag.view.y0 + (p[1] - drag.y) * fy, y1: drag.view.y1 + (p[1] - drag.y) * fy};
      } else if (drag.mode === "lasso") {
        path.push(p);
      }
      draw();
      return;
    }
    if (e.target !== canvas) { tooltip.style.display = "none"; return; }
    const i = nearest(p[0], p[1]);
    if (i < 0) { tooltip.style.display = "none"; return; }
    setInfo(tooltip, i);
    tooltip.style.left = Math.min(p[0] + 14, W - 170) + "px";
    tooltip.style.top = Math.min(p[1] + 14, H - 170) + "px";
    tooltip.style.display = "block";
  });
  window.addEventListener("mouseup", function (e) {
    if (!drag) return;
    const d = drag; drag = null;
    if (d.mode !== "pan" || !d.moved) {
      if (!d.moved) {
        const i = nearest(d.x, d.y);
        if (i >= 0) {
          if (selPts.has(i)) selPts.delete(i); else selPts.add(i);
          setInfo(document.getElementById("point-info"), i);
        }
      } else {
        if (!d.add) selPts.clear();
        const xa = Math.min(d.x, d.cx), xb = Math.max(d.x, d.cx);
        const ya = Math.min(d.y, d.cy), yb = Math.max(d.y, d.cy);
        for (let i = 0; i < N; i++) {
          const px = sx(D.u[i]), py = sy(D.v[i]);
          const hit = d.mode === "box" ? (px >= xa && px <= xb && py >= ya && py <= yb)
                                       : inPolygon(px, py, path);
          if (hit) selPts.add(i);
        }
      }
    }
    selPts.forEach(function (i) { negPts.delete(i); });
    path = [];
    update();
  });
  canvas.addEventListener("mouseleave", function () { if (!drag) tooltip.style.display = "none"; });
  canvas.addEventListener("wheel", function (e) {
    e.preventDefault();
    const p = local(e), f = e.deltaY > 0 ? 1.2 : 1 / 1.2, u = du(p[0]), v = dv(p[1]);
    view = {x0: u - (u - view.x0) * f, x1: u + (view.x1 - u) * f,
            y0: v - (v - view.y0) * f, y1: v + (view.y1 - v) * f};
    draw();
  }, {passive: false});
  document.getElementById("reset-view").addEventListener("click", function () {
    view = fullView(); draw();
  });

  const list = document.getElementById("cluster-list");
  D.clusters.forEach(function (c) {
    const row = document.createElement("label"); row.className = "cluster-row";
    const box = document.createElement("input"); box.type = "checkbox";
    box.className = "cluster-toggle"; box.dataset.cluster = String(c.id);
    box.id = "cluster-toggle-" + c.id;
    const neg = document.createElement("input"); neg.type = "checkbox";
    neg.className = "cluster-negative"; neg.dataset.cluster = String(c.id);
    neg.id = "cluster-negative-" + c.id; neg.title = "not the target";
    box.addEventListener("change", function () {
      if (box.checked) { selClusters.add(c.id); negClusters.delete(c.id); neg.checked = false; }
      else selClusters.delete(c.id);
      update();
    });
    neg.addEventListener("change", function () {
      if (neg.checked) { negClusters.add(c.id); selClusters.delete(c.id); box.checked = false; }
      else negClusters.delete(c.id);
      update();
    });
    const sw = document.createElement("span"); sw.className = "swatch"; sw.style.background = c.color;
    const name = document.createElement("span"); name.textContent = "cluster " + c.id;
    const cnt = document.createElement("span"); cnt.className = "count";
    cnt.textContent = "n = " + c.size + (c.shown < c.size ? " (" + c.shown + " shown)" : "");
    const negLabel = document.createElement("label"); negLabel.className = "negative-label";
    negLabel.append(neg, document.createTextNode(" not"));
    row.append(box, sw, name, cnt);
    const line = document.createElement("div"); line.className = "cluster-line";
    line.append(row, negLabel); list.appendChild(line);
  });

  function part(clusterSet, pointSet) {
    const clusters = Array.from(clusterSet).sort(function (a, b) { return a - b; });
    const points = Array.from(pointSet).map(function (i) { return D.id[i]; })
      .sort(function (a, b) { return a - b; });
    let n = 0;
    clusters.forEach(function (c) { n += size[c]; });
    pointSet.forEach(function (i) { if (!clusterSet.has(D.c[i])) n += 1; });
    return {clusters: clusters, points: points, n_points: n};
  }
  function selection() {
    const s = part(selClusters, selPts);
    const out = {clusters: s.clusters, points: s.points, source: "milopyp explorer",
                 n_points: s.n_points};
    const neg = part(negClusters, negPts);
    if (neg.clusters.length || neg.points.length) out.negatives = neg;
    return out;
  }
  function update() {
    draw();
    const s = selection();
    document.getElementById("selection-summary").textContent =
      (s.clusters.length || s.points.length)
        ? "Selected: " + s.clusters.length + " cluster(s) + " + s.points.length +
          " point(s) = " + s.n_points + " candidates."
        : "Nothing selected.";
    document.getElementById("negative-summary").textContent = s.negatives
      ? "Not this: " + s.negatives.clusters.length + " cluster(s) + " +
        s.negatives.points.length + " point(s) = " + s.negatives.n_points + " candidates."
      : "";
    const box = document.getElementById("selection-thumbs"); box.textContent = "";
    if (!D.thumbs) return;
    let k = 0;
    for (let i = 0; i < N && k < 60; i++) {
      if (!isSel(i)) continue;
      const img = document.createElement("img"); img.src = thumb(i);
      img.title = "point " + D.id[i]; box.appendChild(img); k++;
    }
  }
  document.getElementById("clear-selection").addEventListener("click", function () {
    selPts.clear(); selClusters.clear(); negPts.clear(); negClusters.clear();
    document.querySelectorAll(".cluster-toggle, .cluster-negative")
      .forEach(function (b) { b.checked = false; });
    update();
  });
  document.getElementById("mark-negative").addEventListener("click", function () {
    selPts.forEach(function (i) { negPts.add(i); });
    selPts.clear();
    update();
  });
  document.getElementById("save-selection").addEventListener("click", function () {
    const blob = new Blob([JSON.stringify(selection(), null, 1) + "\n"],
                          {type: "application/json"});
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob); a.download = "selection.json";
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(function () { URL.revokeObjectURL(a.href); }, 1000);
  });

  // For tests and scripting: data -> page (client) coordinates, and the current selection.
  window.milopypExplorer = {
    toClient: function (u, v) {
      const r = canvas.getBoundingClientRect();
      return {x: r.left + sx(u), y: r.top + sy(v)};
    },
    selection: selection,
  };
  view = fullView();
  window.addEventListener("resize", resize);
  resize();
  update();
  document.body.dataset.ready = "1";
})();
</script>
</body>
</html>
"""
