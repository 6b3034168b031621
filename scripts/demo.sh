#!/usr/bin/env bash
# `make demo`: simulate a small dataset with ground truth, run the whole workflow on it and
# report where the results are and how accurate they are. Run from the repository root with
# .venv/bin on PATH (the Makefile does both).
set -euo pipefail
cd "$(dirname "$0")/.."
data=demo/data
start=$SECONDS

if [ ! -f "$data/.complete" ]; then
    echo "== simulating 4 tomograms (64 x 256 x 256 voxels, 12 Å) into $data"
    milopyp simulate -o "$data" --n-tomograms 4 --shape-vox 64 256 256 --voxel-size-a 12 \
        --preset demo --seed 0
    touch "$data/.complete"
fi

echo "== running the workflow (snakemake --cores 2 --configfile config/demo.yaml)"
snakemake --cores 2 --configfile config/demo.yaml --rerun-incomplete --quiet rules

echo
echo "== accuracy against the simulator's truth"
python - <<'PY'
import pandas as pd
rows = {"ribosome: DoG candidates (all)": ("demo/results/evaluation/candidates.csv", "130 Å"),
        "ribosome: milopyp picks": ("demo/results/targets/ribosome/evaluation/picks.csv", "130 Å"),
        "microtubule: picks": ("demo/results/targets/microtubule/evaluation/picks.csv", "3 vox")}
print(f"   {'':32s} {'picks':>6s} {'precision':>9s} {'recall':>6s} {'F1':>6s}  match within")
for label, (path, radius) in rows.items():
    r = pd.read_csv(path).set_index("tomogram").loc["overall"]
    print(f"   {label:32s} {int(r.n_picks):6d} {r.precision:9.3f} {r.recall:6.3f} {r.f1:6.3f}  {radius}")
f = pd.read_csv("demo/results/targets/microtubule/evaluation/fibers.csv").set_index("tomogram")
f = f.loc["overall"]
print(f"   microtubule: traced fibres {int(f.n_traced_fibers)} for {int(f.n_true_fibers)} true"
      f" ({int(f.found_fibers)} found); centre-line points precision {f.point_precision:.3f}"
      f" recall {f.point_recall:.3f} F1 {f.point_f1:.3f}")
PY
echo
echo "== results (each target under demo/results/targets/<name>/)"
echo "   ribosome     picks.star (RELION 5), picks.csv, picks/*.csv, report.html, overlay.png"
echo "   microtubule  fibers.star (RELION 5, helical tube id + tilt/psi priors, overlapping"
echo "                segments), fibers.csv (centre lines), fibers/*.csv, picks.star, report.html"
echo "   labels       targets/ribosome/labels/ (from the seeds in config/demo-seeds.yaml),"
echo "                targets/microtubule/labels/ (config/demo-microtubule.csv)"
echo "   candidates   demo/results/candidates/*.csv   (tomogram,x,y,z,score; voxels)"
echo "   exploration  demo/results/explore/explorer.html  (open in a browser)"
echo "                demo/results/explore/grid.png, gallery.png, colormaps/*.png"
echo "                demo/results/explore/points.csv (cluster and UMAP per candidate)"
echo "   demo finished in $((SECONDS - start)) s"
