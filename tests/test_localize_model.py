"""Localiser network, targets, training, tiled inference and peak picking (tiny sizes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from milopyp.errors import MilopypError
from milopyp.localize.augment import FlipRot, apply_flip_rot, flip_rot_index_map, undo_flip_rot
from milopyp.localize.checkpoint import TrainSettings
from milopyp.localize.data import TrainingData
from milopyp.localize.infer import predict_heatmap, prepare_for_inference, tile_geometry
from milopyp.localize.normalize import intensity_stats
from milopyp.localize.peaks import find_peaks
from milopyp.localize.targets import heatmap_target, sigma_from_radius
from milopyp.localize.train import load_localizer, train_localizer
from milopyp.localize.unet import Localizer, LocalizerConfig, receptive_radius

TINY = {"n_blocks": 2, "base_channels": 4, "fusion_channels": 4, "proj_dim": 4}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _randomise_bn(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics, so that eval-mode tests exercise them."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def _blobs(shape_zyx, n, seed, sigma=1.5, amp=3.0):
    """Noise volume with Gaussian blobs at n random positions; returns (volume, xyz)."""
    rng = np.random.default_rng(seed)
    vol = rng.normal(0.0, 1.0, shape_zyx).astype(np.float32)
    m = 5
    xyz = np.stack([rng.uniform(m, shape_zyx[2] - m, n), rng.uniform(m, shape_zyx[1] - m, n),
                    rng.uniform(2, shape_zyx[0] - 2, n)], axis=1).round()
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape_zyx], indexing="ij")
    for x, y, z in xyz:
        vol += amp * np.exp(-((xx - x) ** 2 + (yy - y) ** 2 + (zz - z) ** 2) / (2 * sigma**2))
    return vol.astype(np.float32), xyz


# --- network ---------------------------------------------------------------------------

@pytest.mark.parametrize("stride", [1, 2])
def test_network_shapes_for_sizes_not_multiple_of_the_pooling(stride):
    torch.manual_seed(0)
    model = Localizer(LocalizerConfig(n_blocks=3, base_channels=4, fusion_channels=6, proj_dim=5,
                                      stride_xy=stride))
    x = torch.randn(2, 1, 3, 21, 30)
    out = model(x)
    assert out.logits.shape == (2, 1, 3, 21, 30)
    dense = out.dense_features()
    assert dense.shape == (2, 5, 3, 21, 30)
    assert torch.allclose(dense.norm(dim=1), torch.ones(2, 3, 21, 30), atol=1e-5)
    assert model(x, with_features=False).proj is None
    with pytest.raises(MilopypError, match=r"\(B, 1, D, H, W\)"):
        model(torch.randn(1, 3, 21, 30))


@pytest.mark.parametrize("stride", [1, 2])
def test_voxel_features_equal_dense_features_after_undoing_the_augmentation(stride):
    torch.manual_seed(5)
    model = Localizer(LocalizerConfig(**{**TINY, "stride_xy": stride}))
    x = torch.randn(2, 1, 3, 22, 22)
    ops = [FlipRot(1, True, False), FlipRot(3, False, True)]
    xa = torch.stack([torch.from_numpy(apply_flip_rot(v.numpy(), op)) for v, op in zip(x, ops)])
    with torch.no_grad():
        out, outa = model(x), model(xa)
    idx = torch.randperm(2 * 3 * 22 * 22)[:300]
    dense = out.dense_features().movedim(1, -1).reshape(-1, 4)
    assert torch.allclose(out.voxel_features(idx), dense[idx], atol=1e-5)
    densea = torch.stack([undo_flip_rot(f, op) for f, op in zip(outa.dense_features(), ops)])
    maps = torch.stack([flip_rot_index_map(op, 22, 22) for op in ops])
    got = outa.voxel_features(idx, index_map=maps)
    assert torch.allclose(got, densea.movedim(1, -1).reshape(-1, 4)[idx], atol=1e-5)


def test_slices_are_processed_independently_before_the_fusion():
    """Only the 3×3×3 fusion mixes z: slice 0's output cannot depend on slice 3."""
    torch.manual_seed(1)
    model = _randomise_bn(Localizer(LocalizerConfig(**TINY)), 1)
    x = torch.randn(1, 1, 5, 16, 16)
    y = x.clone()
    y[:, :, 3] += 1.0
    with torch.no_grad():
        a, b = model(x).logits, model(y).logits
    assert torch.equal(a[:, :, :2], b[:, :, :2])
    assert not torch.allclose(a[:, :, 2:], b[:, :, 2:])


def test_receptive_radius_bounds_the_dependence():
    cfg = LocalizerConfig(**TINY)
    torch.manual_seed(2)
    model = _randomise_bn(Localizer(cfg), 2)
    x = torch.randn(1, 1, 5, 64, 64, requires_grad=True)
    model(x).logits[0, 0, 2, 32, 32].backward()
    nz = torch.nonzero(x.grad[0, 0].abs() > 0)
    r_z, r_xy = receptive_radius(cfg)
    assert int((nz[:, 0] - 2).abs().max()) <= r_z
    assert int((nz[:, 1:] - 32).abs().max()) <= r_xy
    assert int((nz[:, 1:] - 32).abs().max()) >= r_xy // 2  # the bound is not absurdly loose


