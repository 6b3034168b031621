"""Turn a user's selection into labels.

A *selection* says which candidates are the target. It comes in four shapes, detected from
the file's content (:func:`milopyp.io.labels.read_selection`):

- ``explorer``: the explorer's saved ``selection.json``
  ``{"clusters": [ids], "points": [point_id, ...], "source": "milopyp explorer", ...}``;
- ``clusters``: a YAML/JSON mapping ``{clusters: [3, 5]}`` (optionally ``points: [...]``);
- ``seeds``: ``{seeds: <coordinate table>}`` or ``{seeds: [{tomogram, x, y, z}, ...]}``, a
  few clicks on the target; each seed chooses the cluster of its nearest candidate;
- ``coordinates``: a plain coordinate table used directly as labels (manual annotation).

For the first three, the labels are the rows of ``explore/points.csv`` (columns
``point_id, tomogram, x, y, z, score, cluster, ...``; x, y, z in voxels) that belong to a
selected cluster or are listed by ``point_id``: the union of both. Clusters chosen by seeds
are the exception (:func:`labels_near_seeds`): by default only the seeds' own candidates
and the members nearest to a seed in embedding space, in the seeds' tomograms, up to a cap
(:func:`default_seed_label_cap`), so that five clicks stay a few-shot selection.

A document may also carry ``negatives``: points that are *not* the target (the explorer's
clusters or points marked "not this", or ``negatives: {clusters: [..], points: [..],
seeds: ..}``, or ``negatives: table.csv``). Negative clusters and point ids resolve against
points.csv like positives; negative seeds and tables are used as given (coordinates).

Modules: :mod:`~milopyp.selection.spec` (documents), :mod:`~milopyp.selection.resolve`
(points.csv -> labels, caps, negatives), :mod:`~milopyp.selection.seeds` (seeds, few-shot),
:mod:`~milopyp.selection.campaign` (the tomograms and the files a selection names) and
:mod:`~milopyp.selection.importer` (:func:`run`, the whole of ``milopyp import-selection``).
"""

from milopyp.selection.importer import run
from milopyp.selection.resolve import (
    LABEL_COLUMNS,
    NEGATIVE_COLUMNS,
    cap_per_tomogram,
    check_known_tomograms,
    check_points_table,
    check_table_rows,
    cluster_counts,
    describe_cluster_counts,
    drop_negatives_near_labels,
    label_counts,
    label_table,
    labels_from_ids,
    negatives_table,
    restrict_tomograms,
)
from milopyp.selection.seeds import (
    SEED_LABEL_MODES,
    SEED_RADIUS_VOX,
    SeedChoice,
    SeedLabels,
    clusters_from_seeds,
    default_seed_label_cap,
    embedding_features,
    labels_near_seeds,
    umap_features,
)
from milopyp.selection.spec import (
    EXPLORER_SOURCE,
    FORMATS,
    KNOWN_KEYS,
    NEGATIVE_KEYS,
    SELECT_KEYS,
    NegativeSpec,
    SelectionSpec,
    negatives_from_value,
    nothing_selected,
    spec_from_document,
)

__all__ = [
    "EXPLORER_SOURCE", "FORMATS", "KNOWN_KEYS", "LABEL_COLUMNS", "NEGATIVE_COLUMNS",
    "NEGATIVE_KEYS", "SEED_LABEL_MODES", "SEED_RADIUS_VOX", "SELECT_KEYS", "NegativeSpec",
    "SeedChoice", "SeedLabels", "SelectionSpec", "cap_per_tomogram", "check_known_tomograms",
    "check_points_table", "check_table_rows", "cluster_counts", "clusters_from_seeds",
    "default_seed_label_cap", "describe_cluster_counts", "drop_negatives_near_labels",
    "embedding_features", "label_counts", "label_table", "labels_from_ids",
    "labels_near_seeds", "negatives_from_value", "negatives_table", "nothing_selected",
    "restrict_tomograms", "run", "spec_from_document", "umap_features",
]
