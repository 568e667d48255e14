"""The train stage's input pipeline: every image once per epoch, a fresh
order each epoch, and the same batches whichever epoch a run starts from."""

from __future__ import annotations

import numpy as np

from mnist_cnn.training import training_data


def batches(ds) -> list[np.ndarray]:
    return [y.numpy().ravel() for _, y in ds]


def test_each_epoch_visits_every_image_once_in_a_new_order():
    x = np.zeros((10, 1), np.float32)
    y = np.arange(10, dtype=np.float32)
    got = np.concatenate(batches(training_data(x, y, 4, seed=3, first_epoch=0, epochs=2)))
    first, second = got[:10], got[10:]
    assert sorted(first) == sorted(second) == list(range(10))
    assert list(first) != list(second)


def test_a_resumed_run_sees_the_batches_an_uninterrupted_one_would():
    x = np.zeros((10, 1), np.float32)
    y = np.arange(10, dtype=np.float32)
    whole = batches(training_data(x, y, 4, seed=3, first_epoch=0, epochs=3))
    resumed = batches(training_data(x, y, 4, seed=3, first_epoch=1, epochs=3))
    assert [list(b) for b in resumed] == [list(b) for b in whole[3:]]  # 3 batches/epoch


def test_no_epochs_left_is_an_empty_dataset():
    x = np.zeros((10, 1), np.float32)
    assert batches(training_data(x, x[:, 0], 4, seed=3, first_epoch=2, epochs=2)) == []

