import numpy as np
import polars as pl
import pytest
from PIL import Image

from deepapps.core.data.image_sources import SplitSettings, open_image_source
from deepapps.core.errors import DataError
from tests.helpers import make_image_folder


def test_flat_folder_is_split_stratified_and_reproducibly(image_folder):
    a = open_image_source(str(image_folder), SplitSettings(0.25, 0.25, seed=3))
    b = open_image_source(str(image_folder), SplitSettings(0.25, 0.25, seed=3))
    assert a.labels == ["blue", "green", "red"]
    assert {k: len(v) for k, v in a.splits.items()} == {"train": 24, "val": 12, "test": 12}
    for split in ("val", "test"):
        assert a.class_counts(split) == {"blue": 4, "green": 4, "red": 4}
        assert np.array_equal(a.splits[split], b.splits[split])
    everything = np.concatenate(list(a.splits.values()))
    assert len(np.unique(everything)) == len(a.refs) == 48


def test_given_val_folder_becomes_test_and_val_is_carved_from_train(tmp_path):
    make_image_folder(tmp_path / "train", {"ant": (90, 60, 30), "bee": (200, 180, 40)}, per_class=10)
    make_image_folder(tmp_path / "val", {"ant": (90, 60, 30), "bee": (200, 180, 40)}, per_class=4)
    source = open_image_source(str(tmp_path), SplitSettings(0.2, 0.15, 0))
    assert len(source.splits["test"]) == 8
    assert all("/val/" in source.refs[i] for i in source.splits["test"])
    assert len(source.splits["val"]) == 4 and len(source.splits["train"]) == 16
    assert any("untouched test" in note for note in source.notes)


def test_manifest_with_split_and_multilabel(tmp_path, image_folder):
    paths = sorted(str(p) for p in image_folder.rglob("*.png"))[:12]
    pl.DataFrame({
        "file": paths,
        "tags": ["red|blue", "green"] * 6,
        "split": ["train"] * 8 + ["val"] * 2 + ["test"] * 2,
    }).write_csv(tmp_path / "m.csv")
    source = open_image_source(str(tmp_path / "m.csv"), path_column="file", label_column="tags")
    assert source.multilabel and source.labels == ["blue", "green", "red"]
    assert source.targets[0].tolist() == [1, 0, 1]
    assert [len(source.splits[s]) for s in ("train", "val", "test")] == [8, 2, 2]
    assert source.load(0).size == (24, 24)


def test_npz_keeps_official_splits_and_grey_images(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 20), ("val", 6), ("test", 8)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1).astype(np.uint8)
    np.savez(tmp_path / "d.npz", **arrays)
    source = open_image_source(str(tmp_path / "d.npz"))
    assert [len(source.splits[s]) for s in ("train", "val", "test")] == [20, 6, 8]
    assert source.labels == ["0", "1"] and source.load(0).mode == "RGB"


def test_builtin_digits():
    source = open_image_source("builtin:digits")
    assert len(source.refs) == 1797 and len(source.labels) == 10
    assert np.asarray(source.load(0)).max() > 200  # 0..16 rescaled to 0..255


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "no such file or folder"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "no class subfolders"),
    (lambda p: make_image_folder(p / "one", {"only": (1, 2, 3)}, per_class=4), "only one class"),
    (lambda p: (p / "x.txt").write_text("hi") and p / "x.txt", "expected an image folder"),
])
def test_unusable_data_is_one_clear_error(tmp_path, make, message):
    with pytest.raises(DataError, match=message):
        open_image_source(str(make(tmp_path)))


def test_corrupt_image_error_names_the_file(tmp_path):
    from deepapps.core.runtime.images import open_image

    bad = tmp_path / "bad.jpg"
    good = tmp_path / "good.jpg"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(good)
    bad.write_bytes(good.read_bytes()[:200])  # truncated JPEG
    with pytest.raises(DataError, match=f"{bad}: corrupt or truncated"):
        open_image(bad)
