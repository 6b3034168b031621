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
echo "== accuracy of the DoG candidates against the simulator's truth (ribosomes)"
column -s, -t < demo/results/evaluation/candidates.csv
echo
echo "== results"
echo "   candidates   demo/results/candidates/*.csv   (tomogram,x,y,z,score; voxels)"
echo "   exploration  demo/results/explore/explorer.html  (open in a browser)"
echo "                demo/results/explore/grid.png, gallery.png, colormaps/*.png"
echo "                demo/results/explore/points.csv (cluster and UMAP per candidate)"
echo "   demo finished in $((SECONDS - start)) s"