def test_bn_folding_keeps_outputs():
    torch.manual_seed(3)
    model = _randomise_bn(Localizer(LocalizerConfig(**TINY)), 3)
    fast = prepare_for_inference(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    x = torch.randn(2, 1, 3, 20, 28)
    with torch.no_grad():
        assert torch.allclose(model(x).logits, fast(x).logits, atol=1e-5)


@pytest.mark.parametrize("op", [FlipRot(1, True, False), FlipRot(2, False, True),
                                FlipRot(3, True, True), FlipRot(0, False, False)])
def test_augmentation_is_undone_exactly(op):
    a = np.arange(2 * 3 * 6 * 6, dtype=np.float32).reshape(2, 3, 6, 6)
    b = torch.from_numpy(apply_flip_rot(a, op))
    assert np.array_equal(undo_flip_rot(b, op).numpy(), a)


# --- targets ---------------------------------------------------------------------------

def test_gaussian_target_centre_soft_and_unlabelled():
    shape = (9, 20, 31)
    xyz = np.array([[10.2, 5.0, 4.0], [25.0, 14.0, 3.6]])
    y = heatmap_target(xyz, shape, radius_vox=6.0)
    assert y.dtype == np.float32 and y.shape == shape
    assert y[4, 5, 10] == 1.0 and y[4, 14, 25] == 1.0  # rounded centres, [z, y, x]
    assert np.count_nonzero(y == 1.0) == 2
    sigma = sigma_from_radius(6.0)
    assert sigma == 2.0
    assert np.isclose(y[4, 5, 11], np.exp(-1 / (2 * sigma**2)))
    assert np.isclose(y[4, 7, 10], np.exp(-4 / (2 * sigma**2)))
    soft = (y > 0) & (y < 1)
    assert soft.any() and np.all(y[~soft & (y != 1)] == -1.0)
    assert y[4, 5, 10 + 7] == -1.0  # beyond 3σ = r
    # a crop's target is the same box cut from the whole target
    crop = heatmap_target(xyz, (5, 8, 12), radius_vox=6.0, origin_zyx=(2, 3, 7))
    assert np.array_equal(crop, y[2:7, 3:11, 7:19])


def test_fiber_target_is_a_radius_3_tube():
    y = heatmap_target(np.array([[10, 10, 5]]), (11, 21, 21), radius_vox=8, shape="fiber")
    assert y[5, 10, 13] == 1.0 and y[5, 10, 14] == -1.0 and y[8, 10, 10] == 1.0
    assert set(np.unique(y)) == {-1.0, 1.0}
    with pytest.raises(MilopypError, match="shape"):
        heatmap_target(np.zeros((1, 3)), (3, 3, 3), radius_vox=2, shape="tube")


# --- training --------------------------------------------------------------------------

def _train(vol, xyz, **kw):
    args = dict(particle_radius_vox=4.0, epochs=2, iterations_per_epoch=6, crop=(3, 32, 32),
                batch_size=2, expected_particles=20, seed=5, device="cpu", **TINY)
    args.update(kw)
    return train_localizer([vol], [xyz], **args)


def test_training_passes_the_clamped_step_choice_to_the_pu_loss(monkeypatch):
    import milopyp.localize.losses as losses_module

    seen = []
    real = losses_module.pu_focal_loss

    def recording(*args, **kwargs):
        seen.append((kwargs.get("positive_on_clamp"), kwargs.get("negative_loss")))
        return real(*args, **kwargs)

    monkeypatch.setattr(losses_module, "pu_focal_loss", recording)
    vol, xyz = _blobs((12, 48, 56), 20, seed=12)
    kw = {"epochs": 1, "iterations_per_epoch": 2}
    _train(vol, xyz[:6], **kw)
    assert seen == [(False, "voxels")] * 2  # Kiryo's step by default
    seen.clear()
    _train(vol, xyz[:6], **kw, pu_positive_on_clamp=True, negative_loss="peaks")
    assert seen == [(True, "peaks")] * 2


def test_gradients_are_clipped_to_a_multiple_of_the_last_epochs_median(monkeypatch):
    import milopyp.localize.train as train_module

    vol, xyz = _blobs((12, 48, 56), 20, seed=12)
    kw = {"epochs": 3, "iterations_per_epoch": 4, "lr": 1e-2, "lr_step_epochs": 10}
    free = _train(vol, xyz[:6], **kw)
    assert free.history[0]["clipped"] == 0  # no epoch before the first to compare with
    assert all(h["grad_norm"] > 0 for h in free.history)
    assert all(h["clipped"] <= 1 for h in free.history)  # 5 x the median: rare
    monkeypatch.setattr(train_module, "GRAD_CLIP_FACTOR", 1e-3)
    tight = _train(vol, xyz[:6], **kw)
    assert [h["clipped"] for h in tight.history] == [0, 4, 4]
    assert tight.history[0]["total"] == free.history[0]["total"]
    assert tight.history[2]["total"] != free.history[2]["total"]
    unclipped = _train(vol, xyz[:6], grad_clip=False, **kw)  # the same factor, switched off
    assert [h["clipped"] for h in unclipped.history] == [0, 0, 0]
    assert unclipped.history[0]["total"] == tight.history[0]["total"]
    assert unclipped.history[2]["total"] != tight.history[2]["total"]
    fiber = _train(vol, xyz[:6], shape="fiber", **kw)  # fibres: not clipped by default
    assert [h["clipped"] for h in fiber.history] == [0, 0, 0]


def test_tiny_training_lowers_the_loss():
    vol, xyz = _blobs((12, 48, 56), 20, seed=11)
    model = _train(vol, xyz[:6], epochs=4, iterations_per_epoch=10, lr_step_epochs=10, lr=1e-2)
    hist = [h["total"] for h in model.history]
    assert hist[-1] < 0.8 * hist[0], hist
    assert not model.training


def test_a_crop_larger_than_the_tomogram_is_reduced_to_it(caplog):
    vol, xyz = _blobs((10, 40, 44), 4, seed=14)
    with caplog.at_level("INFO", logger="milopyp.localize.train"):
        model = _train(vol, xyz, crop=(16, 64, 64), epochs=1, iterations_per_epoch=2)
    assert "reduced to (10, 40, 44)" in caplog.text
    assert len(model.history) == 1


def test_training_is_deterministic_and_seeded():
    vol, xyz = _blobs((10, 40, 44), 10, seed=12)
    a = _train(vol, xyz[:4], epochs=1, iterations_per_epoch=3)
    b = _train(vol, xyz[:4], epochs=1, iterations_per_epoch=3)
    c = _train(vol, xyz[:4], epochs=1, iterations_per_epoch=3, seed=6)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert not all(torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())


def test_resume_continues_exactly(tmp_path):
    vol, xyz = _blobs((10, 40, 44), 10, seed=13)
    straight = _train(vol, xyz[:4], epochs=2, iterations_per_epoch=3, lr_step_epochs=1)
    ckpt = tmp_path / "model.pt"
    _train(vol, xyz[:4], epochs=1, iterations_per_epoch=3, lr_step_epochs=1,
           checkpoint_path=ckpt)
    assert ckpt.exists() and not list(tmp_path.glob(".*tmp*"))
    resumed = _train(vol, xyz[:4], epochs=2, iterations_per_epoch=3, lr_step_epochs=1,
                     checkpoint_path=ckpt)
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert resumed.history[1]["lr"] == pytest.approx(1e-4)
    state = torch.load(ckpt, weights_only=True)
    assert state["epoch"] == 2 and state["network"]["base_channels"] == 4
    loaded = load_localizer(ckpt)  # the last epoch's, before its BatchNorm re-estimation
    for k, v in resumed.state_dict().items():
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(v, loaded.state_dict()[k]), k


def test_batchnorm_statistics_are_re_estimated_after_training():
    from milopyp.localize import train as train_module

    vol, xyz = _blobs((10, 40, 44), 10, seed=13)
    model = _train(vol, xyz[:4], epochs=2, iterations_per_epoch=3)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not model.training
    # reset and averaged over the batches (never more than the 6 steps), not the 6 steps'
    # exponential average; the momentum is restored for any later training
    assert all(int(m.num_batches_tracked) == 6 for m in norms)
    assert all(m.momentum == 0.1 for m in norms)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    data = TrainingData(tomograms=[vol], labels=[xyz[:4]], stats=[intensity_stats(vol)])
    settings = TrainSettings(particle_radius_vox=3.0, crop_zyx=(8, 32, 32), seed=0)
    train_module.reestimate_batchnorm(model, data, settings, torch.device("cpu"), 5)
    for k, v in model.state_dict().items():
        if k.endswith(("running_mean", "running_var")):
            assert not torch.equal(v, weights[k]), k  # other batches, other statistics
        elif not k.endswith("num_batches_tracked"):
            assert torch.equal(v, weights[k]), k  # no weight changes
    again = {k: v.clone() for k, v in model.state_dict().items()}
    train_module.reestimate_batchnorm(model, data, settings, torch.device("cpu"), 5)
    for k, v in model.state_dict().items():  # from the seed alone: the same again
        assert torch.equal(v, again[k]), k
    assert not model.training


def test_a_checkpoint_of_other_inputs_is_not_resumed(tmp_path, caplog):
    """A checkpoint belongs to its labels, tomograms, network and settings: with any of them
    changed, training starts afresh (and says why) instead of resuming or failing."""
    vol, xyz = _blobs((10, 40, 44), 10, seed=13)
    kw = {"epochs": 2, "iterations_per_epoch": 3, "lr_step_epochs": 1}
    ckpt = tmp_path / "model.pt"
    old = _train(vol, xyz[:4], **kw, checkpoint_path=ckpt)
    fresh = _train(vol, xyz[4:8], **kw)  # other labels, no checkpoint
    with caplog.at_level("INFO", logger="milopyp.localize.train"):
        new = _train(vol, xyz[4:8], **kw, checkpoint_path=ckpt)
    assert "other tomograms, labels or negatives" in caplog.text
    assert "resuming from" not in caplog.text
    assert [h["epoch"] for h in new.history] == [1, 2]
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, new.state_dict()[k]), k
    assert any(not torch.equal(v, old.state_dict()[k]) for k, v in new.state_dict().items())
    caplog.clear()
    with caplog.at_level("INFO", logger="milopyp.localize.train"):
        _train(vol * 2.0 + 1.0, xyz[4:8], **kw, checkpoint_path=ckpt)  # other tomogram
        assert "other tomograms" in caplog.text
        caplog.clear()
        _train(vol * 2.0 + 1.0, xyz[4:8], **kw, checkpoint_path=ckpt, base_channels=8)
        assert "another network (base_channels)" in caplog.text
        caplog.clear()
        _train(vol * 2.0 + 1.0, xyz[4:8], **{**kw, "lr": 5e-3}, checkpoint_path=ckpt,
               base_channels=8)
        assert "other settings (lr)" in caplog.text
    ckpt.write_bytes(b"not a checkpoint")
    caplog.clear()
    with caplog.at_level("INFO", logger="milopyp.localize.train"):
        _train(vol, xyz[4:8], **kw, checkpoint_path=ckpt)
    assert "cannot read the localiser checkpoint" in caplog.text and "afresh" in caplog.text


def test_training_rejects_bad_input():
    vol, xyz = _blobs((10, 40, 44), 4, seed=14)
    with pytest.raises(MilopypError, match="smaller than the training crop"):
        _train(vol[:2], xyz * [1, 1, 0])
    with pytest.raises(MilopypError, match="outside the tomogram"):
        _train(vol, xyz + [0, 0, 50])
    with pytest.raises(MilopypError, match="no labelled particles"):
        _train(vol, np.zeros((0, 3)))


# --- inference and peaks -----------------------------------------------------------------

@pytest.mark.parametrize("stride", [1, 2])
def test_tiled_inference_equals_whole_volume(tmp_path, stride):
    cfg = LocalizerConfig(**{**TINY, "stride_xy": stride})
    torch.manual_seed(4)
    model = _randomise_bn(Localizer(cfg), 4)
    shape = (7, 75, 90)  # non-cubic, not multiples of the tile or the pooling
    rng = np.random.default_rng(4)
    vol = rng.normal(size=shape).astype(np.float32)
    whole = predict_heatmap(model, vol, device="cpu", tile_zyx=shape)
    path = tmp_path / "vol.npy"
    np.save(path, vol)
    mm = np.load(path, mmap_mode="r")
    out = np.full(shape, np.nan, dtype=np.float32)
    tiled = predict_heatmap(model, mm, device="cpu", tile_zyx=(3, 18, 26), out=out)
    assert tiled is out and not np.isnan(out).any()
    assert np.allclose(tiled, whole, atol=1e-5, rtol=0)
    # automatic tiles under a tiny memory budget: y–x split and one-slice z-slabs
    core, _ = tile_geometry(model, shape, memory_mb=0.5)
    assert core[0] == 1 and core[1] < shape[1] and core[2] < shape[2], core
    auto = predict_heatmap(model, vol, device="cpu", memory_mb=0.5)
    assert np.allclose(auto, whole, atol=1e-5, rtol=0)
    # and the whole-volume result is the network on the normalised volume
    x = torch.from_numpy((vol - vol.mean()) / vol.std())[None, None]
    with torch.no_grad():
        direct = torch.sigmoid(model(x).logits)[0, 0].numpy()
    assert np.allclose(whole, direct, atol=1e-4)


