"""dvc.yaml declares exactly what determines each stage's outputs.

A dependency the code has but dvc.yaml omits is a silent caching bug: an edit
to it would never rerun the stage. One dvc.yaml lists but the results do not
depend on retrains for nothing: the command-line and message code (stages/,
mnist_cnn/cli/) is kept out, and library code never imports it. These checks
read the stages as DVC resolves them (foreach expanded) and the code's
imports as Python sees them.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import shlex
import subprocess
import sys

import pytest
from dvc.dependency.param import ParamsDependency
from dvc.repo import Repo

from mnist_cnn.provenance import PRESENTATION
from tests.conftest import ROOT, TASKS

with Repo(str(ROOT)) as _repo:
    STAGES = {s.addressing: {"cmd": s.cmd,
                             "deps": {str(d.def_path) for d in s.deps
                                      if not isinstance(d, ParamsDependency)},
                             "params": {p for d in s.deps if isinstance(d, ParamsDependency)
                                        for p in d.params},
                             "outs": {str(o.def_path) for o in s.outs}}
              for s in _repo.index.stages}
PACKAGES = ("mnist_cnn", "stages")
PRESENTATION_DIR = PRESENTATION.replace(".", "/") + "/"


def _module_file(name: str) -> str | None:
    for candidate in (f"{name.replace('.', '/')}.py", f"{name.replace('.', '/')}/__init__.py"):
        if (ROOT / candidate).is_file():
            return candidate
    return None


def imported_files(module: str) -> set[str]:
    """Files of this project that ``python -m <module>`` imports (packages'
    __init__ files included)."""
    seen: set[str] = set()
    todo = [_module_file(module)]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        parts = path.split("/")
        todo += [f for i in range(1, len(parts)) if (f := _module_file(".".join(parts[:i])))]
        for node in ast.walk(ast.parse((ROOT / path).read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            todo += [f for n in names if n.split(".")[0] in PACKAGES and (f := _module_file(n))]
    return seen


def result_code(module: str) -> set[str]:
    """What ``module`` imports of the library, without the presentation code."""
    return {f for f in imported_files(module)
            if f.startswith("mnist_cnn/") and not f.startswith(PRESENTATION_DIR)}


def stage_module(name: str) -> str:
    return re.search(r"python -m (\S+)", STAGES[name]["cmd"]).group(1)


def test_every_stage_of_the_design_exists():
    expected = {"download", "preprocess", "report",
                *(f"{kind}@{t}" for kind in ("train", "evaluate") for t in TASKS)}
    assert set(STAGES) == expected


@pytest.mark.parametrize("name", sorted(STAGES))
def test_code_deps_are_exactly_the_library_code_the_stage_imports(name):
    code_deps = {d for d in STAGES[name]["deps"] if d.endswith(".py")}
    assert code_deps == result_code(stage_module(name))


@pytest.mark.parametrize("module", ["stages.train", "stages.report"])
def test_the_stage_fingerprints_the_same_files_at_run_time(module):
    """The code a checkpoint and the input guard hash (modules loaded in the
    process) is the code dvc.yaml declares."""
    out = subprocess.run(
        [sys.executable, "-c", f"import {module}; from mnist_cnn.provenance import "
         "result_code; import json; print(json.dumps(sorted(result_code())))"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert set(json.loads(out.splitlines()[-1])) == result_code(module)


def test_library_code_never_imports_the_presentation_code():
    library = [p for p in (ROOT / "mnist_cnn").rglob("*.py")
               if not p.relative_to(ROOT).as_posix().startswith(PRESENTATION_DIR)]
    for path in library:
        module = path.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
        leaked = {f for f in imported_files(module.removesuffix(".__init__"))
                  if f.startswith((PRESENTATION_DIR, "stages/"))}
        assert not leaked, f"{path.relative_to(ROOT)} imports {leaked}"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_the_params_a_stage_reads_are_its_params_in_dvc_yaml(name):
    module = importlib.import_module(stage_module(name))
    task = name.partition("@")[2]
    assert {k.format(task=task) for k in module.PARAMS} == STAGES[name]["params"]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_paths_on_the_command_line_are_declared(name):
    """Every data path the command passes is a dep or an out of the stage, or
    the folder holding one (per-task stages get <folder>/<task>)."""
    stage = STAGES[name]
    paths = {a for a in shlex.split(stage["cmd"]) if a.startswith("data/")}
    declared = {p for p in stage["deps"] | stage["outs"] if p.startswith("data/")}
    folders = {p.rsplit("/", n)[0] for p in declared for n in (1, 2)}
    assert paths <= declared | folders, paths


@pytest.mark.parametrize("name", sorted(STAGES))
def test_no_task_name_reaches_a_shell(name):
    """Per-task stages learn their task from DVC_STAGE: a task key, whatever
    it holds, is never part of a command line."""
    assert name.partition("@")[2] not in STAGES[name]["cmd"] or "@" not in name


@pytest.mark.parametrize("task", TASKS)
def test_a_task_stage_depends_on_its_own_params_only(task):
    params = STAGES[f"train@{task}"]["params"]
    assert f"tasks.{task}" in params
    assert not {p for p in params if p.startswith("tasks") and p != f"tasks.{task}"}
    assert not {p for p in STAGES[f"evaluate@{task}"]["params"] if p.startswith("tasks")}


def test_every_stage_can_be_restored_from_the_run_cache():
    """DVC's run-cache records no stage with a persistent output, nor one with
    an uncached output that is not a metric or a plot (Stage.run)."""
    with Repo(str(ROOT)) as repo:
        outs = [o for s in repo.index.stages for o in s.outs]
    assert not [str(o) for o in outs if o.persist]
    assert not [str(o) for o in outs if not (o.use_cache or o.is_metric or o.is_plot)]


@pytest.mark.parametrize("stage", ["download", "preprocess", "report"])
def test_a_stage_without_a_model_never_imports_tensorflow(stage):
    # Importing TensorFlow costs a stage seconds; only train and evaluate use it.
    code = (f"import sys, stages.{stage}; "
            "sys.exit(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras', 'jax', 'torch')) or 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_no_op_flow_run_imports_no_plotting():
    # matplotlib and pandas: only a run that publishes a new report needs them.
    code = ("import sys, flows.pipeline; "
            "sys.exit(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('matplotlib', 'pandas', 'tensorflow', 'keras')) or 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
