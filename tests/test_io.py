"""Tests for milopyp.io.mrc and milopyp.io.coords: round trips, bad input, atomic writes."""

from __future__ import annotations

import warnings

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from milopyp.errors import MilopypError
from milopyp.io import coords, mrc
from milopyp.io.atomic import atomic_path

SHAPE_ZYX = (5, 7, 11)


def _ramp(shape_zyx=SHAPE_ZYX) -> np.ndarray:
    """Voxel value 100*z + 10*y + x, so any axis swap changes values."""
    z, y, x = np.indices(shape_zyx)
    return (100 * z + 10 * y + x).astype(np.float32)


def _raw_mrc(path, data, voxel_size=3.0):
    """Write an MRC with mrcfile directly (bypassing our writer's checks); voxel_size=None
    leaves mrcfile's header without one (cella = 0)."""
    with warnings.catch_warnings(), mrcfile.new(path, overwrite=True) as m:
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN/Inf data, on purpose
        m.set_data(data)
        if voxel_size is not None:
            m.voxel_size = voxel_size
    return path


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------- tomograms


def test_tomogram_round_trip_keeps_zyx_order_and_voxel_size(tmp_path):
    data = _ramp()
    path = tmp_path / "tomo_000.mrc"
    mrc.write_tomogram(path, data, 4.25)

    with mrcfile.open(path) as m:  # the file itself has nx=11, ny=7, nz=5 and mode 2
        assert (int(m.header.nx), int(m.header.ny), int(m.header.nz)) == (11, 7, 5)
        assert int(m.header.mode) == 2
        assert float(m.header.dmax) == pytest.approx(float(data.max()))
        assert float(m.header.rms) == pytest.approx(float(data.std()), rel=1e-5)

    out, voxel_size_a = mrc.read_tomogram(path)
    assert out.dtype == np.float32
    assert out.shape == SHAPE_ZYX
    assert out[3, 2, 9] == 329.0
    np.testing.assert_array_equal(out, data)
    assert voxel_size_a == pytest.approx(4.25)
    assert out.flags.writeable
    assert mrc.read_header(path) == (SHAPE_ZYX, pytest.approx(4.25))


@pytest.mark.parametrize("suffix", [".rec", ".ali", ".mrcs", ".map"])
def test_other_mrc_suffixes_are_read(tmp_path, suffix):
    path = tmp_path / f"t{suffix}"
    mrc.write_tomogram(path, _ramp(), 2.0)
    out, _ = mrc.read_tomogram(path)
    np.testing.assert_array_equal(out, _ramp())


def test_mmap_read_does_not_load_and_matches(tmp_path):
    path = tmp_path / "t.mrc"
    mrc.write_tomogram(path, _ramp(), 3.0)
    out, voxel_size_a = mrc.read_tomogram(path, mmap=True)
    assert isinstance(out, np.memmap)
    assert not out.flags.writeable
    assert voxel_size_a == pytest.approx(3.0)
    np.testing.assert_array_equal(out, _ramp())


def test_mmap_of_int16_file_is_converted_to_float32(tmp_path):
    path = _raw_mrc(tmp_path / "i16.mrc", _ramp().astype(np.int16), voxel_size=2.5)
    out, voxel_size_a = mrc.read_tomogram(path, mmap=True)
    assert out.dtype == np.float32
    assert voxel_size_a == pytest.approx(2.5)
    np.testing.assert_array_equal(out, _ramp())


def test_header_without_voxel_size_is_an_error_unless_given(tmp_path):
    path = _raw_mrc(tmp_path / "novox.mrc", _ramp(), voxel_size=0.0)
    fix = r"novox\.mrc: the MRC header has no voxel size.*set `voxel_size:`.*--voxel-size"
    with pytest.raises(MilopypError, match=fix):
        mrc.read_tomogram(path)
    with pytest.raises(MilopypError, match=fix):
        mrc.read_header(path)
    _, voxel_size_a = mrc.read_tomogram(path, voxel_size_a=7.5)
    assert voxel_size_a == 7.5
    assert mrc.read_header(path, voxel_size_a=7.5) == ((5, 7, 11), 7.5)