def test_thin_slabs_run_the_unet_once_per_slice_and_equal_the_whole_volume(monkeypatch):
    """Slabs thinner than the fusion's z-reach: the UNet features are computed slab by slab
    as the fusion reads them and dropped after, each slice once, and the heat map is the
    whole volume's."""
    cfg = LocalizerConfig(**{**TINY, "z_dilations": (1, 2, 4)})
    torch.manual_seed(5)
    model = _randomise_bn(Localizer(cfg), 5)
    reach = receptive_radius(cfg)[0]
    assert reach > 2
    vol = np.random.default_rng(5).normal(size=(2 * reach + 7, 40, 44)).astype(np.float32)
    whole = predict_heatmap(model, vol, device="cpu", tile_zyx=vol.shape)
    slices = []
    unet = Localizer.slice_features
    monkeypatch.setattr(Localizer, "slice_features",
                        lambda self, x: slices.append(len(x)) or unet(self, x))
    thin = predict_heatmap(model, vol, device="cpu", tile_zyx=(2, 40, 44))
    assert slices == [2] * (len(vol) // 2) + [1]
    assert np.allclose(thin, whole, atol=1e-5, rtol=0)


def test_automatic_tiles_of_large_tomograms_keep_slabs_thicker_than_the_z_halo():
    """The default network at 512² and 1024² planes: slabs of several slices, at less than
    half the computation of one-slice slabs (which ran the fusion on 17 slices per slice
    kept: 260 s instead of 50 s at 160 × 512 × 512 unbinned); a budget too small for any
    tile names one that is enough."""
    from milopyp.localize.infer import _sweep_cost

    model = Localizer(LocalizerConfig(z_dilations=(1, 2, 4)))
    for shape in [(160, 512, 512), (300, 1024, 1024)]:
        core, halo = tile_geometry(model, shape)
        assert core[0] >= halo[0], (shape, core)
        one_slice = tile_geometry(model, shape, tile_zyx=(1, *core[1:]))[0]
        assert _sweep_cost(shape, core, halo) < _sweep_cost(shape, one_slice, halo) / 2
    with pytest.raises(MilopypError, match="give at least") as err:
        tile_geometry(model, (160, 512, 512), memory_mb=5)
    least = int(str(err.value).rsplit(" ", 1)[1])
    assert tile_geometry(model, (160, 512, 512), memory_mb=least)[0][0] >= 1
    # a tomogram narrower than one pooling window in y and x is one tile
    assert tile_geometry(model, (5, 10, 12))[0] == (5, 16, 16)
    with pytest.raises(MilopypError, match="give at least 1"):
        tile_geometry(model, (5, 10, 12), memory_mb=0.001)


def _tiny_model_file(tmp_path, *options):
    """A 10 Å blob tomogram (12 blobs), a model file trained on 6 of them by `milopyp
    train-localize` in two steps (unbinned, 4 channels; ``options`` added) and their paths:
    ``(volume, tomogram path, model path)``."""
    import pandas as pd

    from milopyp import cli
    from milopyp.io.mrc import write_tomogram

    vol, xyz = _blobs((12, 48, 56), 12, seed=33)
    mrc = tmp_path / "TS_01.mrc"
    write_tomogram(mrc, vol, 10.0)
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"tomogram": "TS_01", "x": xyz[:6, 0], "y": xyz[:6, 1],
                  "z": xyz[:6, 2]}).to_csv(labels, index=False)
    model = tmp_path / "model.pt"
    assert cli.main(["train-localize", "--labels", str(labels), "--epochs", "1",
                     "--iterations-per-epoch", "2", "--crop-xy", "32", "--crop-z", "4",
                     "--bin", "1", "--base-channels", "4", "--particle-diameter", "60",
                     *options, "--device", "cpu", "--tomograms", str(mrc),
                     "-o", str(model)]) == 0
    return vol, mrc, model


def test_profile_check_judges_a_finer_tomogram_at_its_scale_and_not_a_coarser_one(
        tmp_path, monkeypatch):
    """At another voxel size the labels' profile reference (taken at the training voxel
    size) judges a finer tomogram's peaks with the particle radius in that tomogram's voxels,
    and no peak of a coarser tomogram (docs/accuracy.md, "Stop 38: a model at another
    voxel size")."""

    from milopyp import cli
    from milopyp.io.localizer import read_localizer, write_localizer
    from milopyp.io.mrc import write_tomogram
    from milopyp.localize import stage
    from milopyp.localize.scale import bin_volume, resample_volume

    vol, _, model = _tiny_model_file(tmp_path)
    state = read_localizer(model, "cpu")
    state["calibration"]["profile"] = {"radius_vox": 3.0, "min_score": 0.0}  # as if 20 labels
    write_localizer(model, {k: v for k, v in state.items() if k not in ("format", "version")})
    judged = []
    monkeypatch.setattr(stage, "_weigh", lambda name, reference, volume, picks, floor=0.0:
                        judged.append((name, reference["radius_vox"])) or picks)
    for name, volume, voxel_a in (("same", vol, 10.0), ("finer", resample_volume(vol, 0.8), 8.0),
                                  ("coarser", bin_volume(vol, 2), 20.0)):
        path = tmp_path / f"{name}.mrc"
        write_tomogram(path, volume, voxel_a)
        assert cli.main(["localize", "--model", str(model), "--tomogram", str(path), "-o",
                         str(tmp_path / f"{name}.csv"), "--device", "cpu"]) == 0
    assert judged == [("same", 3.0), ("finer", 3.75)]


def test_resampling_to_a_model_grid_of_any_factor_keeps_positions_and_binning():
    """A tomogram at another voxel size than its model's is read on a grid of a factor that
    is not an integer: integer factors still give the block means, a particle lands where
    ``to_binned`` puts it on a coarser or finer grid, and the heat map comes back on the
    tomogram's grid."""
    from milopyp.localize.scale import (
        bin_volume,
        resample_volume,
        resampled_shape,
        to_binned,
        upsample,
    )

    rng = np.random.default_rng(3)
    vol = rng.normal(size=(21, 50, 61)).astype(np.float32)
    assert np.allclose(resample_volume(vol, 2.0), bin_volume(vol, 2), atol=1e-6)
    assert np.allclose(resample_volume(vol, 3), bin_volume(vol, 3), atol=1e-6)
    assert resampled_shape((21, 50, 61), 1.5) == (14, 33, 40)
    assert resampled_shape((21, 50, 61), 0.75) == (28, 66, 81)
    # a Gaussian blob (sigma 3 voxels) off the grid's centre: its centroid moves as a
    # coordinate does, within a tenth of a voxel, on a coarser and on a finer grid
    z, y, x = np.indices((40, 64, 72)).astype(np.float64)
    centre = np.array([41.3, 27.6, 19.2])  # x, y, z
    blob = np.exp(-((x - centre[0])**2 + (y - centre[1])**2 + (z - centre[2])**2) / 18.0)
    for factor in (1.5, 2.0, 0.75):
        out = resample_volume(blob.astype(np.float32), factor).astype(np.float64)
        k = np.indices(out.shape).astype(np.float64)
        found = [(k[axis] * out).sum() / out.sum() for axis in (2, 1, 0)]
        assert np.allclose(found, to_binned(centre[None], factor)[0], atol=0.1), factor
        # and back on the original grid (what predict_heatmap does with the heat map)
        back = upsample(out.astype(np.float32), blob.shape, factor).astype(np.float64)
        found = [(i * back).sum() / back.sum() for i in (x, y, z)]
        assert np.allclose(found, centre, atol=0.15), factor
    # predict_heatmap with a factor: the network on the resampled volume, upsampled back
    model = _randomise_bn(Localizer(LocalizerConfig(**TINY)), 4)
    heat = predict_heatmap(model, vol, device="cpu", bin_factor=1.25)
    grid = resample_volume(vol, 1.25)
    x_in = torch.from_numpy((grid - grid.mean()) / grid.std())[None, None]
    with torch.no_grad():
        direct = torch.sigmoid(model(x_in).logits)[0, 0].numpy()
    assert heat.shape == vol.shape
    assert np.allclose(heat, upsample(direct, vol.shape, 1.25), atol=1e-4)
    with pytest.raises(MilopypError, match="bin_factor"):
        predict_heatmap(model, vol, device="cpu", bin_factor=0.0)


@pytest.mark.parametrize("z_dilations,bin_factor", [((1, 2), 1), ((1, 2, 4), 2)])
def test_tiled_inference_with_z_context_and_binning_equals_whole_volume(z_dilations,
                                                                        bin_factor):
    from milopyp.localize.scale import bin_volume, upsample

    cfg = LocalizerConfig(**TINY, z_dilations=z_dilations, bin_factor=bin_factor)
    torch.manual_seed(5)
    model = _randomise_bn(Localizer(cfg), 5)
    shape = (31, 75, 90)
    vol = np.random.default_rng(5).normal(size=shape).astype(np.float32)
    whole = predict_heatmap(model, vol, device="cpu", tile_zyx=shape)
    assert whole.shape == shape
    tiled = predict_heatmap(model, vol, device="cpu", tile_zyx=(2, 18, 26))
    assert np.allclose(tiled, whole, atol=1e-5, rtol=0)
    # a binned model is the network on the binned, normalised volume, upsampled
    binned = bin_volume(vol, bin_factor)
    x = torch.from_numpy((binned - binned.mean()) / binned.std())[None, None]
    with torch.no_grad():
        direct = model(x).logits[0, 0]
        assert np.allclose(whole, upsample(torch.sigmoid(direct).numpy(), shape, bin_factor),
                           atol=1e-4)
        # the z-context reaches z_reach = sum(dilations) slices beyond the fusion's one
        x[0, 0, 0] += 5.0
        changed = (model(x).logits[0, 0] - direct).abs().amax(dim=(1, 2)) > 1e-6
    assert cfg.z_reach == sum(z_dilations) + 1
    assert changed[0] and changed[cfg.z_reach] and not changed[cfg.z_reach + 1:].any()


def test_peaks_respect_kernel_and_threshold():
    h = np.zeros((7, 20, 30), dtype=np.float32)
    h[3, 10, 10] = 0.9
    h[3, 10, 12] = 0.8  # 2 voxels from the first
    h[3, 10, 20] = 0.2  # below threshold
    h[0, 0, 0] = 0.5  # at the border
    k5 = find_peaks(h, kernel_vox=5, threshold=0.25)
    assert list(zip(k5.x, k5.y, k5.z)) == [(10, 10, 3), (0, 0, 0)]
    k3 = find_peaks(h, kernel_vox=3, threshold=0.25, tomogram="t1")
    assert list(k3.columns) == ["tomogram", "x", "y", "z", "score"]
    assert list(k3.x) == [10, 12, 0] and np.all(np.diff(k3.score) <= 0)
    assert len(find_peaks(h, kernel_vox=3, threshold=0.1)) == 4
    assert len(find_peaks(h, kernel_vox=3, threshold=0.1, max_peaks=2)) == 2
    anis = find_peaks(h, kernel_vox=(1, 1, 5), threshold=0.25)
    assert list(anis.x) == [10, 0]
    with pytest.raises(MilopypError, match="odd"):
        find_peaks(h, kernel_vox=4)


