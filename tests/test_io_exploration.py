"""Tests of milopyp.io.exploration: the exploration files' one reader and one writer each."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from milopyp.errors import MilopypError
from milopyp.io import exploration as ex


def _patch_file(tmp_path, n=5, c=2, size=(6, 4), seed=0):
    rng = np.random.default_rng(seed)
    path = tmp_path / "patches" / "tomo_a.npz"
    path.parent.mkdir(exist_ok=True)
    xyz = rng.uniform(0, 30, (n, 3))
    ex.write_patches(path, rng.standard_normal((n, c, *size)), ["tilt", "slice"][-c:], xyz,
                     None, "tomo_a", 12.5)
    return path, xyz


def test_patches_roundtrip_and_embeddings_copy_the_candidates(tmp_path):
    path, xyz = _patch_file(tmp_path)
    f = ex.read_patches(path)
    assert f.patches.shape == (5, 2, 6, 4) and f.patches.dtype == np.float32
    assert f.channels == ["tilt", "slice"] and f.tomogram == "tomo_a"
    assert f.voxel_size_a == 12.5 and np.isnan(f.score).all()
    np.testing.assert_array_equal(f.xyz, xyz)
    out = tmp_path / "emb.npz"
    ex.write_embeddings(out, np.ones((5, 3)), f)
    e = ex.read_embeddings(out)
    assert e.embeddings.shape == (5, 3) and e.tomogram == "tomo_a" and e.voxel_size_a == 12.5
    np.testing.assert_array_equal(e.xyz, xyz)


def test_readers_name_the_file_and_the_command(tmp_path):
    with pytest.raises(MilopypError, match=r"nope\.npz: file not found; run `milopyp patches`"):
        ex.read_patches(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, patches=np.zeros((3, 4, 4)), xyz=np.zeros((3, 3)))
    with pytest.raises(MilopypError, match=r"expected patches \(N, C, H, W\)"):
        ex.read_patches(bad)
    np.savez(bad, patches=np.full((1, 1, 2, 2), np.nan), xyz=np.zeros((1, 3)))
    with pytest.raises(MilopypError, match="NaN or inf"):
        ex.read_patches(bad)
    np.savez(bad, embeddings=np.zeros((3, 2)), xyz=np.zeros((2, 3)))
    with pytest.raises(MilopypError, match="same N"):
        ex.read_embeddings(bad)
    np.savez(bad, embeddings=np.zeros((3, 2)))
    with pytest.raises(MilopypError, match=r"missing arrays \['xyz'\].*`milopyp embed`"):
        ex.read_embeddings(bad)


def test_points_roundtrip_keeps_the_column_order(tmp_path):
    cols = list(ex.POINT_COLUMNS)
    points = pd.DataFrame({c: np.arange(3) for c in reversed(cols)}).assign(tomogram="t_1")
    ex.write_points(tmp_path / "points.csv", points)
    back = ex.read_points(tmp_path / "points.csv")
    assert list(back.columns) == cols and back["tomogram"].tolist() == ["t_1"] * 3
    points.drop(columns="cluster").to_csv(tmp_path / "old.csv", index=False)
    with pytest.raises(MilopypError, match=r"no column\(s\) \['cluster'\]"):
        ex.read_points(tmp_path / "old.csv")


def test_model_file_roundtrip_and_an_older_file_without_stem(tmp_path):
    torch = pytest.importorskip("torch")
    from milopyp.explore.simsiam import build_simsiam

    torch.manual_seed(0)
    model = build_simsiam(in_channels=1, width=4, pred_dim=16).eval()
    ex.write_model(tmp_path / "m.pt", model, patch_size=[8, 8])
    back, state = ex.read_model(tmp_path / "m.pt")
    assert state["format"] == ex.MODEL_FORMAT and state["patch_size"] == [8, 8]
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(back.embed(x), model.embed(x))
    old = {k: v for k, v in state.items() if k != "stem"}  # written before `stem` existed
    torch.save(old, tmp_path / "old.pt")
    assert ex.read_model(tmp_path / "old.pt")[0].encoder.width == 4
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(MilopypError, match="not a readable milopyp exploration model"):
        ex.read_model(tmp_path / "bad.pt")
