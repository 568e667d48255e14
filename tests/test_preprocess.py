"""The preprocess stage's core: the notebook's preprocessing, stored so that
the same data always gives the same bytes."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_cnn.dataset import DataError, load_split, prepare
from mnist_cnn.mnist import RAW_LAYOUT, preprocess, read_raw


@pytest.fixture
def raw(tmp_path):
    """An mnist.npz with MNIST's layout: image i is filled with i % 256, label i % 10."""
    arrays = {}
    for name, (shape, dtype) in RAW_LAYOUT.items():
        index = np.arange(shape[0])
        arrays[name] = (np.broadcast_to((index % 256)[:, None, None], shape).astype(dtype)
                        if name.startswith("x") else (index % 10).astype(dtype))
    path = tmp_path / "mnist.npz"
    np.savez(path, **arrays)
    return path


def test_prepare_scales_reshapes_and_one_hot_encodes():
    x, y = prepare(np.full((3, 28, 28), 255, np.uint8), np.array([0, 9, 3], np.uint8))
    assert x.shape == (3, 28, 28, 1) and x.dtype == np.float32 and x.max() == 1.0
    assert y.dtype == np.float32 and y.argmax(axis=1).tolist() == [0, 9, 3]
    assert y.sum() == 3


def test_preprocess_takes_the_first_images(raw, tmp_path):
    out = tmp_path / "prepared"
    preprocess(raw, out, train_size=20, test_size=5)
    x, y = load_split(out, "train")
    assert x.shape == (20, 28, 28, 1)
    assert np.allclose(x[:, 0, 0, 0], np.arange(20) / 255)
    assert y.argmax(axis=1).tolist() == [i % 10 for i in range(20)]
    assert load_split(out, "test")[0].shape == (5, 28, 28, 1)


def test_the_same_data_gives_the_same_bytes(raw, tmp_path):
    """DVC hashes the prepared folder: a rerun must not make every task stale."""
    for name in ("a", "b"):
        preprocess(raw, tmp_path / name, 30, 10)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["test_x.npy", "test_y.npy", "train_x.npy", "train_y.npy"]
    for file in files:
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()


def test_a_bad_raw_file_is_named_and_writes_nothing(tmp_path):
    bad = tmp_path / "mnist.npz"
    np.savez(bad, x_train=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match=r"mnist.npz: missing arrays \['x_test', 'y_test', "
                                        r"'y_train'\]"):
        preprocess(bad, tmp_path / "prepared", None, None)
    assert not (tmp_path / "prepared").exists()


def test_a_missing_split_says_what_to_run(tmp_path):
    with pytest.raises(DataError, match="train_x.npy: no such file; run the preprocess stage"):
        load_split(tmp_path, "train")


def test_labels_out_of_range_are_refused(raw, tmp_path):
    with np.load(raw) as npz:
        arrays = dict(npz)
    arrays["y_test"][0] = 10
    np.savez(raw, **arrays)
    with pytest.raises(DataError, match="y_test has labels outside 0-9"):
        read_raw(raw)
