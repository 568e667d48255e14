"""What flows/dvc_internals.py relies on in DVC: these fail if an upgrade
moves it, instead of the patches silently doing nothing."""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import subprocess
import sys

import pytest
from dvc.repo import Repo

from flows import dvc_internals
from tests.conftest import TASKS


@pytest.fixture
def repo(tmp_path):
    """A tiny DVC project: one stage with a params dependency, run once."""
    run = lambda *cmd: subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    run("git", "init", "-q")
    run(sys.executable, "-m", "dvc", "init", "-q")
    (tmp_path / "params.yaml").write_text("n: 1\n")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  make:\n    cmd: python -c \"open('out.txt', 'w').write('x')\"\n"
        "    params: [n]\n    outs: [out.txt]\n")
    run(sys.executable, "-m", "dvc", "repro", "-q")
    with Repo(str(tmp_path)) as repo:
        yield repo


def test_what_the_patches_replace_still_exists():
    for module, name in (*dvc_internals.DUMP_TARGETS, dvc_internals.PARAMS_TARGET,
                         dvc_internals.RWLOCK_TARGET):
        assert callable(getattr(__import__(module, fromlist=[name]), name)), (module, name)
    from dvc.utils.serialize import _common, _yaml

    assert list(inspect.signature(_common._dump_data).parameters) == [
        "path", "data", "dumper", "fs", "dumper_args"]
    assert _yaml._dump_data is _common._dump_data  # imported by name: patched in both
    from dvc import rwlock

    assert list(inspect.signature(rwlock._edit_rwlock).parameters) == [
        "lock_dir", "fs", "hardlink"]


def test_a_killed_rwlock_write_leaves_the_old_file(tmp_path, monkeypatch):
    """DVC rewrites .dvc/tmp/rwlock in place: killed mid-write, it is cut short
    and every DVC command then fails. Patched, it is the old file or the new."""
    from dvc import rwlock
    from dvc.fs import LocalFileSystem

    fs, path = LocalFileSystem(), tmp_path / "rwlock"
    with rwlock._edit_rwlock(str(tmp_path), fs, False):
        pass
    before = path.read_text()

    class Killed:  # json as rwlock uses it, the process dying halfway through a dump
        load = staticmethod(json.load)

        @staticmethod
        def dump(obj, fobj):
            fobj.write('{"read": {')
            raise KeyboardInterrupt

    monkeypatch.setattr(rwlock, "json", Killed)
    with pytest.raises(KeyboardInterrupt), rwlock._edit_rwlock(str(tmp_path), fs, False):
        pass
    assert path.read_text() == '{"read": {'  # DVC's own write: cut short
    path.write_text(before)
    with dvc_internals.atomic_rwlock(), pytest.raises(KeyboardInterrupt), \
            rwlock._edit_rwlock(str(tmp_path), fs, False):
        pass
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".rwlock")] == []


def test_params_are_parsed_once_per_version(repo, monkeypatch):
    from dvc.dependency import param
    from dvc.utils import serialize

    calls = []
    original = serialize.load_path
    monkeypatch.setattr(param, "load_path", lambda *a, **k: calls.append(a) or original(*a, **k))
    with dvc_internals.params_parsed_once(), repo.lock:
        (stage,) = repo.index.stages
        for _ in range(5):
            assert not stage.changed()
    assert len(calls) == 1  # DVC reads params through param.load_path


def test_dvc_lock_is_written_through_the_patched_dump(repo, tmp_path):
    written = []
    with dvc_internals.atomic_dvc_writes():
        from dvc.utils.serialize import _common

        patched = _common._dump_data
        _common._dump_data = lambda path, *a, **k: written.append(path) or patched(path, *a, **k)
        try:
            with repo.lock:
                (stage,) = repo.index.stages
                stage.dump(update_pipeline=False)
        finally:
            _common._dump_data = patched
    assert [str(p).rsplit("/", 1)[-1] for p in written] == ["dvc.lock"]


def test_run_cache_records_are_found(repo):
    (record,) = dvc_internals.run_cache_records(repo)
    with contextlib.chdir(repo.root_dir):
        used = repo.stage_cache.get_used_objs([record])
    assert sum(len(objs) for objs in used.values()) == 1  # out.txt


