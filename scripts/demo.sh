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
    milopyp simulate -o "$data" --n-tomograms 4 --shape 64 256 256 --voxel-size 12 \
        --preset demo --seed 0
    touch "$data/.complete"
fi

echo "== running the workflow (snakemake --cores 2 --configfile config/demo.yaml)"
snakemake --cores 2 --configfile config/demo.yaml --rerun-incomplete --quiet rules

echo
echo "== accuracy against the simulator's truth (ribosomes; a match lies within 130 Å)"
python - <<'PY'
import pandas as pd
rows = {"DoG candidates (all)": "demo/results/evaluation/candidates.csv",
        "milopyp picks": "demo/results/evaluation/picks.csv"}
print(f"   {'':22s} {'picks':>6s} {'precision':>9s} {'recall':>6s} {'F1':>6s}")
for label, path in rows.items():
    r = pd.read_csv(path).set_index("tomogram").loc["overall"]
    print(f"   {label:22s} {int(r.n_picks):6d} {r.precision:9.3f} {r.recall:6.3f} {r.f1:6.3f}")
PY
echo
echo "== results"
echo "   picks        demo/results/picks.star (RELION 5), demo/results/picks.csv, picks/*.csv"
echo "   report       demo/results/report.html"
echo "   candidates   demo/results/candidates/*.csv   (tomogram,x,y,z,score; voxels)"
echo "   exploration  demo/results/explore/explorer.html  (open in a browser)"
echo "                demo/results/explore/grid.png, gallery.png, colormaps/*.png"
echo "                demo/results/explore/points.csv (cluster and UMAP per candidate)"
echo "   labels       demo/results/labels/ (from the seeds in config/demo-seeds.yaml)"
echo "   demo finished in $((SECONDS - start)) s"
