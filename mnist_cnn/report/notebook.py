"""What the notebook (../shared/seed/mnist_cnn_notebook.txt) reported, per task.

Single runs, printed by the notebook's ``model.evaluate`` cells (In [8], [12],
[15], [28], [29], [35], [39], [53]) and ``model.summary()`` tables; the report
sets our figures beside these.
"""

from __future__ import annotations

from typing import NamedTuple


class NotebookResult(NamedTuple):
    test_accuracy: float
    test_loss: float
    param_count: int
    epochs: int


NOTEBOOK: dict[str, NotebookResult] = {
    "task1": NotebookResult(0.9117000102996826, 0.3053633717060089, 185_162, 5),
    "task2": NotebookResult(0.7851999998092651, 1.2022727409362792, 1_666_282, 5),
    # The "max pooling" cell never added its pooling layers: task2, 5 + 10 epochs.
    "task2_15_epochs": NotebookResult(0.911899983882904, 0.30378393540382387, 1_666_282, 15),
    "task2_one_conv": NotebookResult(0.8673999905586243, 0.5401181463241577, 2_361_546, 5),
    "task2_three_conv": NotebookResult(0.11349999904632568, 2.3032748836517336, 1_102_090, 5),
    "task3": NotebookResult(0.9728000164031982, 0.09087087419256568, 1_666_282, 5),
    "task4_sgd": NotebookResult(0.9843000173568726, 0.047628800696111286, 154_474, 5),
    "task4_adam": NotebookResult(0.9783999919891357, 0.07575280610376649, 154_474, 5),
}

# The same task2 model, evaluated after its first 5 epochs in the "max pooling"
# cell (In [23]): a second single run of task2, showing the notebook's own noise.
TASK2_RERUN = NotebookResult(0.800599992275238, 0.8912634126663208, 1_666_282, 5)
# The notebook trained on all of MNIST's training images.
NOTEBOOK_TRAIN_IMAGES = 60_000
