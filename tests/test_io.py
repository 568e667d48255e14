"""The atomic helpers: a failed write leaves the old content, never a mix."""

from __future__ import annotations

import pytest

from mnist_cnn.io import atomic_dir, atomic_files, atomic_path, write_json


class Boom(Exception):
    pass


def test_atomic_path_keeps_the_old_file_on_an_exception(tmp_path):
    dest = tmp_path / "model.keras"
    dest.write_text("old")
    with pytest.raises(Boom), atomic_path(dest) as tmp:
        assert tmp.name.endswith(".keras") and tmp.parent == tmp_path
        tmp.write_text("half")
        raise Boom
    assert dest.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def test_atomic_path_replaces_on_success(tmp_path):
    write_json(tmp_path / "a" / "m.json", {"x": 1})
    assert (tmp_path / "a" / "m.json").read_text() == '{\n  "x": 1\n}\n'


def test_atomic_dir_keeps_the_old_folder_on_an_exception(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    with pytest.raises(Boom), atomic_dir(dest) as tmp:
        (tmp / "new.txt").write_text("new")
        raise Boom
    assert [p.name for p in dest.iterdir()] == ["old.txt"]
    with atomic_dir(dest) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in dest.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_files_keeps_what_the_stage_does_not_own(tmp_path):
    dest = tmp_path / "eval"
    dest.mkdir()
    (dest / "notes.txt").write_text("a user's")
    (dest / "metrics.json").write_text("old")
    with pytest.raises(Boom), atomic_files(dest) as tmp:
        (tmp / "metrics.json").write_text("half")
        raise Boom
    assert (dest / "metrics.json").read_text() == "old"
    with atomic_files(dest) as tmp:
        (tmp / "metrics.json").write_text("new")
        (tmp / "plots" / "sub").mkdir(parents=True)
        (tmp / "plots" / "sub" / "cm.json").write_text("[]")
    assert (dest / "metrics.json").read_text() == "new"
    assert (dest / "notes.txt").read_text() == "a user's"
    assert (dest / "plots" / "sub" / "cm.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]


def test_leftovers_of_a_killed_write_are_cleared_by_the_next(tmp_path):
    litter = tmp_path / ".report.k1ll3d.tmp"
    litter.mkdir()
    with atomic_dir(tmp_path / "report") as tmp:
        (tmp / "x").write_text("x")
    assert not litter.exists()