def test_chunked_finite_check_counts_across_slabs(tmp_path, monkeypatch):
    data = _ramp()
    data[0, 0, 0] = np.nan
    data[4, 6, 10] = np.inf
    path = _raw_mrc(tmp_path / "bad.mrc", data)
    monkeypatch.setattr(mrc, "_SLAB_BYTES", 1)  # one z-slice per slab
    with pytest.raises(MilopypError, match=r"bad\.mrc: contains 2 NaN/Inf voxels"):
        mrc.read_tomogram(path, mmap=True)
    out, _ = mrc.read_tomogram(path, check_finite=False)
    assert np.isnan(out[0, 0, 0])


# --------------------------------------------------------------------------- tilt series


def test_tilt_series_round_trip_writes_tlt(tmp_path):
    stack = _ramp()
    angles = np.array([-60.0, -29.5, 0.0, 31.25, 60.0])
    path = tmp_path / "tomo_000.st"
    mrc.write_tilt_series(path, stack, angles, 8.0)
    assert (tmp_path / "tomo_000.tlt").is_file()
    with mrcfile.open(path) as m:
        assert int(m.header.ispg) == 0  # image stack

    out, angles_out, voxel_size_a = mrc.read_tilt_series(path)
    np.testing.assert_array_equal(out, stack)
    np.testing.assert_array_equal(angles_out, angles)
    assert angles_out.dtype == np.float64
    assert voxel_size_a == pytest.approx(8.0)


def test_rawtlt_fallback_and_explicit_angle_file(tmp_path):
    angles = np.linspace(-40, 40, 5)
    path = tmp_path / "ts.st"
    mrc.write_tilt_series(path, _ramp(), angles, 1.5)
    (tmp_path / "ts.tlt").rename(tmp_path / "ts.rawtlt")
    _, out, _ = mrc.read_tilt_series(path)
    np.testing.assert_allclose(out, angles)

    other = tmp_path / "angles.txt"
    other.write_text("\n".join(str(a + 1) for a in angles) + "\n\n")
    _, out, _ = mrc.read_tilt_series(path, angles_path=other)
    np.testing.assert_allclose(out, angles + 1)


def test_missing_angle_file_names_both_candidates(tmp_path):
    path = _raw_mrc(tmp_path / "ts.st", _ramp())
    with pytest.raises(MilopypError, match=r"ts\.tlt.*ts\.rawtlt"):
        mrc.read_tilt_series(path)


def test_tilt_angle_count_mismatch_names_both_files_and_counts(tmp_path):
    path = _raw_mrc(tmp_path / "ts.st", _ramp())
    mrc.write_angles(tmp_path / "ts.tlt", [-10.0, 0.0, 10.0])
    with pytest.raises(MilopypError) as info:
        mrc.read_tilt_series(path)
    message = str(info.value)
    assert "ts.st has 5 tilt images" in message and "ts.tlt has 3 angles" in message


def test_write_tilt_series_rejects_wrong_angle_count(tmp_path):
    with pytest.raises(MilopypError, match="5 tilt images but 4 angles"):
        mrc.write_tilt_series(tmp_path / "ts.st", _ramp(), [0, 1, 2, 3], 1.0)
    assert _leftovers(tmp_path) == []


def test_empty_angle_file(tmp_path):
    path = tmp_path / "empty.tlt"
    path.write_text("\n  \n")
    with pytest.raises(MilopypError, match=r"empty\.tlt: contains no tilt angles"):
        mrc.read_angles(path)


def test_non_numeric_angle_line(tmp_path):
    path = tmp_path / "bad.tlt"
    path.write_text("-3.0\n0.0\nthree\n")
    with pytest.raises(MilopypError, match=r"bad\.tlt: line 3 is 'three'"):
        mrc.read_angles(path)


# --------------------------------------------------------------------------- bad MRC input


def test_missing_tomogram(tmp_path):
    with pytest.raises(MilopypError, match=r"nothere\.mrc: tomogram not found.*tomograms:"):
        mrc.read_tomogram(tmp_path / "nothere.mrc")
    with pytest.raises(MilopypError, match=r"nothere\.mrc"):
        mrc.read_header(tmp_path / "nothere.mrc")


@pytest.mark.parametrize("mmap", [False, True])
def test_text_file_named_mrc(tmp_path, mmap):
    path = tmp_path / "notes.mrc"
    path.write_text("this is not a tomogram\n" * 100)
    with pytest.raises(MilopypError, match=r"notes\.mrc: not a readable MRC file"):
        mrc.read_tomogram(path, mmap=mmap)
    with pytest.raises(MilopypError, match=r"notes\.mrc: not a readable MRC file"):
        mrc.read_header(path)