def test_a_stage_running_under_dvc_repro_is_seen(repo):
    """While `dvc repro` runs a stage's command it holds only DVC's per-path
    locks (the repository lock is released): stages_running names it."""
    from dvc.rwlock import rwlock

    assert dvc_internals.stages_running(repo) == []
    with rwlock(repo.tmp_dir, repo.fs, "dvc repro", ["params.yaml"], ["out.txt"], False):
        assert dvc_internals.stages_running(repo) == [f"process {os.getpid()}: dvc repro"]
    assert dvc_internals.stages_running(repo) == []


def test_a_recorded_command_is_no_longer_changed(repo, tmp_path):
    (tmp_path / "dvc.yaml").write_text((tmp_path / "dvc.yaml").read_text().replace(
        "write('x')", "write('x') "))
    with Repo(str(tmp_path)) as fresh:
        (stage,) = fresh.index.stages
        assert stage.changed_stage()  # DVC compared the cmd with dvc.lock's
        dvc_internals.command_recorded(stage)
        assert not stage.changed_stage()


def test_dvc_is_imported_through_this_module_only():
    """Outside flows/dvc_internals.py the code imports from DVC only Repo and
    its exceptions, and the stages DVC's YAML reader (mnist_cnn/params.py)."""
    import ast
    from pathlib import Path

    root = Path(dvc_internals.__file__).resolve().parents[1]
    allowed = {"dvc.repo.Repo", "dvc.exceptions.*", "mnist_cnn/params.py:dvc.utils.serialize"}
    found = set()
    for folder in ("mnist_cnn", "stages", "flows", "tools", "benchmarks"):
        for path in (root / folder).rglob("*.py"):
            rel = path.relative_to(root).as_posix()
            if rel == "flows/dvc_internals.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "dvc":
                    names = {f"{node.module}.{a.name}" for a in node.names}
                elif isinstance(node, ast.Import):
                    names = {a.name for a in node.names if a.name.split(".")[0] == "dvc"}
                else:
                    continue
                found |= {(rel, n) for n in names
                          if n not in allowed and f"{n.rsplit('.', 1)[0]}.*" not in allowed
                          and f"{rel}:{n.rsplit('.', 1)[0]}" not in allowed}
    assert not found, f"import these through flows/dvc_internals.py: {sorted(found)}"


def test_what_this_module_exports_imports():
    for name in dvc_internals.__all__:
        assert getattr(dvc_internals, name) is not None


def test_a_stage_travels_by_hash_through_a_remote(repo, tmp_path_factory):
    """What the stage executor relies on: a stage's definition and lock entry,
    its run-cache key, its record and outputs pushed to a remote, then, in
    another copy of the project with an empty cache, the record fetched and
    the stage restored from it (each file fetched by hash)."""
    import shutil
    from pathlib import Path

    root = Path(repo.root_dir)
    remote = tmp_path_factory.mktemp("remote")
    config = {"core": {"remote": "r"}, "remote": {"r": {"url": str(remote), "verify": True}}}
    with Repo(str(root), config=config) as pushing, contextlib.chdir(root), \
            dvc_internals.lock_repo(pushing):
        (stage,) = pushing.index.stages
        assert dvc_internals.stage_definition(stage)["outs"] == ["out.txt"]
        entry = dvc_internals.lock_entry(stage)
        assert entry["params"] == {"params.yaml": {"n": 1}} and entry["outs"][0]["md5"]
        key = dvc_internals.run_cache_key(stage)
        assert dvc_internals.push_record(pushing, stage, "r") == 2  # the output, the record
    assert (remote / "runs" / key[:2] / key).is_dir()

    other = tmp_path_factory.mktemp("other")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(root / name, other / name)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q", "--no-scm"], cwd=other,
                   check=True)
    with Repo(str(other), config=config) as fresh, contextlib.chdir(other), \
            dvc_internals.lock_repo(fresh):
        (stage,) = fresh.index.stages
        stage.save_deps()
        assert dvc_internals.run_cache_key(stage) == key  # the same on any machine
        assert dvc_internals.fetch_run_cache_record(fresh, stage, "r")
        record = dvc_internals.restore_record(fresh, stage, "r")
        assert record["outs"] == entry["outs"]
        assert (other / "out.txt").read_text() == "x"
        (other / "out.txt").unlink()
        dvc_internals.fetch_outputs(fresh, entry["outs"], "r")  # an output by its hash
        assert (other / "out.txt").read_text() == "x"


