"""The restricted unpickler: numpy arrays and containers load, anything else is refused unexecuted."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest

from mobilenet_lab.data.safe_pickle import safe_load
from mobilenet_lab.errors import DataError


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_loads_numpy_arrays_and_containers(tmp_path: Path, protocol: int) -> None:
    obj = {
        "data": np.arange(12, dtype=np.uint8).reshape(3, 4),
        "floats": np.linspace(0, 1, 5),
        b"bytes_key": [1, 2, (3, "x")],
        "scalar": np.int64(7),
        "none": None,
    }
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    out = safe_load(path)
    np.testing.assert_array_equal(out["data"], obj["data"])
    assert out["data"].dtype == np.uint8
    np.testing.assert_allclose(out["floats"], obj["floats"])
    assert out[b"bytes_key"] == [1, 2, (3, "x")]
    assert out["scalar"] == 7 and out["none"] is None


def test_loads_python2_style_strings_as_latin1() -> None:
    # Protocol 2 BINSTRING (what Python 2 wrote for str) must decode as latin1, not fail as ASCII.
    raw = b"\x80\x02}q\x00U\x03keyq\x01U\x02\xe9\xffq\x02s."
    assert safe_load(io.BytesIO(raw)) == {"key": "\xe9\xff"}


def test_refuses_os_system_and_does_not_run_it(malicious_pickle: tuple[Path, Path], tmp_path: Path) -> None:
    path, marker = malicious_pickle
    with pytest.raises(DataError) as info:
        safe_load(path)
    message = str(info.value)
    assert "refusing to unpickle" in message and "system" in message and str(path) in message
    assert "\n" not in message
    assert not marker.exists()
    # Control: the payload is real, a plain pickle.load would have run it.
    with open(path, "rb") as f:
        pickle.load(f)
    assert marker.exists()


@pytest.mark.parametrize("target", ["builtins.eval", "subprocess.Popen", "numpy.load", "torch.load"])
def test_refuses_other_globals(target: str) -> None:
    module, name = target.rsplit(".", 1)
    raw = b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\nq\x00."
    with pytest.raises(DataError, match=rf"refusing to unpickle {target}"):
        safe_load(io.BytesIO(raw))


def test_truncated_file_is_a_clear_data_error(tmp_path: Path) -> None:
    full = pickle.dumps({"data": np.zeros((10, 3072), np.uint8), "fine_labels": list(range(10))}, protocol=2)
    path = tmp_path / "cut.pkl"
    for cut in (len(full) // 2, len(full) - 1, 5):
        path.write_bytes(full[:cut])
        with pytest.raises(DataError, match=r"truncated|not a readable data set pickle"):
            safe_load(path)


def test_garbage_and_missing_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"this is not a pickle at all")
    with pytest.raises(DataError, match="not a readable data set pickle"):
        safe_load(garbage)
    with pytest.raises(DataError, match="does not exist"):
        safe_load(tmp_path / "nope")