def test_truncated_mrc(tmp_path):
    path = tmp_path / "cut.mrc"
    mrc.write_tomogram(path, _ramp(), 1.0)
    path.write_bytes(path.read_bytes()[:1500])
    with pytest.raises(MilopypError, match=r"cut\.mrc: not a readable MRC file"):
        mrc.read_tomogram(path)


def test_2d_mrc(tmp_path):
    path = _raw_mrc(tmp_path / "image.mrc", _ramp()[0])
    with pytest.raises(MilopypError, match=r"image\.mrc: expected a 3-D tomogram.*\(7, 11\)"):
        mrc.read_tomogram(path)
    with pytest.raises(MilopypError, match=r"image\.mrc: expected a 3-D tomogram"):
        mrc.read_header(path)


def test_single_section_volume(tmp_path):
    path = tmp_path / "one.mrc"
    with mrcfile.new(path) as m:
        m.set_data(_ramp()[:1])
        m.set_volume()
    with pytest.raises(MilopypError, match=r"one\.mrc: expected a 3-D tomogram"):
        mrc.read_tomogram(path)


def test_image_stack_is_read_as_tomogram(tmp_path):
    path = tmp_path / "stack.mrc"
    with mrcfile.new(path) as m:
        m.set_data(_ramp())
        m.set_image_stack()
        m.voxel_size = 2.0
    out, _ = mrc.read_tomogram(path)
    np.testing.assert_array_equal(out, _ramp())


@pytest.mark.parametrize("value, name", [(np.nan, "nan.mrc"), (np.inf, "inf.mrc")])
def test_non_finite_voxels(tmp_path, value, name):
    data = _ramp()
    data[1, 2, 3] = value
    data[4, 0, 0] = -value
    path = _raw_mrc(tmp_path / name, data)
    with pytest.raises(MilopypError, match=rf"{name}: contains 2 NaN/Inf voxels"):
        mrc.read_tomogram(path)


# --------------------------------------------------------------------------- atomic writes


def test_error_inside_atomic_block_leaves_nothing(tmp_path):
    final = tmp_path / "out.mrc"
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        with mrcfile.new(tmp, overwrite=True) as m:
            m.set_data(_ramp())
        raise RuntimeError("killed")
    assert _leftovers(tmp_path) == []


def test_conversion_failing_half_way_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(mrc, "_SLAB_BYTES", 1)  # one z-slice per slab: slices 0-2 get written
    data = _ramp().astype(object)
    data[3, 0, 0] = "not a number"
    with pytest.raises(ValueError, match="not a number"):
        mrc.write_tomogram(tmp_path / "half.mrc", data, 1.0)
    assert _leftovers(tmp_path) == []


def test_failed_rewrite_keeps_old_file(tmp_path):
    path = tmp_path / "t.mrc"
    mrc.write_tomogram(path, _ramp(), 2.0)
    data = _ramp()
    data[2, 2, 2] = np.nan
    with pytest.raises(MilopypError, match=r"t\.mrc: refusing to write 1 NaN/Inf voxels"):
        mrc.write_tomogram(path, data, 2.0)
    assert _leftovers(tmp_path) == ["t.mrc"]
    np.testing.assert_array_equal(mrc.read_tomogram(path)[0], _ramp())


def test_write_rejects_bad_shape_and_voxel_size(tmp_path):
    with pytest.raises(MilopypError, match=r"x\.mrc: expected a 3-D tomogram"):
        mrc.write_tomogram(tmp_path / "x.mrc", np.zeros((4, 4), np.float32), 1.0)
    with pytest.raises(MilopypError, match="--voxel-size"):
        mrc.write_tomogram(tmp_path / "x.mrc", _ramp(), 0.0)
    assert _leftovers(tmp_path) == []


# --------------------------------------------------------------------------- coordinates


