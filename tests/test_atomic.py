"""atomic_target: the one temporary-file-then-rename helper behind ONNX, engine and JSON writers."""

from __future__ import annotations

import os
import stat

import pytest

from srdeploy.runtime.atomic import atomic_target


def test_success_replaces_with_normal_permissions(tmp_path):
    dest = tmp_path / "sub" / "out.json"
    with atomic_target(dest) as tmp:
        assert tmp.parent == dest.parent and tmp != dest
        tmp.write_text("new")
        assert not dest.exists()  # nothing under the final name until the block succeeds
    assert dest.read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o666 & ~umask
    assert os.listdir(dest.parent) == ["out.json"]


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    dest = tmp_path / "out.json"
    dest.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_target(dest) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert dest.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.json"]