def test_params_read_as_dvc_reads_them(tmp_path, monkeypatch):
    """The patched reader finds the same values as DVC's, a copy each time,
    without dpath's walk over the whole file for a plain key."""
    import dpath
    from dvc.dependency import param
    from dvc.fs import LocalFileSystem

    path = tmp_path / "params.yaml"
    path.write_text("seed: 1\ntasks:\n  a:\n    layers:\n    - {type: dense, units: 10}\n"
                    "    lr: 0.1\n  '1': x\n")
    fs = LocalFileSystem()
    keys = ["seed", "tasks.a", "tasks.a.layers.0.units", "tasks.missing", "tasks.*.lr", "tasks.1"]
    want = param.read_param_file(fs, str(path), keys, flatten=True)
    assert want["tasks.a.layers.0.units"] == 10 and "tasks.missing" not in want
    walks = []
    original_get = dpath.get
    monkeypatch.setattr(dpath, "get", lambda obj, glob, **k: walks.append(glob)
                        or original_get(obj, glob, **k))
    with dvc_internals.params_parsed_once():
        got = param.read_param_file(fs, str(path), keys, flatten=True)
        assert got == want
        got["tasks.a"]["lr"] = 5  # the caller's copy
        assert param.read_param_file(fs, str(path), keys, flatten=True) == want
        assert param.read_param_file(fs, str(path), ["tasks.a"]) == {
            "tasks": {"a": want["tasks.a"]}}
    assert set(walks) == {"tasks.missing", "tasks.*.lr"}  # a glob or a missing key only


def test_a_no_op_reads_params_yaml_once_however_many_tasks(tmp_path, mnist_npz):
    """What made a no-op grow with the square of the tasks: DVC parsed
    params.yaml once per stage with params (2 per task), each parse as long
    as the file. Through the patches (the flow, `python -m tools.dvc`), once."""
    from dvc.dependency import param

    from tests.sandbox import make_project, shrink

    def many(data):
        shrink(data)
        for i in range(20):
            data["tasks"][f"copy{i}"] = data["tasks"]["task1"]

    project = make_project(tmp_path / "many", mnist_npz, many)
    # Outputs of any content, recorded as they are: a no-op's dvc.lock.
    with Repo(str(project.path)) as repo:
        for stage in repo.index.stages:
            for out in stage.outs:
                path = project.path / str(out.def_path)
                folder = path if not path.suffix else path.parent
                folder.mkdir(parents=True, exist_ok=True)
                (path if path.suffix else path / "x").write_text("x")
    project.run(sys.executable, "-m", "tools.dvc", "commit", "-f", "-q")
    parses = []
    original = param.load_path

    def counting(path, fs, **kwargs):
        parses.append(path)
        return original(path, fs, **kwargs)

    def status_parses(patched: bool) -> int:
        parses.clear()
        with Repo(str(project.path)) as repo, contextlib.chdir(project.path), \
                (dvc_internals.applied() if patched else contextlib.nullcontext()):
            old, param.load_path = param.load_path, counting
            try:
                repo.status()
            finally:
                param.load_path = old
        return sum(p.endswith("params.yaml") for p in parses)

    stages = 3 + 2 * (len(TASKS) + 20)
    assert status_parses(patched=False) >= stages - 2  # DVC alone: once per stage with params
    assert status_parses(patched=True) == 1


def _copy_project(root, dest, config) -> Repo:
    import shutil

    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(root / name, dest / name)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q", "--no-scm"], cwd=dest,
                   check=True)
    return Repo(str(dest), config=config)


