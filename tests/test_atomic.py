"""mobilenet_lab.atomic.atomic_path: the one atomic write behind checkpoints and export."""

import os
import stat

import pytest

from mobilenet_lab.atomic import atomic_path


def test_success_replaces_the_file_with_usual_permissions(tmp_path):
    target = tmp_path / "sub" / "model.bin"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".model.bin.")
        tmp.write_bytes(b"new")
        (tmp.parent / (tmp.name + ".data")).write_bytes(b"side file")  # e.g. ONNX external data
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.bin"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_failure_keeps_the_previous_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer failed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
