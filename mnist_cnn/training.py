"""The ``train`` stage's core: train one task of the study, once per seed.

Writes ``<out>/seed_<s>/model.keras`` and its per-epoch log (dvclive: loss,
accuracy, seconds per epoch) for each seed, and ``<out>/config.json``, the
effective config and environment the models were trained with. ``<out>``
appears atomically once every seed is done.

While a seed trains, its dvclive log lives in a folder of its own beside a
``dvc.yaml`` that dvclive keeps (``<live>/dvc.yaml``, listing each seed's
plots), so ``dvc plots show`` and DVC's VS Code extension show the curves
epoch by epoch; the folder goes once the models are published.

Interrupted training resumes. Work in progress lives in a work folder outside
DVC's outputs: after every epoch a checkpoint (weights and optimizer state,
with the config, code and data it was trained with) replaces the previous one
atomically. A later run resumes it with ``fit(initial_epoch=...)`` only if all
three are unchanged; each epoch's shuffle depends only on (seed, epoch), so
the result equals an uninterrupted run's.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from dvclive import Live
from dvclive.keras import DVCLiveCallback

from mnist_cnn.dataset import load_split
from mnist_cnn.io import atomic_dir, atomic_path, write_json
from mnist_cnn.layout import CONFIG, LIVE, MODEL, seed_dir
from mnist_cnn.models import compile_model
from mnist_cnn.params import TrainConfig, flatten
from mnist_cnn.provenance import environment, file_digest, result_code

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"  # in a seed's work folder: weights + what they were trained with
WEIGHTS = "weights.weights.h5"
META = "meta.json"
# At most this many batches per call into TensorFlow (less Python overhead per step).
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
    # reshape: no epochs left (killed after the last checkpoint) is an empty run, not an error
    orders = np.array([epoch_order(len(x), seed, e) for e in range(first_epoch, epochs)],
                      dtype=np.int64).reshape(-1, len(x))
    return (tf.data.Dataset.from_tensor_slices(orders)
            .flat_map(lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
            .map(lambda idx: (tf.gather(x_all, idx), tf.gather(y_all, idx)),
                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE))


def steps_per_execution(steps_per_epoch: int) -> int:
    """The largest divisor of ``steps_per_epoch`` up to MAX_STEPS_PER_EXECUTION.

    The input runs epoch after epoch without a break, so a call must never
    straddle two epochs: with a divisor the arithmetic, the per-epoch logs and
    the checkpoints are exactly those of one step per call."""
    return max(d for d in range(1, MAX_STEPS_PER_EXECUTION + 1) if steps_per_epoch % d == 0)


class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` to the epoch's logs. Keras hands the same dict to
    every callback, so dvclive (placed after this one) records it with loss and
    accuracy."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start


class Checkpoint(keras.callbacks.Callback):
    """After each epoch, the weights (optimizer state included) and ``meta``
    (what they were trained with) replace the previous checkpoint as one
    folder, atomically: a kill at any moment leaves the old one or the new one."""

    def __init__(self, folder: Path, meta: dict):
        super().__init__()
        self.folder, self.meta = folder, meta

    def on_epoch_end(self, epoch, logs=None):
        with atomic_dir(self.folder) as tmp:
            self.model.save_weights(tmp / WEIGHTS)
            write_json(tmp / META, {**self.meta, "epochs_done": epoch + 1})


def _differences(saved: dict, current: dict) -> list[str]:
    """``["config.spec.epochs 3 -> 5", ...]``: what differs between two metas."""
    old, new = flatten(saved), flatten(current)
    return [f"{key} {json.dumps(old.get(key))} -> {json.dumps(new.get(key))}"
            for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)]


def resumable_epochs(work: Path, live: Path, meta: dict) -> int:
    """Epochs the checkpoint in ``work`` has done, if it was trained with
    ``meta`` (config, code, data); else discard the seed's work and its log
    (``live``) and return 0."""
    saved = work / CHECKPOINT / META
    old = json.loads(saved.read_text()) if saved.is_file() else None
    changed = _differences({k: old.get(k) for k in meta}, meta) if old else []
    if old is None or changed:  # nothing a later epoch could build on
        if changed:
            log.info("discarding the checkpoint in %s (epoch %d): trained with other %s",
                     work, old["epochs_done"], "; ".join(changed[:5]))
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(live, ignore_errors=True)
        return 0
    return old["epochs_done"]


def rewind_log(live_dir: Path, epochs: int) -> None:
    """Drop dvclive rows of epochs >= ``epochs``: the process may have died
    after logging an epoch but before checkpointing it."""
    for tsv in (live_dir / "plots").rglob("*.tsv"):
        lines = tsv.read_text().splitlines(keepends=True)
        kept = [lines[0]] + [row for row in lines[1:] if int(row.split("\t", 1)[0]) < epochs]
        tsv.write_text("".join(kept))


def train_one(cfg: TrainConfig, seed: int, x: np.ndarray, y: np.ndarray, work: Path,
              live: Path, meta: dict, watch: list[keras.callbacks.Callback] = ()) -> None:
    """Train ``cfg``'s model with ``seed``; the model ends up in ``work``, its
    per-epoch log in ``live``. Resumes from ``work``'s checkpoint if it was
    trained with ``meta``. ``watch``: callbacks that only look (progress)."""
    epochs = cfg.spec.epochs
    steps = math.ceil(len(x) / cfg.batch_size)
    # Fresh layer names: the same model file from any process (and no
    # gc.collect(), a third of a second with TensorFlow loaded).
    keras.utils.clear_session(free_memory=False)
    set_determinism(seed)
    model = compile_model(cfg.spec, cfg.precision, cfg.task, steps_per_execution(steps))
    start = resumable_epochs(work, live, meta)
    if start:
        log.info("%s seed %d: resuming after epoch %d of %d", cfg.task, seed, start, epochs)
        model.optimizer.build(model.trainable_variables)  # so its state loads too
        model.load_weights(work / CHECKPOINT / WEIGHTS)
        rewind_log(live, start)
    logger = Live(dir=str(live), resume=start > 0, dvcyaml=str(live.parent / "dvc.yaml"),
                  save_dvc_exp=False, report=None)
    logger.step = start  # dvclive's own resume guesses from its summary; we know
    model.fit(training_data(x, y, cfg.batch_size, seed, start, epochs), shuffle=False,
              epochs=epochs, initial_epoch=start, steps_per_epoch=steps, verbose=0,
              # dvclive logs before the checkpoint is taken: see rewind_log.
              callbacks=[EpochTimer(), DVCLiveCallback(live=logger),
                         Checkpoint(work / CHECKPOINT, meta), *watch])
    with atomic_path(work / MODEL) as tmp:  # its presence means "this seed is done"
        model.save(tmp)


def effective_config(cfg: TrainConfig, model: keras.Model, n_images: int) -> dict:
    return {
        **cfg.model_dump(mode="json"),
        "train_images": n_images,
        "param_count": model.count_params(),
        "layers": [{"name": layer.name, "class": type(layer).__name__,
                    "output_shape": list(layer.output.shape[1:]),
                    "params": layer.count_params()} for layer in model.layers],
        "environment": environment(),
    }


def train(cfg: TrainConfig, data: Path, out: Path, work: Path, live: Path,
          watch: Callable[[int], list[keras.callbacks.Callback]] | None = None) -> None:
    """Train every seed of ``cfg`` on the prepared ``data``; publish to ``out``.
    ``work`` keeps the work in progress (checkpoints, finished seeds) until
    then, ``live`` the seeds' dvclive logs. ``watch(k)``: callbacks that only
    look at the k-th seed's training (1-based)."""
    x, y = load_split(data, "train")
    meta = {"config": cfg.model_dump(mode="json"), "code": result_code(),
            "data": {name: file_digest(Path(data) / f"train_{name}.npy") for name in "xy"}}
    for k, seed in enumerate(cfg.seeds, start=1):
        folder, log_dir = seed_dir(work, seed), seed_dir(live, seed)
        if (folder / MODEL).is_file() and \
                resumable_epochs(folder, log_dir, meta) == cfg.spec.epochs:
            log.info("%s seed %d: already trained in an earlier attempt", cfg.task, seed)
            continue
        log.info("training %s, seed %d, on %d images", cfg.task, seed, len(x))
        train_one(cfg, seed, x, y, folder, log_dir, meta, watch(k) if watch else [])
    model = keras.models.load_model(seed_dir(work, cfg.seeds[0]) / MODEL)
    with atomic_dir(out) as staging:
        for seed in cfg.seeds:
            shutil.copytree(seed_dir(work, seed), seed_dir(staging, seed),
                            ignore=shutil.ignore_patterns(CHECKPOINT))
            shutil.copytree(seed_dir(live, seed), seed_dir(staging, seed) / LIVE)
        write_json(staging / CONFIG, effective_config(cfg, model, len(x)))
    shutil.rmtree(work)
    shutil.rmtree(live)