def test_separable_box_max_equals_3d_max_pool():
    from milopyp.localize.peaks import _box_max

    t = torch.rand((9, 12, 17), generator=torch.Generator().manual_seed(3))
    for k in [(3, 3, 3), (5, 1, 7), (1, 3, 1)]:
        want = torch.nn.functional.max_pool3d(t[None, None], k, stride=1,
                                              padding=tuple(v // 2 for v in k))[0, 0]
        assert torch.equal(_box_max(t, k), want)


def test_chunked_peaks_equal_unchunked():
    rng = np.random.default_rng(15)
    from scipy.ndimage import gaussian_filter

    h = gaussian_filter(rng.random((23, 30, 41)), 1.2).astype(np.float32)
    h = (h - h.min()) / (h.max() - h.min())
    whole = find_peaks(h, kernel_vox=5, threshold=0.3, chunk_z=1000)
    for chunk in (1, 2, 5):
        part = find_peaks(h, kernel_vox=5, threshold=0.3, chunk_z=chunk)
        assert part.equals(whole)
    assert len(whole) > 3


def test_end_to_end_tiny_localisation():
    """Train on a few labels, infer, pick: the strongest picks land on blobs."""
    vol, xyz = _blobs((12, 48, 56), 16, seed=16, sigma=1.5, amp=4.0)
    model = _train(vol, xyz[:5], epochs=3, iterations_per_epoch=15, lr_step_epochs=10,
                   base_channels=8, fusion_channels=8, z_dilations=())
    heat = predict_heatmap(model, vol, device="cpu")
    picks = find_peaks(heat, kernel_vox=5, threshold=0.0, max_peaks=8)
    d = np.sqrt(((picks[["x", "y", "z"]].to_numpy()[:, None] - xyz[None]) ** 2).sum(-1)).min(1)
    assert np.mean(d <= 2.5) >= 0.75, d


# --- calibration and class-prior estimation --------------------------------------------

def _heat_bumps(shape_zyx, xyz, heights, sigma=1.2):
    """A heat map [z, y, x] with a Gaussian bump of ``height`` at each x, y, z."""
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape_zyx], indexing="ij")
    heat = np.zeros(shape_zyx, np.float32)
    for (x, y, z), h in zip(xyz, heights):
        bump = h * np.exp(-((xx - x) ** 2 + (yy - y) ** 2 + (zz - z) ** 2) / (2 * sigma**2))
        np.maximum(heat, bump.astype(np.float32), out=heat)
    return heat


def test_count_particles_counts_bumps_above_threshold_once_and_skips_labels():
    from milopyp.localize.calibrate import auto_threshold, label_peak_scores
    from milopyp.localize.prior import count_particles

    xyz = np.array([[10, 10, 8], [30, 12, 8], [12, 34, 8], [34, 34, 8], [22, 22, 4]], float)
    heights = [0.5, 0.4, 0.3, 0.05, 0.45]  # the fourth is below any sensible threshold
    heat = _heat_bumps((16, 44, 44), xyz, heights)
    assert count_particles(heat, 0.1, radius_vox=4) == 4
    assert count_particles(heat, 0.42, radius_vox=4) == 2
    # one particle with two maxima 3 voxels apart counts once within its radius ...
    double = np.maximum(heat, _heat_bumps(heat.shape, [[13, 10, 8]], [0.48]))
    assert count_particles(double, 0.1, radius_vox=4) == 4
    # ... and twice when the radius says they are two particles
    assert count_particles(double, 0.1, radius_vox=2) == 5
    # labelled particles are not counted again
    assert count_particles(heat, 0.1, radius_vox=4, exclude_xyz=xyz[:2] + 1) == 2
    assert count_particles(np.zeros((8, 16, 16), np.float32), 0.1, radius_vox=3) == 0
    # the automatic threshold is 0.9 x the median label peak
    scores = label_peak_scores(heat, xyz[[0, 1, 4]], radius_vox=2)
    np.testing.assert_allclose(scores, [0.5, 0.4, 0.45], rtol=1e-5)
    assert auto_threshold(scores) == pytest.approx(0.9 * 0.45)
    assert np.isnan(auto_threshold(np.array([])))


def test_hidden_particles_counts_unlabelled_peaks_above_the_labels_level():
    """The prior's count of unlabelled particles: the peaks above PRIOR_COUNT_FRACTION x the
    labels' median peak, each particle once, none at a label and no background bump."""
    from milopyp.localize.prior import PRIOR_COUNT_FRACTION, hidden_particles

    rng = np.random.default_rng(0)
    grid = np.array([[x, y, z] for x in range(8, 96, 10) for y in range(8, 96, 10)
                     for z in (8, 20)], float)
    order = rng.permutation(len(grid))
    labelled, hidden, background = grid[order[:16]], grid[order[16:36]], grid[order[36:]]
    heights = np.concatenate([rng.uniform(0.8, 1.2, 16), rng.uniform(0.6, 1.2, 20),
                              np.minimum(rng.exponential(0.07, len(background)), 0.3)])
    heat = _heat_bumps((28, 104, 104), np.concatenate([labelled, hidden, background]),
                       heights, sigma=1.5)
    found, threshold = hidden_particles(heat, labelled, radius_vox=4)
    assert threshold == pytest.approx(PRIOR_COUNT_FRACTION * np.median(heights[:16]), rel=1e-4)
    assert 0 < found == np.sum(heights[16:36] > threshold) < 20


def test_estimated_prior_rests_on_its_lower_bound_when_no_particle_is_found(monkeypatch):
    """With no particle away from the labels, the estimate is PRIOR_UPDATE_BOUNDS[0] x the
    labels per voxel, or min_hidden_per_label x the labels; particles found above the bound
    count as found, and the count per label is returned beside the prior."""
    from milopyp.localize import infer
    from milopyp.localize.prior import PRIOR_UPDATE_BOUNDS, estimate_class_prior

    labelled = np.array([[x, y, 8.0] for x in (10, 30, 50) for y in (10, 30)])
    heat = _heat_bumps((16, 60, 60), labelled, np.ones(len(labelled)))
    monkeypatch.setattr(infer, "predict_heatmap", lambda *a, **k: heat)
    vol = np.zeros(heat.shape, np.float32)

    def prior(**kw):
        return estimate_class_prior(None, [vol], [labelled], [(0.0, 1.0)], 4.0, "cpu", **kw)

    n = len(labelled) / heat.size
    assert prior() == (pytest.approx(PRIOR_UPDATE_BOUNDS[0] * n), 0.0)
    assert prior(min_hidden_per_label=1.0) == (pytest.approx(n), 0.0)
    hidden = np.array([[x, 50.0, 8.0] for x in (10, 20, 30, 40, 50)])  # 5 > 0.5 x 6 labels
    heat[:] = np.maximum(heat, _heat_bumps(heat.shape, hidden, np.ones(len(hidden))))
    assert prior() == (pytest.approx(len(hidden) / heat.size), pytest.approx(5 / 6))
    assert prior(min_hidden_per_label=1.0)[0] == pytest.approx(n)


def test_seed_lower_bound_rises_to_one_per_label_but_not_above_the_first_count():
    from milopyp.localize.prior import PRIOR_UPDATE_BOUNDS, SEED_HIDDEN_PER_LABEL, seed_lower_bound

    assert seed_lower_bound(0.0) == PRIOR_UPDATE_BOUNDS[0]  # nothing hidden: the default
    assert seed_lower_bound(0.8) == pytest.approx(0.8)
    assert seed_lower_bound(3.0) == SEED_HIDDEN_PER_LABEL == 1.0


def test_labels_from_seeds_raise_the_prior_bound_after_the_first_estimate(
        tmp_path, caplog, monkeypatch):
    """A seed selection's training: the first re-estimation as by default, the later ones
    bounded below by seed_lower_bound(first count) x the labels; resumed bit-identical.
    The model's counts are fixed here: 6 hidden particles for the 8 labels, then 1."""
    import milopyp.localize.prior as prior_module

    updates = []  # the counts the next re-estimations find, in order

    def hidden(heat, xyz, radius_vox):
        return updates.pop(0), 0.1

    monkeypatch.setattr(prior_module, "hidden_particles", hidden)
    vol, xyz = _blobs((12, 48, 56), 24, seed=21)
    kw = {"epochs": 5, "iterations_per_epoch": 4, "lr": 1e-2, "lr_step_epochs": 10,
          "expected_particles": None}
    updates[:] = [6, 1]  # after epochs 2 and 4
    plain = _train(vol, xyz[:8], **kw)
    updates[:] = [6, 1]
    with caplog.at_level("INFO", logger="milopyp.localize.train"):
        seeds = _train(vol, xyz[:8], **kw, labels_from_seeds=True)
    assert [h.get("hidden_found") for h in seeds.history] == [None, 0.75, None, 0.125, None]
    # epoch 2: 6 found (above half the labels) in both; epoch 4: 1 found, bounded below by
    # half the labels by default, by the first count (6 < 8 labels) for seed labels
    assert plain.history[1]["prior"] == seeds.history[1]["prior"] == pytest.approx(6 / vol.size)
    assert plain.history[3]["prior"] == pytest.approx(4 / vol.size)
    assert seeds.history[3]["prior"] == pytest.approx(6 / vol.size)
    assert "labels from seeds: at least 0.75 unlabelled particles per label" in caplog.text
    ckpt = tmp_path / "model.pt"  # interrupted after epoch 3, between the two updates
    updates[:] = [6]
    _train(vol, xyz[:8], **{**kw, "epochs": 3}, labels_from_seeds=True, checkpoint_path=ckpt)
    updates[:] = [1]  # the first count comes from the checkpoint's history
    resumed = _train(vol, xyz[:8], **kw, labels_from_seeds=True, checkpoint_path=ckpt)
    assert updates == []
    assert [h["prior"] for h in resumed.history] == [h["prior"] for h in seeds.history]
    for k, v in seeds.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_split_threshold_separates_particles_from_look_alikes_within_bounds():
    from milopyp.localize import calibrate
    from milopyp.localize.calibrate import split_threshold

    rng = np.random.default_rng(3)
    labels = rng.uniform(0.5, 0.7, 40)  # median ~0.6: the model raised its labels
    background = rng.uniform(0.0, 0.05, 2000)  # below the floor (0.1 x median)
    look_alikes = rng.uniform(0.08, 0.2, 150)
    unseen = rng.uniform(0.35, 0.55, 60)  # unlabelled particles score below the labels
    t, rule = split_threshold(np.median(labels), np.r_[background, look_alikes, unseen, labels])
    assert "mixture of" in rule, rule
    assert np.all(unseen > t) and np.mean(look_alikes > t) < 0.05, t
    assert t < 0.9 * np.median(labels)  # the label rule would drop most unseen particles
    # a clean map (nothing but particles above the floor) stays within the bounds
    t, _ = split_threshold(np.median(labels), np.r_[background, rng.uniform(0.55, 0.7, 100)])
    assert (calibrate.MIN_THRESHOLD_FRACTION * np.median(labels) <= t
            <= calibrate.THRESHOLD_FRACTION * np.median(labels))
    # too few peaks to split: the label rule
    t, rule = split_threshold(np.median(labels), labels[:5])
    assert t == pytest.approx(0.9 * np.median(labels)) and "only 5 peaks" in rule
    assert np.isnan(split_threshold(float("nan"), background)[0])


