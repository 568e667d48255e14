"""Check a params file and say exactly what is wrong with it.

Every stage loads its params through :func:`load_params` before any work, so
a bad value is reported before a model is built or a file is written: all
problems at once, each with its key path and what was expected
(``tasks.task1.optimizer.learnig_rate: unknown key (did you mean
'learning_rate'?)``). Beyond types and ranges, the train stage and ``make
check-params`` build every task's layers on the 28x28x1 input with Keras
(shapes and parameter counts are Keras' own) and name the task, the layer
and the key of what does not fit; stages that do not train skip that, so
they never load TensorFlow.

``python -m mnist_cnn.cli.checks [params.yaml]`` (``make check-params``)
checks a file without running anything.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mnist_cnn.cli import quiet
from mnist_cnn.dataset import IMAGE_SHAPE, NUM_CLASSES
from mnist_cnn.layers import LAYERS
from mnist_cnn.optimizers import OPTIMIZERS, ExponentialDecay
from mnist_cnn.params import PARAMS_FILE, TASK_NAME, Data, Params, Task, TrainDefaults, read

MAX_SEED = 2**32 - 1  # NumPy's generators refuse larger seeds
MAX_MODEL_PARAMS = 50_000_000  # far above the study's largest (2.4 M): a typo, not a model
# A task's name becomes folder, file and DVC stage names (`.work/evaluate@<task>.holder`);
# a file name has at most 255 bytes.
MAX_TASK_NAME = 64


class ParamsError(ValueError):
    """One or more problems in a params file; ``problems`` lists them all."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s):\n{lines}")


# --- pydantic's errors, in the words of this project ----------------------------

_FIELDS = sorted({f for m in (*LAYERS.values(), *OPTIMIZERS.values(), ExponentialDecay,
                              Task, Data, TrainDefaults, Params)
                  for f in m.model_fields})
_KINDS = {"layer_type": ("type", "layer type", LAYERS),
          "optimizer_type": ("name", "optimizer", OPTIMIZERS)}

_PHRASES = [
    ("input should be greater than or equal to", "must be >="),
    ("input should be greater than", "must be >"),
    ("input should be less than or equal to", "must be <="),
    ("input should be less than", "must be <"),
    ("input should be a valid number", "must be a number"),
    ("input should be a valid integer", "must be an integer"),
    ("input should be a valid boolean", "must be true or false"),
    ("input should be a valid string", "must be a string"),
    ("input should be a valid dictionary", "must be a mapping"),
    ("input should be a finite number", "must be a finite number"),
    ("input should be", "must be"),
    ("list should have", "must have"),
    ("dictionary should have", "must have"),
]


def _format_error(err: dict, prefix: tuple = ()) -> str:
    raw_loc = [str(p) for p in (*prefix, *err["loc"])]
    loc = [p for p in raw_loc if ":" not in p and p != "[key]"]
    key = ".".join(loc) or "<top level>"
    kind = err["type"]
    got = err.get("input")
    if "[key]" in raw_loc:  # a task's name
        return (f"{key}: not a valid task name (letters, digits and _, starting with a "
                f"letter; it becomes a folder and a DVC stage name), got {got!r}")
    if kind == "extra_forbidden":
        hint = difflib.get_close_matches(loc[-1], _FIELDS, n=1)
        return f"{key}: unknown key" + (f" (did you mean '{hint[0]}'?)" if hint else "")
    if kind == "missing":
        return f"{key}: required key is missing"
    if kind in _KINDS:  # a registry's member named by its "type" or "name"
        field, what, registry = _KINDS[kind]
        got = got.get(field) if isinstance(got, dict) else got
        return (f"{key}.{field}: unknown {what}; expected one of {sorted(registry)}, "
                f"got {got!r}")
    msg = err["msg"].removeprefix("Value error, ")
    msg = msg[0].lower() + msg[1:]
    for long, short in _PHRASES:
        msg = msg.replace(long, short)
    if isinstance(got, (dict, list)):
        return f"{key}: {msg}"
    return f"{key}: {msg}, got {got!r}"


# --- what the libraries would reject later ----------------------------------------


def _dims(shape) -> str:
    return "x".join(str(d) for d in shape[1:])


