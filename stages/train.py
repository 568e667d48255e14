"""Stage ``train@<task>``: train one task of the study, once per seed.

Writes ``<out>/seed_<s>/model.keras`` and its per-epoch log (dvclive: loss,
accuracy, seconds per epoch) for each seed, and ``<out>/config.json``, the
effective config the models were trained with. ``<out>`` appears atomically
once every seed is done.

Interrupted training resumes: work in progress lives in ``.train_state/<task>``
(outside DVC's outputs); Keras' BackupAndRestore saves the weights and
optimizer state after every epoch, and each epoch's shuffle depends only on
(seed, epoch), so a resumed run ends with the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import shutil
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from dvclive import Live
from dvclive.keras import DVCLiveCallback

from stages.cli import run
from stages.config import Params, load_params
from stages.io import atomic_dir, atomic_path, write_json
from stages.layout import CONFIG, LIVE, MODEL, seed_dir
from stages.mnist import load_split
from stages.models import compile_model

log = logging.getLogger(__name__)

STATE_ROOT = Path(".train_state")
BACKUP = "backup"
# At most this many batches per call into TensorFlow (less Python overhead
# per step; see steps_per_execution).
MAX_STEPS_PER_EXECUTION = 32


def set_determinism(seed: int) -> None:
    """Same seed, same weights and metrics on the same machine."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order in which epoch ``epoch`` visits the ``n`` training images.

    NumPy's generator, not TensorFlow's stateless ops: Keras draws its weight
    initialisation from TensorFlow's stateless streams keyed [seed, 0],
    [seed, 1], ..., so a shuffle keyed [seed, epoch] there would replay the
    initialisers' random bits and tie the data order to the initial weights
    (it did: task4_sgd lost up to 30 points of accuracy on some seeds).
    """
    return np.random.default_rng([seed, epoch]).permutation(n)


def training_data(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int,
                  first_epoch: int, epochs: int) -> tf.data.Dataset:
    """Batches for epochs ``first_epoch..epochs-1``, back to back.

    Epoch e visits the images in an order that depends only on (seed, e), so
    a run resumed at epoch e sees exactly what an uninterrupted one would.
    """
    x_all, y_all = tf.constant(x), tf.constant(y)
    # reshape: no epochs left (killed after the last backup) is an empty run, not an error
    orders = np.array([epoch_order(len(x), seed, e) for e in range(first_epoch, epochs)],
                      dtype=np.int64).reshape(-1, len(x))
    return (tf.data.Dataset.from_tensor_slices(orders)
            .flat_map(lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
            .map(lambda idx: (tf.gather(x_all, idx), tf.gather(y_all, idx)),
                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE))


class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` to the epoch's logs. Keras hands the same dict to
    every callback, so dvclive (placed after this one) records it with loss and
    accuracy."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start


class Backup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore whose checkpoint survives a kill at any moment.

    Keras writes the weights, then the epoch number, in place: a SIGKILL while
    saving leaves a torn weights file or a pair from different epochs (seen in
    tests/test_faults.py). Here a checkpoint is one file named after its
    epoch, written beside and renamed into place; older ones are removed after.
    """

    def _checkpoints(self) -> list[tuple[int, Path]]:
        found = [(int(p.name.split("-")[1].split(".")[0]), p)
                 for p in Path(self.backup_dir).glob("epoch-*.weights.h5")]
        return sorted(found)

    def completed_epochs(self) -> int:
        """Epochs the saved state has completed (0 if there is none)."""
        found = self._checkpoints()
        return found[-1][0] if found else 0

    def _save_model(self):
        dest = Path(self.backup_dir) / f"epoch-{self._current_epoch:04d}.weights.h5"
        with atomic_path(dest) as tmp:  # weights and optimizer state
            self.model.save_weights(tmp, overwrite=True)
        for _, old in self._checkpoints()[:-1]:
            old.unlink(missing_ok=True)

    def _load_model(self):
        found = self._checkpoints()
        if not found:
            return
        epoch, path = found[-1]
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(path)
        self.model._initial_epoch = epoch

    def on_train_begin(self, logs=None):
        self._load_model()


def steps_per_execution(steps_per_epoch: int) -> int:
    """The largest divisor of ``steps_per_epoch`` up to MAX_STEPS_PER_EXECUTION.

    The input runs epoch after epoch without a break, so a call must never
    straddle two epochs: with a divisor the arithmetic, the per-epoch logs and
    the checkpoints are exactly those of one step per call."""
    return max(d for d in range(1, MAX_STEPS_PER_EXECUTION + 1) if steps_per_epoch % d == 0)