def _points(tomogram="tomo_000"):
    return pd.DataFrame(
        {
            "tomogram": [tomogram] * 3,
            "x": [0.0, 10.0, 5.5],
            "y": [6.0, 3.0, 0.25],
            "z": [4.0, 0.0, 2.0],
            "score": [0.9, 0.5, 0.1],
        }
    )


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".txt", ".coords", ".star"])
def test_coordinates_round_trip(tmp_path, suffix):
    df = _points()
    path = tmp_path / f"tomo_000{suffix}"
    coords.write_coordinates(path, df)
    out = coords.read_coordinates(path)
    assert list(out.columns[:5]) == ["tomogram", "x", "y", "z", "score"]
    np.testing.assert_allclose(coords.xyz_array(out), coords.xyz_array(df), atol=1e-6)
    np.testing.assert_allclose(out["score"], df["score"], atol=1e-6)
    assert list(out["tomogram"]) == ["tomo_000"] * 3


def test_csv_keeps_extra_columns_and_accepts_upper_case(tmp_path):
    path = tmp_path / "picks.csv"
    path.write_text("X,Y,Z,species,tomogram\n1,2,3,ribosome,007\n4.5,5,6,proteasome,007\n")
    out = coords.read_coordinates(path)
    assert list(out.columns) == ["tomogram", "x", "y", "z", "species"]
    assert list(out["species"]) == ["ribosome", "proteasome"]
    assert list(out["tomogram"]) == ["007", "007"]  # kept as text, not 7
    np.testing.assert_array_equal(coords.xyz_array(out)[1], [4.5, 5, 6])


def test_tomogram_from_argument_or_stem(tmp_path):
    path = tmp_path / "tomo_042.txt"
    path.write_text("# x y z\n1 2 3\n\n4 5 6\n")
    assert list(coords.read_coordinates(path)["tomogram"]) == ["tomo_042"] * 2
    out = coords.read_coordinates(path, tomogram="other")
    assert list(out["tomogram"]) == ["other", "other"]
    assert "score" not in out.columns


def test_star_picks_particle_block_and_maps_relion_names(tmp_path):
    path = tmp_path / "run.star"
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnTomoTiltSeriesPixelSize": [1.35]})
    particles = pd.DataFrame(
        {
            "rlnTomoName": ["TS_01", "TS_02"],
            "rlnCoordinateX": [1.0, 2.0],
            "rlnCoordinateY": [3.0, 4.0],
            "rlnCoordinateZ": [5.0, 6.0],
            "rlnAngleRot": [10.0, 20.0],
        }
    )
    starfile.write({"optics": optics, "particles": particles}, path)
    out = coords.read_coordinates(path)
    assert list(out["tomogram"]) == ["TS_01", "TS_02"]
    np.testing.assert_allclose(coords.xyz_array(out), [[1, 3, 5], [2, 4, 6]])
    assert list(out["rlnAngleRot"]) == [10.0, 20.0]


def test_relion5_centred_angstrom_round_trip(tmp_path):
    shape_zyx, voxel_size_a = (5, 7, 11), 6.8
    df = _points()
    path = tmp_path / "picks.star"
    coords.write_coordinates(path, df, voxel_size_a=voxel_size_a, shape_zyx=shape_zyx)
    written = starfile.read(path)
    # RELION 5: x_A = (x - nx / 2) * voxel size (odd sizes: centre between two voxels);
    # point (0, 6, 4) -> (-5.5, 2.5, 1.5) voxels
    np.testing.assert_allclose(
        written[list(coords._RLN_CENTRED)].to_numpy()[0], np.array([-5.5, 2.5, 1.5]) * voxel_size_a
    )
    # a RELION-5 file has only the centred columns
    starfile.write({"particles": written.drop(columns=list(coords._RLN_VOX))}, path)
    out = coords.read_coordinates(path, voxel_size_a=voxel_size_a, shape_zyx=shape_zyx)
    np.testing.assert_allclose(coords.xyz_array(out), coords.xyz_array(df), atol=1e-5)
    with pytest.raises(MilopypError, match=r"picks\.star: reading RELION-5.*--voxel-size"):
        coords.read_coordinates(path)


def test_txt_refuses_several_tomograms(tmp_path):
    df = pd.concat([_points("a"), _points("b")])
    with pytest.raises(MilopypError, match=r"two\.txt: the table holds points of 2 tomograms"):
        coords.write_coordinates(tmp_path / "two.txt", df)
    assert _leftovers(tmp_path) == []


def test_empty_tables_round_trip(tmp_path):
    for suffix in (".csv", ".txt", ".star"):
        path = tmp_path / f"none{suffix}"
        coords.write_coordinates(path, coords.empty_points(["score"]))
        out = coords.read_coordinates(path)
        assert len(out) == 0 and {"tomogram", "x", "y", "z"} <= set(out.columns)
        assert coords.xyz_array(out).shape == (0, 3)


