"""Data fingerprints (file, folder, builtin) and `evaluate --split auto`: test on the training data,
all on other data, the path when the model has no fingerprint."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest

from deepapps.core.contract import Provenance
from deepapps.core.data import fingerprint as fp
from deepapps.core.data.fingerprint import fingerprint, same_data, same_path
from deepapps.core.errors import ConfigError
from deepapps.core.runtime.evaluation import choose_split, evaluation_head, with_choice


def test_a_file_is_known_by_size_and_its_first_and_last_mib(tmp_path, monkeypatch):
    monkeypatch.setattr(fp, "HEAD_BYTES", 4)
    a = tmp_path / "a.csv"
    a.write_bytes(b"0123456789abcdef")
    first = fingerprint(a)
    assert first["kind"] == "file" and first["size"] == 16 and first["path"] == str(a.resolve())
    copy = tmp_path / "sub" / "copy.csv"
    copy.parent.mkdir()
    shutil.copy(a, copy)
    assert same_data(fingerprint(copy), first)  # where it lies does not matter
    a.write_bytes(b"0123X56789abcdef")
    assert same_data(fingerprint(a), first)  # the middle is not read (fast on huge files) ...
    a.write_bytes(b"0123456789abcdeF")
    assert not same_data(fingerprint(a), first)  # ... the end is
    a.write_bytes(b"0123456789abcdef0")
    assert not same_data(fingerprint(a), first)  # and the size


def test_a_folder_is_known_by_its_files_and_their_sizes(tmp_path):
    root = tmp_path / "images"
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "1.png").write_bytes(b"x" * 10)
    (root / "dog").mkdir()
    (root / "dog" / "2.png").write_bytes(b"y" * 20)
    first = fingerprint(root)
    assert first["kind"] == "folder" and first["files"] == 2 and first["size"] == 30
    shutil.copytree(root, tmp_path / "copy")
    assert same_data(fingerprint(tmp_path / "copy"), first)
    (root / "dog" / "3.png").write_bytes(b"z")
    assert not same_data(fingerprint(root), first)


def test_builtin_and_missing_data():
    assert fingerprint("builtin:digits") == {"path": "builtin:digits", "kind": "builtin",
                                             "sha256": fingerprint("builtin:digits")["sha256"]}
    missing = fingerprint("/no/such/data.csv")
    assert missing == {"path": "/no/such/data.csv", "kind": "missing"}
    assert same_data(missing, missing) is None  # nothing to compare: the caller compares paths
    assert same_path("builtin:digits", "builtin:digits") and not same_path("builtin:digits", "digits")


def _model(data: dict, path: str | None) -> SimpleNamespace:
    train = Provenance(data=data, data_config={"path": path} if path else {})
    return SimpleNamespace(contract=SimpleNamespace(train=train))


def test_auto_split_is_test_on_the_training_data_and_all_on_other_data(tmp_path):
    train, other = tmp_path / "train.csv", tmp_path / "other.csv"
    train.write_text("a,b\n1,2\n")
    other.write_text("a,b\n3,4\n")
    model = _model({"fingerprint": fingerprint(train)}, str(train))
    assert choose_split(model, str(train)) == ("test", "auto: the model's training data (same fingerprint): "
                                                       "the test split fit held out")
    split, why = choose_split(model, str(other))
    assert split == "all" and why == "auto: not the model's training data (other fingerprint): every item"
    shutil.copy(train, tmp_path / "copy.csv")
    assert choose_split(model, str(tmp_path / "copy.csv"))[0] == "test"  # a copy is the training data
    train.write_text("a,b\n1,2\n5,6\n")  # rows added since fit: other data
    assert choose_split(model, str(train))[0] == "all"
    for given in ("all", "train", "val", "test"):
        assert choose_split(model, str(other), given) == (given, "given")
    with pytest.raises(ConfigError, match="--split tests: choose auto, all, train, val or test"):
        choose_split(model, str(other), "tests")


def test_a_model_without_a_fingerprint_compares_the_path(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("a,b\n1,2\n")
    old = _model({"source": str(train)}, str(train))  # made before fit stored fingerprints
    assert choose_split(old, str(tmp_path / "." / "train.csv")) == (
        "test", "auto: the model's training data (same path): the test split fit held out")
    assert choose_split(old, str(tmp_path / "other.csv"))[0] == "all"
    assert choose_split(_model({}, None), "builtin:digits")[0] == "all"  # an imported model names no data


def test_the_json_head_and_split_chosen_come_first(tmp_path):
    metrics = evaluation_head("all", "builtin:digits", 7) | {"accuracy": 1.0}
    assert list(metrics) == ["split", "n", "data", "fingerprint", "accuracy"]
    assert list(with_choice(metrics, "given")) == ["split", "split_chosen", "n", "data", "fingerprint", "accuracy"]