def _blob_heatmap(shape_zyx, xyz, heights, rng, *, floor=0.0, noise=0.005):
    """A globular heat map: Gaussian bumps (sigma 1.5 voxels) of ``heights`` at ``xyz``
    (x, y, z voxels) on ``floor`` plus uniform noise up to ``noise``."""
    background = floor + noise * rng.random(shape_zyx)
    return np.maximum(background, _heat_bumps(shape_zyx, xyz, heights, sigma=1.5)).astype(
        np.float32)


def test_a_globular_model_that_did_not_learn_its_labels_says_so(tmp_path, monkeypatch,
                                                                  caplog):
    """A training that collapsed (heat map 0 everywhere) or never left the initial bias
    (issue 11: every blob ~0.094 on a 0.09 background) is flagged by its calibration
    (``separated: False``, one warning) and again by every `milopyp localize` with it; a
    model that raised its labels above the background is not."""
    import sys
    import types

    from milopyp import cli
    from milopyp.io.mrc import write_tomogram
    from milopyp.localize.calibrate import calibrate_threshold

    rng = np.random.default_rng(11)
    shape = (24, 96, 96)
    xyz = rng.uniform([8, 8, 6], [88, 88, 18], size=(20, 3))
    labels = [xyz[:12]]
    learned = _blob_heatmap(shape, xyz, [0.6] * 12 + [0.4] * 8, rng)
    saturated = _blob_heatmap(shape, xyz, [0.094] * 20, rng, floor=0.088, noise=0.004)
    collapsed = np.zeros(shape, np.float32)
    heat = {}
    monkeypatch.setitem(sys.modules, "milopyp.localize.infer",
                        types.SimpleNamespace(predict_heatmap=lambda m, t, **k: heat["map"]))
    calibrations = {}
    for name, heatmap in (("learned", learned), ("saturated", saturated),
                          ("collapsed", collapsed)):
        heat["map"] = heatmap
        caplog.clear()
        with caplog.at_level("WARNING", logger="milopyp.localize.calibrate"):
            cal = calibrate_threshold(None, [heatmap], labels, 3.0, "cpu",
                                      profile_check=False)
        calibrations[name] = cal
        learnt = name == "learned"
        assert cal["separated"] is learnt, (name, cal)
        assert ("did not learn the target" in caplog.text) is not learnt, caplog.text
        assert len(caplog.records) == (0 if learnt else 1)
    assert 0.5 < calibrations["learned"]["label_heat_median"] <= 0.6  # bumps off the grid
    assert calibrations["learned"]["background_peak_median"] < 0.01

    model = types.SimpleNamespace(settings={"shape": "globular", "particle_radius_vox": 3.0},
                                  config=types.SimpleNamespace(bin_factor=1),
                                  calibration=calibrations["collapsed"])
    monkeypatch.setitem(sys.modules, "milopyp.localize.train",
                        types.SimpleNamespace(load_localizer=lambda path: model))
    heat["map"] = collapsed
    mrc = tmp_path / "TS_01.mrc"
    write_tomogram(mrc, np.zeros(shape, np.float32), 10.0)
    for name in ("collapsed", "learned"):
        model.calibration = calibrations[name]
        caplog.clear()
        with caplog.at_level("WARNING"):
            assert cli.main(["localize", "--model", "m.pt", "--tomogram", str(mrc), "-o",
                             str(tmp_path / f"{name}.csv")]) == 0
        assert ("TS_01: the model did not learn the target" in caplog.text) is (
            name == "collapsed"), caplog.text


def _background_and_particle_peaks(seed, median, background_mean, n_background,
                                   particle_centre, particle_sd, n_particles):
    """Synthetic heat-map peaks (in units of ``median``): an exponential background of mean
    ``background_mean`` and a Gaussian particle mode. Returns (all peaks, the particles)."""
    rng = np.random.default_rng(seed)
    background = median * rng.exponential(background_mean, n_background)
    particles = median * rng.normal(particle_centre, particle_sd, n_particles)
    return np.r_[background, particles], particles


def _pick_f1(t, peaks, particles):
    """F1 of keeping the peaks above ``t`` when ``particles`` are the true ones."""
    return 2 * np.sum(particles > t) / (np.sum(peaks > t) + len(particles))


def test_a_level_the_mixture_finds_below_the_old_bound_is_kept():
    """Unseen particles whose lower tail reaches down to the mixture's floor (the insitu
    devset's held-out tomogram: levels 0.23-0.29 x the label median): the threshold is the
    fit's own level, not a bound above it (0.3 x until stop 34), and keeps more of them."""
    from milopyp.localize import calibrate

    median = 0.3
    peaks, particles = _background_and_particle_peaks(3, median, 1 / 30.0, 1500, 0.6, 0.25, 70)
    t, rule = calibrate.split_threshold(median, peaks)
    assert "mixture of" in rule, rule
    assert calibrate.MIXTURE_FLOOR_FRACTION * median <= t < 0.3 * median, t / median
    new, old = _pick_f1(t, peaks, particles), _pick_f1(0.3 * median, peaks, particles)
    assert new > old + 0.01, (new, old)


def test_split_holds_when_background_peaks_far_outnumber_the_particles():
    """Virus-like peaks: thousands of background maxima whose count falls off exponentially
    with the score, and a particle mode of ~90 at the label median. Otsu's split lands in
    the background (most picks false); the background + particle-mode mixture starts the
    picks where the particles take over."""
    from milopyp.localize.calibrate import split_threshold

    median = 0.3
    peaks, particles = _background_and_particle_peaks(7, median, 1 / 7.0, 8000, 0.95, 0.17, 90)

    def f1(t):
        return _pick_f1(t, peaks, particles)

    best = max(f1(t) for t in np.linspace(0, median * 1.5, 301))
    t_otsu, _ = split_threshold(median, peaks, "otsu")
    t, rule = split_threshold(median, peaks)
    assert "mixture of" in rule and "Otsu" not in rule, rule
    assert f1(t) >= best - 0.05, (t / median, f1(t), best)
    assert f1(t_otsu) < best - 0.2, (t_otsu / median, f1(t_otsu), best)  # why not Otsu


def test_a_narrow_particle_mode_is_fitted_again_wider(monkeypatch):
    """Particles the labels stand for (around the label median) and as many unseen ones that
    score lower (0.25-0.7 x): a free fit takes the upper ones as the mode and the others as
    background, and starts the picks too high; held at TYPICAL_MODE_WIDTH, the mode takes
    both, and the picks start where the particles do."""
    from milopyp.localize import calibrate

    rng = np.random.default_rng(2)
    median = 0.3
    negatives = np.r_[median * rng.exponential(1 / 9.0, 1500),
                      median * (0.1 + rng.exponential(1 / 3.0, 15))]
    particles = median * np.r_[rng.normal(1.0, 0.2, 50), rng.uniform(0.25, 0.7, 40)]
    peaks = np.r_[negatives, particles]

    def f1(t):
        return _pick_f1(t, peaks, particles)

    best = max(f1(t) for t in np.linspace(0, 1.5 * median, 451))
    t_wide, rule = calibrate.split_threshold(median, peaks)
    assert f"± {calibrate.TYPICAL_MODE_WIDTH:.2f}" in rule, rule
    monkeypatch.setattr(calibrate, "TYPICAL_MODE_WIDTH", 0.0)  # the free fit only
    t_free, _ = calibrate.split_threshold(median, peaks)
    assert t_wide < t_free and f1(t_wide) > f1(t_free) + 0.05, (t_wide, t_free)
    assert f1(t_wide) >= best - 0.07, (t_wide / median, f1(t_wide), best)


def test_mixture_without_a_particle_mode_falls_back_to_otsu():
    from milopyp.localize.calibrate import split_threshold

    rng = np.random.default_rng(8)
    t, rule = split_threshold(0.3, 0.3 * rng.exponential(1 / 7.0, 3000))
    assert "Otsu split" in rule and 0.09 <= t <= 0.27, (t, rule)


def test_each_tomogram_gets_the_split_of_its_own_peaks():
    from milopyp.localize.calibrate import MAX_SPLIT_RAISE, tomogram_threshold

    rng = np.random.default_rng(4)
    calibration = {"threshold": 0.3, "label_peak_median": 0.5, "rule": "split of 300 peaks"}
    # a tomogram whose particles all score lower than the labelled one's (thicker ice)
    particles, look_alikes = rng.uniform(0.2, 0.35, 60), rng.uniform(0.06, 0.12, 150)
    t, rule = tomogram_threshold(calibration, np.r_[rng.uniform(0, 0.04, 1000),
                                                     look_alikes, particles])
    assert np.all(particles > t) and np.all(look_alikes < t) and t < 0.3, (t, rule)
    assert rule.startswith("this tomogram's mixture"), rule
    # a split far above the model's own threshold is held at MAX_SPLIT_RAISE x it
    peaks = np.r_[rng.uniform(0, 0.04, 1000), look_alikes, particles]
    split, _ = tomogram_threshold(calibration, peaks)
    low = {**calibration, "threshold": 0.5 * split}
    t, rule = tomogram_threshold(low, peaks)
    assert t == pytest.approx(MAX_SPLIT_RAISE * 0.5 * split) and t < split, (t, split)
    assert rule.startswith(f"{MAX_SPLIT_RAISE:g} x the model's threshold"), rule
    assert tomogram_threshold({**calibration, "threshold": 0.9 * split}, peaks)[0] == split
    # nothing to split: the model's calibrated threshold
    t, rule = tomogram_threshold(calibration, particles[:5])
    assert t == 0.3 and "the model's threshold" in rule
    # peaks without a particle mode: the model's threshold, not Otsu's split of them
    t, rule = tomogram_threshold(calibration, 0.5 * rng.exponential(1 / 7.0, 3000))
    assert t == 0.3 and "the model's threshold; no particle mode" in rule, rule
    t, rule = tomogram_threshold(calibration, 0.5 * rng.exponential(1 / 7.0, 3000), "otsu")
    assert "Otsu split" in rule and t != 0.3, (t, rule)


