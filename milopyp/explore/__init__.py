"""Self-supervised exploration: SimSiam on a ResNet18 trunk over 2-D candidate patches.

- :mod:`~milopyp.explore.resnet`: :class:`ResNet18` trunk (any number of input channels).
- :mod:`~milopyp.explore.simsiam`: :class:`SimSiam`, :func:`simsiam_loss`.
- :mod:`~milopyp.explore.augment`: the paper's augmentations on (B, C, H, W) batches.
- :mod:`~milopyp.explore.train`: :func:`train_simsiam` (seeded, checkpointed, resumable).
- :mod:`~milopyp.explore.embed`: :func:`embed_patches` -> (N, 128) embeddings.
- :mod:`~milopyp.explore.run`: the stages ``train`` (``milopyp train-explore``) and
  ``embed`` (``milopyp embed``), files in and out through :mod:`milopyp.io.exploration`.
- :mod:`~milopyp.explore.mapping`: the ``milopyp cluster`` stage (clusters, UMAP, figures,
  explorer).

Submodules other than ``defaults``, ``run`` and ``mapping`` import torch; import them directly
(``from milopyp.explore.train import ...``).
"""
