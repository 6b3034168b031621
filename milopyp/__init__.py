"""milopyp: find proteins in cryo-electron tomograms.

Self-supervised exploration (DoG candidates, SimSiam embeddings, clustering) and
few-shot localisation, wired as a Snakemake workflow. Arrays are indexed
``[z, y, x]``; coordinates are ``x, y, z`` in voxels (see ``milopyp.io.coords``).
"""

__version__ = "0.1.0"