def test_class_prior_is_re_estimated_from_the_model_and_resumes_exactly(tmp_path, caplog):
    vol, xyz = _blobs((12, 48, 56), 24, seed=21)
    kw = {"epochs": 5, "iterations_per_epoch": 4, "lr": 1e-2, "lr_step_epochs": 10,
              "expected_particles": None}
    with caplog.at_level("INFO", logger="milopyp.localize.train"):
        straight = _train(vol, xyz[:5], **kw)
    priors = [h["prior"] for h in straight.history]
    # assumed until epoch 2, re-estimated after epochs 2 and 4, kept in between
    assert priors[1] != priors[0] and priors[2] == priors[1] and priors[4] == priors[3]
    assert "re-estimated from the model" in caplog.text
    lo, hi = 0.5 * 5 / vol.size, 50.0 * 5 / vol.size  # PRIOR_UPDATE_BOUNDS x labels per voxel
    assert lo <= priors[1] <= hi
    # given a prior (or a count), it is never re-estimated
    fixed = _train(vol, xyz[:5], **{**kw, "class_prior": 1e-3, "epochs": 3})
    assert {h["prior"] for h in fixed.history} == {1e-3}
    # interrupted after epoch 3 (after the first update), resumed: bit-identical
    ckpt = tmp_path / "model.pt"
    _train(vol, xyz[:5], **{**kw, "epochs": 3}, checkpoint_path=ckpt)
    resumed = _train(vol, xyz[:5], **kw, checkpoint_path=ckpt)
    assert [h["prior"] for h in resumed.history] == priors
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_class_prior_is_re_estimated_after_each_update_epoch(caplog):
    from milopyp.localize.prior import PRIOR_UPDATE_EPOCHS

    vol, xyz = _blobs((12, 48, 56), 24, seed=21)
    epochs = max(PRIOR_UPDATE_EPOCHS) + 1
    with caplog.at_level("INFO", logger="milopyp.localize.train"):
        model = _train(vol, xyz[:5], epochs=epochs, iterations_per_epoch=2, lr=1e-2,
                       lr_step_epochs=10, expected_particles=None)
    assert caplog.text.count("re-estimated from the model") == len(PRIOR_UPDATE_EPOCHS) >= 3
    priors = [h["prior"] for h in model.history]
    for e in range(1, epochs):  # the prior changes only after an update epoch
        if e + 1 not in PRIOR_UPDATE_EPOCHS:
            assert priors[e] == priors[e - 1]


@pytest.mark.parametrize("angle", [0.0, 0.7, np.pi / 2, 2.5, 4.0])
def test_rotated_crop_moves_labels_with_the_density(angle):
    from milopyp.localize.augment import rotated_crop

    shape, sigma = (6, 70, 80), 1.2
    points = np.array([[40.0, 30.0, 3.0], [42.0, 36.0, 2.0], [33.0, 37.0, 4.0]])  # x, y, z
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    vol = np.zeros(shape, np.float32)
    for x, y, z in points:
        vol += np.exp(-((xx - x) ** 2 + (yy - y) ** 2 + (zz - z) ** 2) / (2 * sigma**2))
    origin = np.array([1, 20, 25])
    crop, local = rotated_crop(vol, origin, (5, 24, 24), angle, points)
    assert crop.shape == (5, 24, 24) and crop.dtype == np.float32
    for x, y, z in local:
        assert 1 <= x <= 22 and 1 <= y <= 22, (x, y)
        k = round(z)
        window = crop[k, round(y) - 2:round(y) + 3, round(x) - 2:round(x) + 3]
        assert window.max() > 0.8, (angle, x, y, window.max())
        assert crop[k, round(y), round(x)] > 0.6
    if angle == 0.0:
        np.testing.assert_allclose(crop, vol[1:6, 20:44, 25:49], atol=1e-5)
        np.testing.assert_allclose(local, points - [25, 20, 1])


