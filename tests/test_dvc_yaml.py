"""dvc.yaml declares exactly what each stage's code reads.

A dependency the code has but dvc.yaml omits is a silent caching bug: an edit
to it would never rerun the stage. These checks read the stages as DVC
resolves them (foreach expanded) and the code's imports as Python sees them.
"""

from __future__ import annotations

import ast
import re
import shlex

import pytest
from dvc.dependency.param import ParamsDependency
from dvc.repo import Repo

from tests.conftest import ROOT

with Repo(str(ROOT)) as _repo:
    STAGES = {s.addressing: {"cmd": s.cmd,
                             "deps": {str(d.def_path) for d in s.deps
                                      if not isinstance(d, ParamsDependency)},
                             "params": {p for d in s.deps if isinstance(d, ParamsDependency)
                                        for p in d.params},
                             "outs": {str(o.def_path) for o in s.outs}}
              for s in _repo.index.stages}
TASKS = sorted(n.split("@", 1)[1] for n in STAGES if n.startswith("train@"))


def project_imports(module: str) -> set[str]:
    """Files of this project that running ``python -m <module>`` imports."""
    seen: set[str] = set()
    todo = ["stages/__init__.py", module.replace(".", "/") + ".py"]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse((ROOT / path).read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module == "stages":
                names = [f"stages.{a.name}" for a in node.names]  # from stages import x
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            else:
                continue
            todo += [n.replace(".", "/") + ".py" for n in names if n.startswith("stages.")]
    return seen


def test_every_stage_of_the_design_exists():
    expected = {"download", "preprocess", "report",
                *(f"{kind}@{t}" for kind in ("train", "evaluate") for t in TASKS)}
    assert set(STAGES) == expected
    assert TASKS == sorted(["task1", "task2", "task2_15_epochs", "task2_one_conv",
                            "task2_three_conv", "task3", "task4_sgd", "task4_adam",
                            "task2_maxpool"])


@pytest.mark.parametrize("name", sorted(STAGES))
def test_code_deps_are_exactly_the_modules_the_stage_imports(name):
    stage = STAGES[name]
    module = re.search(r"python -m (\S+)", stage["cmd"]).group(1)
    code_deps = {d for d in stage["deps"] if d.startswith("stages/")}
    assert code_deps == project_imports(module)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_paths_on_the_command_line_are_declared(name):
    """Every data path the command passes is a dep or an out of the stage."""
    stage = STAGES[name]
    paths = {a for a in shlex.split(stage["cmd"]) if a.startswith("data/")}
    declared = stage["deps"] | stage["outs"] | {o.rsplit("/", 1)[0] for o in stage["outs"]}
    assert paths <= declared, paths - declared


@pytest.mark.parametrize("task", TASKS)
def test_a_task_stage_depends_on_its_own_params_only(task):
    params = STAGES[f"train@{task}"]["params"]
    assert f"tasks.{task}" in params
    assert not {p for p in params if p.startswith("tasks") and p != f"tasks.{task}"}
    assert not {p for p in STAGES[f"evaluate@{task}"]["params"] if p.startswith("tasks")}