def rewind_log(live_dir: Path, epochs: int) -> None:
    """Drop dvclive rows of epochs >= ``epochs``: the process may have died
    after logging an epoch but before backing it up."""
    for tsv in (live_dir / "plots").rglob("*.tsv"):
        lines = tsv.read_text().splitlines(keepends=True)
        kept = [lines[0]] + [row for row in lines[1:] if int(row.split("\t", 1)[0]) < epochs]
        tsv.write_text("".join(kept))


def train_one(name: str, params: Params, seed: int, x, y, work: Path) -> keras.Model:
    """Train task ``name`` with ``seed``; model and log end up in ``work``.
    Resumes from ``work`` if an earlier attempt was interrupted."""
    task = params.task(name)
    batch_size = params.batch_size(name)
    steps = math.ceil(len(x) / batch_size)
    keras.utils.clear_session()  # fresh layer names: same model file from any process
    set_determinism(seed)
    model = compile_model(name, task, params.train.precision, steps_per_execution(steps))
    backup = Backup(str(work / BACKUP))
    start = backup.completed_epochs()
    if start:
        log.info("%s seed %d: resuming after epoch %d of %d", name, seed, start, task.epochs)
        rewind_log(work / LIVE, start)
    live = Live(dir=str(work / LIVE), resume=start > 0, dvcyaml=None, save_dvc_exp=False,
                report=None)
    live.step = start  # dvclive's own resume guesses from its summary; we know
    model.fit(training_data(x, y, batch_size, seed, start, task.epochs), shuffle=False,
              epochs=task.epochs, steps_per_epoch=steps, verbose=2,
              # dvclive logs before the backup is taken: see rewind_log.
              callbacks=[EpochTimer(), DVCLiveCallback(live=live), backup])
    with atomic_path(work / MODEL) as tmp:  # its presence means "this seed is done"
        model.save(tmp)
    return model


def effective_config(name: str, params: Params, model, n_images: int) -> dict:
    return {
        "task": name,
        "spec": params.task(name).model_dump(mode="json"),
        "batch_size": params.batch_size(name),
        "precision": params.train.precision,
        "seeds": params.seed_list,
        "train_images": n_images,
        "param_count": model.count_params(),
        "layers": [{"name": layer.name, "class": type(layer).__name__,
                    "output_shape": list(layer.output.shape[1:]),
                    "params": layer.count_params()} for layer in model.layers],
        "versions": {"keras": keras.__version__, "tensorflow": tf.__version__},
    }


def _fingerprint(name: str, params: Params, data: Path) -> str:
    """What an interrupted attempt must share with this one to be resumed."""
    h = hashlib.sha256(json.dumps({
        "spec": params.task(name).model_dump(mode="json"),
        "batch_size": params.batch_size(name), "train": params.train.model_dump(),
        "seeds": params.seed_list,
        "keras": keras.__version__, "tensorflow": tf.__version__}, sort_keys=True).encode())
    for file in (data / "train.npz", Path(__file__), Path(__file__).with_name("models.py")):
        with open(file, "rb") as fh:
            h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()


def train(name: str, params: Params, data: Path, out: Path, state_root: Path = STATE_ROOT):
    x, y = load_split(data, "train")
    state = state_root / name
    fingerprint = _fingerprint(name, params, data)
    marker = state / "fingerprint"
    if not marker.is_file() or marker.read_text() != fingerprint:
        shutil.rmtree(state, ignore_errors=True)  # stale or no earlier attempt
        state.mkdir(parents=True)
        marker.write_text(fingerprint)
    for seed in params.seed_list:
        work = seed_dir(state, seed)
        if (work / MODEL).is_file():
            log.info("%s seed %d: already trained in an earlier attempt", name, seed)
            continue
        log.info("training %s, seed %d, on %d images", name, seed, len(x))
        train_one(name, params, seed, x, y, work)
    model = keras.models.load_model(seed_dir(state, params.seed) / MODEL)
    with atomic_dir(out) as staging:
        for seed in params.seed_list:
            shutil.copytree(seed_dir(state, seed), seed_dir(staging, seed),
                            ignore=shutil.ignore_patterns(BACKUP))
        write_json(staging / CONFIG, effective_config(name, params, model, len(x)))
    shutil.rmtree(state)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", help="task name, a key of `tasks` in params.yaml")
    parser.add_argument("--data", type=Path, required=True, help="prepared data folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder for this task")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--state", type=Path, default=STATE_ROOT,
                        help="where interrupted training is kept for resuming")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    params.task(args.task)  # an unknown task name fails here, before any work
    train(args.task, params, args.data, args.out, args.state)


if __name__ == "__main__":
    sys.exit(run(main))