@pytest.mark.parametrize("bin_factor", [1, 2])
def test_turned_and_z_mirrored_training_crops_keep_targets_on_the_particles(bin_factor):
    """Training crops at random in-plane angles, half mirrored in z, of a binned model cut
    from the tomogram before binning: every target centre (1) and known negative (-2) sits
    on its blob in the crop, and both the mirrored and the plain crops occur."""
    from milopyp.localize.checkpoint import TrainSettings
    from milopyp.localize.data import TrainingData, sample_crops
    from milopyp.localize.scale import bin_volume, to_binned

    rng = np.random.default_rng(3)
    shape, sigma = (48, 96, 96), 2.0
    points = rng.uniform([20, 20, 12], [76, 76, 36], size=(7, 3))  # x, y, z (full voxels)
    negative, labels = points[:1], points[1:]
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    vol = np.zeros(shape, np.float32)
    for x, y, z in points:
        vol += np.exp(-((xx - x) ** 2 + (yy - y) ** 2 + (zz - z) ** 2) / (2 * sigma**2))
    b = bin_factor
    data = TrainingData(tomograms=[bin_volume(vol, b)], labels=[to_binned(labels, b)],
                        stats=[(0.0, 1.0)], negatives=[to_binned(negative, b)],
                        originals=[vol], bin_factor=b)
    settings = TrainSettings(particle_radius_vox=4.0 / b, crop_zyx=(24 // b, 48 // b, 48 // b),
                             batch_size=1, rotate_xy=True, flip_z=True)
    draws = np.random.default_rng(0)
    checked = 0
    for _ in range(40):
        crop, _, _, target = sample_crops(data, settings, draws)
        crop, target = crop[0, 0], target[0, 0]
        centres = list(np.argwhere(target == 1.0))
        ball = np.argwhere(target == -2.0)
        if len(ball) and ball.min(0).min() > 0 and np.all(ball.max(0) < np.array(crop.shape) - 1):
            centres.append(np.rint(ball.mean(0)).astype(int))  # a whole negative ball
        for k, y, x in centres:
            if min(k, y, x) < 2 or np.any(np.array([k, y, x]) > np.array(crop.shape) - 3):
                continue
            window = crop[k - 1:k + 2, y - 2:y + 3, x - 2:x + 3]
            assert crop[k, y, x] >= 0.6 * window.max() > 0.2, (k, y, x, window.max())
            checked += 1
    assert checked >= 10
    assert crop.dtype == np.float32 and target.shape == crop.shape


# --- look-alikes and explicit negatives -------------------------------------------------

def _balls_and_shells(shape_zyx, n, seed, noise=0.35):
    """Noise with n solid balls (the target) and n hollow shells of the same size and the
    same integrated density (look-alikes: only their shape differs). Returns
    (volume, balls xyz, shells xyz)."""
    rng = np.random.default_rng(seed)
    vol = rng.normal(0.0, noise, shape_zyx).astype(np.float32)
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape_zyx], indexing="ij")
    # a jittered grid in x/y (spacing >= 10 voxels), so placement always terminates
    gx = np.linspace(7, shape_zyx[2] - 7, max(2, int((shape_zyx[2] - 14) // 11) + 1))
    gy = np.linspace(7, shape_zyx[1] - 7, max(2, int((shape_zyx[1] - 14) // 11) + 1))
    cells = np.array([(x, y) for y in gy for x in gx])
    assert len(cells) >= 2 * n, "volume too small for the requested balls and shells"
    cells = cells[rng.permutation(len(cells))[:2 * n]]
    centres = np.column_stack([cells + rng.integers(-1, 2, cells.shape),
                               rng.integers(5, shape_zyx[0] - 5, len(cells))]).astype(float)
    for k, (x, y, z) in enumerate(centres):
        r = np.sqrt((xx - x) ** 2 + (yy - y) ** 2 + (zz - z) ** 2)
        if k < n:
            vol += 1.0 * (r <= 3.0)
        else:  # same outer size and integrated density, empty inside
            inside, shell = r <= 3.0, (r > 1.8) & (r <= 3.0)
            vol += (inside.sum() / shell.sum()) * shell
    return vol, centres[:n], centres[n:]


def _peak_auc(heat, pos, neg):
    from milopyp.localize.calibrate import label_peak_scores

    sp, sn = label_peak_scores(heat, pos, 1.5), label_peak_scores(heat, neg, 1.5)
    return float(np.mean(sp[:, None] > sn[None, :])), sp, sn


@pytest.mark.slow
@pytest.mark.parametrize("with_negatives", [False, True])
def test_training_ranks_the_target_above_look_alikes(with_negatives):
    """Balls vs shells of the same size and density: trained on a few labelled balls (the
    shells unlabelled, or given as negatives), the heat map of an unseen volume ranks balls
    above shells, not only blobs above noise."""
    train_vol, balls, shells = _balls_and_shells((16, 64, 64), 10, seed=21)
    test_vol, t_balls, t_shells = _balls_and_shells((16, 64, 64), 10, seed=22)
    model = _train(train_vol, balls[:6], epochs=8, iterations_per_epoch=40, lr_step_epochs=6,
                   lr=1e-2, crop=(8, 32, 32), particle_radius_vox=3.0, expected_particles=10,
                   z_dilations=(1, 2), negatives=[shells[:6]] if with_negatives else None)
    heat = predict_heatmap(model, test_vol, device="cpu")
    auc, sp, sn = _peak_auc(heat, t_balls, t_shells)
    assert auc >= 0.9, (auc, sp.round(3), sn.round(3))
    assert np.median(sp) > 2 * np.median(sn), (sp.round(3), sn.round(3))


def test_negatives_in_the_target_map_and_the_loss():
    from milopyp.localize.pu import pu_focal_loss
    from milopyp.localize.targets import NEGATIVE

    t = heatmap_target(np.array([[5.0, 5.0, 5.0]]), (11, 24, 24), radius_vox=3.0,
                       negatives_xyz=np.array([[16.0, 16.0, 5.0], [6.0, 5.0, 5.0]]))
    assert t[5, 16, 16] == NEGATIVE and t[5, 16, 19] == NEGATIVE and t[5, 16, 20] == -1
    assert t[5, 5, 5] == 1.0  # a positive wins over a negative that overlaps it
    assert np.all(t[t > -1] >= 0)
    logits = torch.full((1, 1, *t.shape), -2.0, requires_grad=True)
    target = torch.from_numpy(t)[None, None]
    base = pu_focal_loss(logits, target, 1e-3)
    hot = logits.detach().clone()
    hot[0, 0, 5, 16, 16] = 3.0  # confident at a known negative: the loss must rise
    assert float(pu_focal_loss(hot, target, 1e-3)) > float(base.detach()) + 0.5
    base.backward()
    assert float(logits.grad[0, 0, 5, 16, 16]) > 0  # gradient descent lowers it


def test_negative_peaks_step_on_each_objects_highest_voxel():
    """``negative_loss="peaks"``: each known-negative object (a connected y = −2 region of
    one crop, never joined across the batch) adds softplus of its highest logit, per
    labelled centre; only that voxel gets a gradient. ``"ranked"``: softplus of that logit
    less the labelled centres' mean, nothing in a batch without labelled centres."""
    from milopyp.errors import MilopypError
    from milopyp.localize.pu import negative_peak_risk, pu_focal_loss, pu_focal_risks
    from milopyp.localize.targets import NEGATIVE

    target = torch.full((2, 1, 6, 10, 10), -1.0)
    target[0, 0, 1, 1, 1] = target[0, 0, 4, 8, 8] = 1.0  # two labelled centres
    target[0, 0, 2:4, 2:4, 5:8] = NEGATIVE  # object a
    target[0, 0, 4:6, 6:8, 0:2] = NEGATIVE  # object b
    target[1, 0, 2:4, 2:4, 5:8] = NEGATIVE  # object c: a's place, other crop
    logits = torch.randn(target.shape, generator=torch.Generator().manual_seed(3))
    logits.requires_grad_(True)
    flat = logits.detach()[:, 0]
    peaks = torch.stack([flat[0, 2:4, 2:4, 5:8].max(), flat[0, 4:6, 6:8, 0:2].max(),
                         flat[1, 2:4, 2:4, 5:8].max()])
    risk = negative_peak_risk(logits, target)
    assert risk.item() == pytest.approx(float(torch.nn.functional.softplus(peaks).sum()),
                                        rel=1e-6)
    risk.backward()
    hit = logits.grad != 0
    assert int(hit.sum()) == 3  # one voxel per object
    assert torch.allclose(logits.grad[hit].sort().values, torch.sigmoid(peaks).sort().values)
    assert bool((logits.detach()[hit][:, None] == peaks[None, :]).any(0).all())
    # in the PU loss: per labelled centre, outside the clamp; the voxels' term is the default
    unlabelled = target.clone()
    unlabelled[unlabelled == NEGATIVE] = -2.5  # neither unlabelled nor negative: ignored
    without = pu_focal_loss(logits.detach(), unlabelled, 1e-3)
    with_peaks = pu_focal_loss(logits.detach(), target, 1e-3, negative_loss="peaks")
    b = pu_focal_risks(logits.detach(), target)
    bw = pu_focal_risks(logits.detach(), unlabelled)
    assert [float(x) for x in b] == pytest.approx([float(x) for x in bw])
    assert float(with_peaks - without) == pytest.approx(risk.item() / 2, rel=1e-5)
    assert float(pu_focal_loss(logits.detach(), target, 1e-3)) != pytest.approx(
        float(with_peaks))
    # "ranked": below the labelled centres' mean logit (a level the heat map sets itself)
    reference = logits.detach()[target == 1].mean()
    ranked = pu_focal_loss(logits.detach(), target, 1e-3, negative_loss="ranked")
    expected = float(torch.nn.functional.softplus(peaks - reference).sum()) / 2
    assert float(ranked - without) == pytest.approx(expected, rel=1e-5)
    no_centres = target.clone()
    no_centres[no_centres == 1] = -1.0
    assert float(pu_focal_loss(logits.detach(), no_centres, 1e-3, negative_loss="ranked")) \
        == pytest.approx(float(pu_focal_loss(logits.detach(), no_centres.masked_fill(
            no_centres == NEGATIVE, -2.5), 1e-3)))
    assert float(negative_peak_risk(logits, unlabelled)) == 0.0
    with pytest.raises(MilopypError, match="negative loss"):
        pu_focal_loss(logits, target, 1e-3, negative_loss="centres")


def test_an_unknown_negative_loss_stops_training_before_it_starts(monkeypatch):
    import milopyp.localize.train as train_module
    from milopyp.errors import MilopypError

    def no_step(*args, **kwargs):
        raise AssertionError("a training step ran")

    monkeypatch.setattr(train_module, "localizer_loss", no_step)
    vol, xyz = _blobs((12, 48, 56), 20, seed=12)
    with pytest.raises(MilopypError, match="negative loss"):
        _train(vol, xyz[:6], negative_loss="centres")


def test_train_localize_command_leaves_no_checkpoint_and_retrains_on_new_labels(tmp_path,
                                                                                caplog):
    """Issue 13: after a finished run the checkpoint is gone (``--forcerun`` and new labels
    train; ``--delete-all-output`` leaves nothing), and a stale checkpoint of other labels
    (a run killed before the selection changed) is not resumed."""
    import pandas as pd

    from milopyp import cli
    from milopyp.io.mrc import write_tomogram

    vol, xyz = _blobs((12, 48, 56), 12, seed=31)
    mrc = tmp_path / "TS_01.mrc"
    write_tomogram(mrc, vol, 10.0)
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    for path, rows in ((first, xyz[:5]), (second, xyz[5:10])):
        pd.DataFrame({"tomogram": "TS_01", "x": rows[:, 0], "y": rows[:, 1],
                      "z": rows[:, 2]}).to_csv(path, index=False)
    model = tmp_path / "model.pt"
    tiny = ["--epochs", "2", "--iterations-per-epoch", "2", "--crop-xy", "32", "--crop-z", "4",
            "--bin", "1", "--base-channels", "4", "--particle-diameter", "60",
            "--device", "cpu", "--tomograms", str(mrc), "-o", str(model)]
    assert cli.main(["train-localize", "--labels", str(first), *tiny]) == 0
    assert model.exists() and not Path(f"{model}.ckpt").exists()
    weights_a = torch.load(model, weights_only=True)["model"]
    # the model file holds the trained model (BatchNorm statistics re-estimated after the
    # last epoch), which the calibration was made with, not the last epoch's checkpoint
    from milopyp.localize.stage import read_labelled_tomograms

    tomograms, _, labels, _ = read_labelled_tomograms([str(mrc)], [str(first)], None)
    direct = train_localizer(tomograms, labels, particle_radius_vox=3.0, epochs=2,
                             iterations_per_epoch=2, crop=(4, 32, 32), bin_factor=1,
                             base_channels=4, device="cpu")
    for k, v in direct.state_dict().items():
        assert torch.equal(v, weights_a[k]), k
    # a checkpoint left by a run on the first labels, killed after epoch 1
    train_localizer([vol], [xyz[:5]], particle_radius_vox=3.0, epochs=1,
                    iterations_per_epoch=2, crop=(4, 32, 32), bin_factor=1, base_channels=4,
                    device="cpu", checkpoint_path=f"{model}.ckpt")
    with caplog.at_level("INFO"):
        assert cli.main(["train-localize", "--labels", str(second), *tiny]) == 0
    assert "run with other tomograms, labels or negatives: not resuming" in caplog.text
    weights_b = torch.load(model, weights_only=True)["model"]
    assert any(not torch.equal(v, weights_b[k]) for k, v in weights_a.items())
    assert not Path(f"{model}.ckpt").exists()


def test_test_time_flips_average_the_mirrored_heat_maps():
    """flips=4: the mean of the heat maps of the tomogram and its x, y and x–y mirror images,
    each mirrored back (binned model, odd sizes: flipped on the working grid)."""
    from milopyp.localize.infer import FLIPS_YX

    cfg = LocalizerConfig(**TINY, z_dilations=(1,), bin_factor=1)
    torch.manual_seed(7)
    model = _randomise_bn(Localizer(cfg), 7)
    vol = np.random.default_rng(7).normal(size=(9, 37, 46)).astype(np.float32)
    mean = np.mean([np.flip(predict_heatmap(model, np.ascontiguousarray(np.flip(vol, axes)),
                                            device="cpu"), axes)
                    for axes in FLIPS_YX], axis=0)
    four = predict_heatmap(model, vol, device="cpu", flips=4)
    assert np.allclose(four, mean, atol=1e-6)
    one = predict_heatmap(model, vol, device="cpu")
    assert not np.allclose(four, one, atol=1e-3)  # the random network is not symmetric
    two = predict_heatmap(model, vol, device="cpu", flips=2)
    assert np.allclose(two, 0.5 * (one + np.flip(predict_heatmap(
        model, np.ascontiguousarray(np.flip(vol, 2)), device="cpu"), 2)), atol=1e-6)
    with pytest.raises(MilopypError, match="flips"):
        predict_heatmap(model, vol, device="cpu", flips=3)


def test_a_list_of_models_gives_the_mean_of_their_heat_maps():
    """An ensemble: predict_heatmap of several localisers (one binned) is the mean of each
    one's heat map with the same flips; an empty list is an error."""
    models = []
    for seed, b in ((3, 1), (4, 2)):
        torch.manual_seed(seed)
        models.append(_randomise_bn(Localizer(LocalizerConfig(**TINY, bin_factor=b)), seed))
    vol = np.random.default_rng(5).normal(size=(10, 36, 44)).astype(np.float32)
    each = [predict_heatmap(m, vol, device="cpu", flips=2) for m in models]
    assert not np.allclose(each[0], each[1], atol=1e-3)
    both = predict_heatmap(models, vol, device="cpu", flips=2)
    assert both.dtype == np.float32 and both.shape == vol.shape
    assert np.allclose(both, 0.5 * (each[0] + each[1]), atol=1e-6)
    assert np.array_equal(predict_heatmap(models[:1], vol, device="cpu", flips=2), each[0])
    with pytest.raises(MilopypError, match="empty list of models"):
        predict_heatmap([], vol, device="cpu")


def test_flips_default_is_one_setting_stored_with_the_threshold(tmp_path, capsys, caplog):
    """The workflow, the command and the benchmark use DEFAULT_FLIPS; the model file keeps
    the flips its threshold was calibrated with, and `localize` picks with those; it also
    keeps its voxel size: `localize` resamples a tomogram of another to the model's grid, and
    stops on one more than 4 times off."""
    import argparse

    import pandas as pd
    import yaml

    from milopyp import cli
    from milopyp.commands import train_localize
    from milopyp.io.mrc import write_tomogram
    from milopyp.localize.infer import DEFAULT_FLIPS, FIBER_FLIPS, default_flips

    parser = argparse.ArgumentParser()
    train_localize.add_arguments(parser)
    assert parser.get_default("flips") is None  # by shape: default_flips
    assert default_flips("globular") == DEFAULT_FLIPS == 4
    assert default_flips("fiber") == FIBER_FLIPS == 1
    root = Path(__file__).resolve().parents[1]
    schema = yaml.safe_load((root / "config" / "schema.yaml").read_text())
    assert schema["properties"]["localize"]["properties"]["test_time_flips"]["default"] == (
        "auto")
    vol, mrc, model = _tiny_model_file(tmp_path, "--flips", "2")
    assert load_localizer(model).calibration["flips"] == 2
    heat = tmp_path / "heat.mrc"
    assert cli.main(["localize", "--model", str(model), "--tomogram", str(mrc), "-o",
                     str(tmp_path / "picks.csv"), "--heatmap", str(heat),
                     "--device", "cpu"]) == 0
    from milopyp.io.mrc import read_tomogram

    written, _ = read_tomogram(heat)
    expected = predict_heatmap(load_localizer(model), vol, device="cpu", flips=2)
    assert np.allclose(written, expected, atol=1e-6)

    # the model knows its voxel size: a tomogram binned by 2 (20 Å) is read resampled to
    # the model's grid, with the heat map and picks on the tomogram's own grid
    assert load_localizer(model).voxel_size_a == 10.0
    from milopyp.localize.scale import bin_volume

    binned = tmp_path / "TS_01_bin2.mrc"
    write_tomogram(binned, bin_volume(vol, 2), 20.0)
    picks, heat2 = tmp_path / "picks_bin2.csv", tmp_path / "heat_bin2.mrc"
    argv = ["localize", "--model", str(model), "--tomogram", str(binned), "-o", str(picks),
            "--device", "cpu"]
    with caplog.at_level("INFO", logger="milopyp.localize.stage"):
        assert cli.main([*argv, "--heatmap", str(heat2)]) == 0
    assert "resampled to 10 Å voxels (0.5 of its voxels)" in caplog.text
    written, voxel_a = read_tomogram(heat2)
    assert written.shape == (6, 24, 28) and voxel_a == 20.0
    expected = predict_heatmap(load_localizer(model), bin_volume(vol, 2), device="cpu",
                               flips=2, bin_factor=0.5)
    assert np.allclose(written, expected, atol=1e-6)
    assert not np.allclose(written, predict_heatmap(load_localizer(model), bin_volume(vol, 2),
                                                    device="cpu", flips=2), atol=1e-3)
    found = pd.read_csv(picks)
    assert len(found) and (found[["x", "y", "z"]].to_numpy() < [28, 24, 6]).all()
    # one 3 times coarser would make the (unbinned) model's grid 27 times larger: it stops
    # in one line, as one 5 times coarser does, naming both files, before any output; a
    # header within 1 % or --voxel-size passes unresampled
    coarse = tmp_path / "TS_01_30A.mrc"
    write_tomogram(coarse, vol, 30.0)
    picks = tmp_path / "picks_30A.csv"
    assert cli.main(["localize", "--model", str(model), "--tomogram", str(coarse), "-o",
                     str(picks), "--device", "cpu"]) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(coarse) in message and "27 times its voxels" in message
    assert not picks.exists()
    coarse = tmp_path / "TS_01_50A.mrc"
    write_tomogram(coarse, vol, 50.0)
    picks = tmp_path / "picks_50A.csv"
    argv = ["localize", "--model", str(model), "--tomogram", str(coarse), "-o", str(picks),
            "--device", "cpu"]
    assert cli.main(argv) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(coarse) in message and str(model) in message and "50 Å" in message
    assert "10 Å" in message and not picks.exists()
    assert cli.main([*argv, "--voxel-size", "10.05"]) == 0 and picks.exists()


def test_localize_drops_globular_picks_at_the_z_faces_only(tmp_path, caplog):
    """Picks whose centre lies within half a particle radius of the first or last slice are
    dropped after the threshold (default), none with a margin of 0; the x-y edges keep
    theirs; the rest of the table is the same."""
    import pandas as pd

    from milopyp import cli, defaults
    from milopyp.localize.peaks import clear_of_z_faces

    assert clear_of_z_faces(np.array([0, 1, 2, 9, 10, 11]), 12, 1.5).tolist() == [
        False, False, True, True, False, False]
    assert clear_of_z_faces(np.array([0, 11]), 12, 0.0).all()
    vol, mrc, model = _tiny_model_file(tmp_path)
    last_z, edge_xy = vol.shape[0] - 1, [vol.shape[2] - 1, vol.shape[1] - 1]
    margin = defaults.z_face_margin_vox(3.0)  # 60 Å diameter, 10 Å voxels
    assert margin == 1.5
    tables = {}
    for name, extra in (("all", ["--z-face-margin-vox", "0"]), ("default", []),
                        ("wide", ["--z-face-margin-vox", "3"])):
        out = tmp_path / f"{name}.csv"
        with caplog.at_level("INFO", logger="milopyp.localize.stage"):
            assert cli.main(["localize", "--model", str(model), "--tomogram", str(mrc), "-o",
                             str(out), "--threshold", "0", "--device", "cpu", *extra]) == 0
        tables[name] = pd.read_csv(out)
    every = tables["all"]
    z = every["z"].to_numpy()
    assert ((z < margin) | (z > last_z - margin)).any()  # the heat map has maxima at the faces
    for name, m in (("default", margin), ("wide", 3.0)):
        expected = every[(z >= m) & (z <= last_z - m)].reset_index(drop=True)
        pd.testing.assert_frame_equal(tables[name], expected)
    assert len(tables["wide"]) < len(tables["default"]) < len(every)
    xy = every[["x", "y"]].to_numpy()
    assert ((xy == 0) | (xy == edge_xy)).any()  # maxima at the x-y edges too: kept
    kept_xy = tables["default"][["x", "y"]].to_numpy()
    assert ((kept_xy == 0) | (kept_xy == edge_xy)).any()
    assert "closer than 1.5 voxels to the tomogram's first or last slice dropped" in caplog.text


def test_split_threshold_rejects_an_unknown_method():
    from milopyp.localize.calibrate import split_threshold

    peaks = np.random.default_rng(0).exponential(0.1, 300)
    with pytest.raises(MilopypError, match="otsu"):
        split_threshold(0.8, peaks, method="median")


def test_recentre_moves_labels_to_the_nearest_heat_map_maximum(monkeypatch):
    """Labels a few voxels off a bump move onto it; a label with no higher voxel within half
    a radius stays; a bump farther than half a radius does not pull."""
    from milopyp.localize import infer, train

    heat = _heat_bumps((20, 40, 40), np.array([[20.0, 20.0, 10.0], [8.0, 30.0, 5.0]]),
                       [0.9, 0.8])
    monkeypatch.setattr(infer, "predict_heatmap", lambda model, volume, **kw: heat)
    labels = [np.array([[22.0, 19.0, 11.0], [8.0, 30.0, 5.0], [30.0, 8.0, 15.0],
                        [20.0, 27.0, 10.0]])]
    moved = train.move_labels_to_maxima(None, [heat], labels, [(0.0, 1.0)], radius_vox=8.0,
                                  device=torch.device("cpu"))[0]
    np.testing.assert_array_equal(moved[0], [20, 20, 10])  # 2.4 voxels off: moved
    np.testing.assert_array_equal(moved[1], [8, 30, 5])  # on its maximum: stays
    assert np.linalg.norm(moved[2] - labels[0][2]) <= 4.0  # nowhere to go beyond r/2
    assert np.linalg.norm(moved[3] - [20, 20, 10]) > 0  # 7 voxels away (> r/2): not pulled
    assert np.linalg.norm(moved[3] - labels[0][3]) <= 4.0


def test_recentred_training_logs_the_move_and_resumes_exactly(tmp_path, caplog):
    vol, xyz = _blobs((12, 48, 56), 24, seed=22)
    noisy = np.clip(xyz[:6] + np.array([2.0, -2.0, 1.0]), 0, [55, 47, 11])
    kw = {"epochs": 5, "iterations_per_epoch": 4, "lr": 1e-2, "lr_step_epochs": 10,
          "recentre_labels": True}
    with caplog.at_level("INFO", logger="milopyp.localize.train"):
        straight = _train(vol, noisy, **kw)
    assert "labels moved to the model's maxima" in caplog.text
    plain = _train(vol, noisy, **{**kw, "recentre_labels": False})
    assert not all(torch.equal(v, plain.state_dict()[k])
                   for k, v in straight.state_dict().items())
    ckpt = tmp_path / "model.pt"  # interrupted after the move, resumed: bit-identical
    _train(vol, noisy, **{**kw, "epochs": 5}, checkpoint_path=ckpt)
    straight = _train(vol, noisy, **{**kw, "epochs": 6})
    resumed = _train(vol, noisy, **{**kw, "epochs": 6}, checkpoint_path=ckpt)
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