def architecture_problems(name: str, task: Task) -> list[str]:
    """Build the task's layers on the 28x28x1 input as Keras does (imported
    here: only what trains or is asked to check pays for TensorFlow), and
    name the layer and key of each problem. Weights are never allocated: a
    typo's billion parameters are counted, not built."""
    quiet.import_tensorflow()
    import keras

    key = f"tasks.{name}.layers"
    shape, weights, problems = (None, *IMAGE_SHAPE), 0, []
    with keras.StatelessScope(initialize_variables=False):
        for i, spec in enumerate(task.layers):
            where, layer = f"{key}.{i}", spec.build("float32")
            try:
                out = layer.compute_output_shape(shape)
            except ValueError as exc:
                if spec.window and len(shape) == 4:
                    size = getattr(spec, spec.window)
                    problems.append(f"{where}.{spec.window}: {size} does not fit this layer's "
                                    f"{shape[1]}x{shape[2]} input (the layers before it shrink "
                                    "28x28)")
                else:
                    problems.append(f"{where}: {spec.type} cannot take the previous layer's "
                                    f"output of shape {_dims(shape)} (Keras: "
                                    f"{str(exc).splitlines()[0]})")
                break
            layer.build(shape)
            weights += layer.count_params()
            shape = out
    # Drop the variables it never initialised; not gc.collect() as well: with
    # TensorFlow loaded that costs a third of a second a call.
    keras.utils.clear_session(free_memory=False)
    last = task.layers[-1]
    if not problems and not (tuple(shape[1:]) == (NUM_CLASSES,)
                             and getattr(last, "activation", None) == "softmax"):
        problems.append(f"{key}.{len(task.layers) - 1}: the model's output is {_dims(shape)} "
                        f"from {last.type}; it must be {NUM_CLASSES} class probabilities: a "
                        f"last layer {{type: dense, units: {NUM_CLASSES}, activation: softmax}}"
                        " after a flatten layer")
    if weights > MAX_MODEL_PARAMS:
        problems.append(f"{key}: the model would have {weights:,} parameters; at most "
                        f"{MAX_MODEL_PARAMS:,} (a typo in units or filters?)")
    return problems


def seed_problems(seed: Any, seeds: Any) -> list[str]:
    if isinstance(seed, int) and isinstance(seeds, int) and seed + seeds - 1 > MAX_SEED:
        return [f"seeds: the last run's seed, seed + seeds - 1 = {seed + seeds - 1}, "
                f"exceeds {MAX_SEED}, the largest seed NumPy accepts"]
    return []


# --- the whole file ----------------------------------------------------------------


def validate(data: Any, source: str = str(PARAMS_FILE),
             shapes: bool | Collection[str] = False) -> Params:
    """Validate parsed params; raise ParamsError listing every problem. With
    ``shapes``, also build the layers of every task (True) or of the tasks
    it names with Keras, which loads TensorFlow: ``make check-params`` checks
    every task, a train stage its own."""
    if not isinstance(data, dict):
        raise ParamsError(source, ["expected a mapping of sections at the top level"])
    problems = []
    try:
        params = Params.model_validate(data)
    except ValidationError as exc:
        params = None
        problems += [_format_error(e) for e in exc.errors()]
    tasks = data.get("tasks")
    for name, spec in (tasks.items() if shapes and isinstance(tasks, dict) else ()):
        if shapes is not True and name not in shapes:
            continue
        try:
            task = Task.model_validate(spec)
        except ValidationError:
            continue  # reported above
        problems += architecture_problems(name, task)
    problems += seed_problems(data.get("seed"), data.get("seeds", 1))
    problems += [task_name_problem(name) for name in (tasks if isinstance(tasks, dict) else ())
                 if isinstance(name, str) and len(name) > MAX_TASK_NAME]
    if problems:
        raise ParamsError(source, problems)
    return params


def task_name_problem(name: str) -> str:
    return (f"tasks.{name[:24]}...: a task name has at most {MAX_TASK_NAME} characters (it "
            f"names folders, files and DVC stages), this one {len(name)}")


def _yaml_problem(exc: Exception) -> str:
    """DVC's reader wraps ruamel's error; ruamel's says where."""
    cause = exc.__cause__ or exc.__context__ or exc
    mark = getattr(cause, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(cause, "problem", None) or str(cause)
    return f"not valid YAML{where}: {problem}"


def read_params(path: str | Path, source: str | None = None) -> dict:
    """``path``'s content as DVC reads it; ParamsError, naming ``source`` (the
    path by default), if it cannot be read or parsed."""
    from dvc.exceptions import DvcException

    source = source or str(path)
    try:
        return read(path)
    except OSError as exc:
        raise ParamsError(source, [f"cannot read the file: {exc.strerror}"]) from None
    except DvcException as exc:
        raise ParamsError(source, [_yaml_problem(exc)]) from None


def load_params(path: str | Path = PARAMS_FILE,
                shapes: bool | Collection[str] = False) -> Params:
    """Read ``path`` as DVC does and validate it (``shapes``: see validate);
    ParamsError lists every problem."""
    return validate(read_params(path), str(path), shapes)


def check_task_name(name: str, params: Params, source: str = str(PARAMS_FILE)) -> str:
    """``name`` if it is one of ``params``' tasks; else ParamsError."""
    if not re.fullmatch(TASK_NAME, name) or name not in params.tasks:
        raise ParamsError(source, [f"tasks.{name}: no such task; defined: "
                                   f"{', '.join(params.tasks)}"])
    return name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_cnn.cli.checks",
        description="Check a params file as every stage does, listing every problem.")
    parser.add_argument("params", nargs="?", default=str(PARAMS_FILE))
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params, shapes=True)
    except ParamsError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{args.params}: OK ({len(params.tasks)} tasks: {', '.join(params.tasks)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