def test_points_frame_and_xyz_array_keep_order():
    xyz = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    df = coords.points_frame(xyz, "t", score=[0.1, 0.2])
    assert list(df.columns) == ["tomogram", "x", "y", "z", "score"]
    np.testing.assert_array_equal(coords.xyz_array(df), xyz)
    assert list(df["y"]) == [2.0, 5.0]


# --------------------------------------------------------------------------- bad coordinates


def test_check_inside_bounds():
    shape = (5, 7, 11)
    inside = coords.points_frame([[0, 0, 0], [10, 6, 4], [-0.4, 6.4, 4.4]], "t")
    coords.check_inside(inside, shape, "ok.csv")  # no error
    outside = coords.points_frame([[1, 1, 1], [4, 6, 10], [11, 0, 0]], "t")  # z,y,x given
    with pytest.raises(MilopypError) as info:
        coords.check_inside(outside, shape, "picks/tomo_000.csv")
    message = str(info.value)
    assert message.startswith("picks/tomo_000.csv: 2 of 3 points lie outside")
    assert "x=4, y=6, z=10" in message and "(5, 7, 11)" in message and "Å" in message


def test_missing_xyz_columns_lists_found(tmp_path):
    path = tmp_path / "cols.csv"
    path.write_text("x,y,score\n1,2,0.5\n")
    with pytest.raises(
        MilopypError, match=r"cols\.csv: no column\(s\) z; found \['x', 'y', 'score'\]"
    ):
        coords.read_coordinates(path)


def test_headerless_csv_is_rejected(tmp_path):
    path = tmp_path / "nohead.csv"
    path.write_text("1,2,3\n4,5,6\n")
    with pytest.raises(MilopypError, match=r"nohead\.csv: no column.*header"):
        coords.read_coordinates(path)


def test_non_numeric_coordinate(tmp_path):
    path = tmp_path / "words.csv"
    path.write_text("x,y,z\n1,2,3\n4,five,6\n")
    with pytest.raises(MilopypError, match=r"words\.csv: column 'y' row 2 is 'five'"):
        coords.read_coordinates(path)
    txt = tmp_path / "words.txt"
    txt.write_text("1 2 3\nx y z\n")
    with pytest.raises(MilopypError, match=r"words\.txt: line 2"):
        coords.read_coordinates(txt)
    ragged = tmp_path / "ragged.coords"
    ragged.write_text("1 2 3\n4 5\n")
    with pytest.raises(MilopypError, match=r"ragged\.coords: line 2 has 2 numbers"):
        coords.read_coordinates(ragged)


def test_unknown_extension_lists_accepted(tmp_path):
    path = tmp_path / "picks.xyz"
    path.write_text("1 2 3\n")
    with pytest.raises(MilopypError, match=r"picks\.xyz: unknown coordinate format.*\.csv.*\.star"):
        coords.read_coordinates(path)
    with pytest.raises(MilopypError, match=r"out\.json: unknown coordinate format"):
        coords.write_coordinates(tmp_path / "out.json", _points())


def test_missing_coordinate_file_and_bad_star(tmp_path):
    with pytest.raises(MilopypError, match=r"gone\.csv: coordinate file not found"):
        coords.read_coordinates(tmp_path / "gone.csv")
    path = tmp_path / "other.star"
    starfile.write({"optics": pd.DataFrame({"rlnOpticsGroup": [1]})}, path)
    with pytest.raises(MilopypError, match=r"other\.star: no data block with rlnCoordinateX"):
        coords.read_coordinates(path)


@pytest.mark.parametrize("mmap", [False, True])
def test_gzip_mrc_is_read_even_when_mmap_is_asked(tmp_path, mmap):
    path = tmp_path / "t.mrc.gz"
    with mrcfile.new(path, compression="gzip") as m:
        m.set_data(_ramp())
        m.voxel_size = 5.0
    out, voxel_size_a = mrc.read_tomogram(path, mmap=mmap)
    np.testing.assert_array_equal(out, _ramp())
    assert voxel_size_a == pytest.approx(5.0)
    assert out.flags.writeable


def test_atomic_write_gives_umask_permissions(tmp_path):
    import os

    from milopyp.io.atomic import write_text

    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