def test_a_record_is_restored_only_if_it_matches_its_key_and_its_outputs_are_there(
        repo, tmp_path_factory, capsys):
    """DVC trusts a record by where it lies: one copied under another key (by
    whoever can write the remote or a cache) would restore outputs computed
    from other inputs; one whose outputs are gone made DVC raise
    CollectCacheError. Both are passed over: the stage is computed."""
    import shutil
    from pathlib import Path

    root = Path(repo.root_dir)
    remote = tmp_path_factory.mktemp("remote")
    config = {"core": {"remote": "r"}, "remote": {"r": {"url": str(remote), "verify": True}}}
    with Repo(str(root), config=config) as pushing, contextlib.chdir(root), \
            dvc_internals.lock_repo(pushing):
        (stage,) = pushing.index.stages
        key = dvc_internals.run_cache_key(stage)
        dvc_internals.push_record(pushing, stage, "r")
    (record,) = (remote / "runs" / key[:2] / key).iterdir()

    # n: 2 has another key; the record of n: 1 planted under it is refused.
    other = tmp_path_factory.mktemp("other")
    with _copy_project(root, other, config) as fresh, contextlib.chdir(other), \
            dvc_internals.lock_repo(fresh):
        (other / "params.yaml").write_text("n: 2\n")
        (stage,) = fresh.index.stages
        stage.save_deps()
        forged = dvc_internals.run_cache_key(stage)
        assert forged != key
        (remote / "runs" / forged[:2] / forged).mkdir(parents=True)
        shutil.copy2(record, remote / "runs" / forged[:2] / forged / record.name)
        assert dvc_internals.fetch_run_cache_record(fresh, stage, "r")
        assert dvc_internals.restore_record(fresh, stage, "r") is None
        assert not (other / "out.txt").exists()
    assert "does not match its key" in capsys.readouterr().err

    # The record is right, but its output is gone from the remote.
    for obj in (remote / "files").rglob("*"):
        if obj.is_file():
            obj.unlink()
    third = tmp_path_factory.mktemp("third")
    with _copy_project(root, third, config) as fresh, contextlib.chdir(third), \
            dvc_internals.lock_repo(fresh):
        (stage,) = fresh.index.stages
        stage.save_deps()
        assert dvc_internals.fetch_run_cache_record(fresh, stage, "r")
        assert dvc_internals.restore_record(fresh, stage, "r") is None


def test_a_record_whose_outputs_are_gone_is_skipped_by_push_and_pull(repo, tmp_path_factory):
    """`dvc gc -w` removes a variant's outputs and keeps its record: make push
    (and a teammate's make pull) skip that record with one warning and move
    everything else."""
    from pathlib import Path

    root = Path(repo.root_dir)
    run = lambda *cmd: subprocess.run(cmd, cwd=root, check=True, capture_output=True)  # noqa: E731
    (root / "params.yaml").write_text("n: 2\n")
    (root / "dvc.yaml").write_text((root / "dvc.yaml").read_text().replace(
        "write('x')", "write('y')"))
    run(sys.executable, "-m", "dvc", "repro", "-q")  # a second variant, then only it kept
    run(sys.executable, "-m", "dvc", "gc", "-w", "-f", "-q")
    assert len(dvc_internals.run_cache_records(repo)) == 2
    remote = tmp_path_factory.mktemp("remote")
    run(sys.executable, "-m", "dvc", "remote", "add", "r", str(remote))
    share = subprocess.run([sys.executable, "-m", "tools.share", "push", "--remote", "r"],
                           cwd=root, capture_output=True, text=True)  # make push
    assert share.returncode == 0 and "push: 2 file(s)" in share.stdout, share.stderr
    # out.txt ('y') and its record; the other record: one warning line
    assert share.stderr.count("warning: not sending run-cache record") == 1, share.stderr
    assert "(out.txt)" in share.stderr and "Traceback" not in share.stderr
    assert len(list((remote / "runs").rglob("*/*/*"))) == 1

    # Plain `dvc push --run-cache` sends both records; a teammate's pull gets
    # what is there, with a warning for the other.
    plain = tmp_path_factory.mktemp("plain")
    run(sys.executable, "-m", "dvc", "remote", "add", "plain", str(plain))
    run(sys.executable, "-m", "dvc", "push", "--run-cache", "-r", "plain")
    assert len(list((plain / "runs").rglob("*/*/*"))) == 2
    run("git", "add", "-A")
    run("git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "y")
    teammate = tmp_path_factory.mktemp("teammate")
    subprocess.run(["git", "clone", "-q", str(root), str(teammate)], check=True)
    share = subprocess.run([sys.executable, "-m", "tools.share", "pull", "--remote", "plain"],
                           cwd=teammate, capture_output=True, text=True)  # make pull
    assert share.returncode == 0, share.stderr
    assert share.stderr.count("its outputs are not all on the remote") == 1, share.stderr
    assert (teammate / "out.txt").read_text() == "y"
