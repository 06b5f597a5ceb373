"""The converter environment: built once per machine, reused, rebuilt when its pins change.

These tests build real venvs in a temporary cache with a requirement that is already
satisfied there (pip itself), so they need no download; the real onnx2tf environment is
built by the first TFLite conversion (tests/test_convert.py).
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from fleet.artifacts import converter_env
from fleet.errors import ConversionError


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLEET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(converter_env, "REQUIREMENTS", ("pip",))
    return tmp_path / "cache"


@pytest.mark.slow
def test_built_on_first_use_and_reused(cache_dir: Path) -> None:
    python = converter_env.converter_python()
    assert python == cache_dir / "converter-venv" / "bin" / "python"
    version = subprocess.run([python, "-c", "import sys; print(sys.prefix)"], capture_output=True)
    assert Path(version.stdout.decode().strip()) == cache_dir / "converter-venv"
    log = (cache_dir / "converter-venv.log").read_text()
    assert "-m venv" in log
    assert "pip install" in log
    marker = cache_dir / "converter-venv" / "fleet-requirements.txt"
    assert marker.read_text() == "pip\n"
    built = marker.stat().st_mtime_ns
    assert converter_env.converter_python() == python
    assert marker.stat().st_mtime_ns == built  # not built again


@pytest.mark.slow
def test_new_pins_or_an_interrupted_build_rebuild_it(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv = converter_env.converter_python().parents[1]
    leftover = venv / "left-by-the-old-build"
    leftover.write_text("x")
    monkeypatch.setattr(converter_env, "REQUIREMENTS", ("pip", "setuptools"))
    converter_env.converter_python()
    assert not leftover.exists()
    assert (venv / "fleet-requirements.txt").read_text() == "pip\nsetuptools\n"
    (venv / "fleet-requirements.txt").unlink()  # as if the build had been cut short
    leftover.write_text("x")
    converter_env.converter_python()
    assert not leftover.exists()


@pytest.mark.slow
def test_two_callers_at_once_build_it_once(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds: list[Path] = []
    real_build = converter_env._build

    def counting_build(venv: Path) -> None:
        builds.append(venv)
        real_build(venv)

    monkeypatch.setattr(converter_env, "_build", counting_build)
    threads = [threading.Thread(target=converter_env.converter_python) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1
    assert converter_env._ready(builds[0])


@pytest.mark.slow
def test_a_failed_install_is_a_conversion_error_with_pips_words(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(converter_env, "REQUIREMENTS", ("not a requirement!",))
    with pytest.raises(ConversionError) as failure:
        converter_env.converter_python()
    message = str(failure.value)
    assert "building the converter environment" in message
    assert "requirement" in message.lower()
    assert str(cache_dir / "converter-venv.log") in message
    assert not converter_env._ready(cache_dir / "converter-venv")  # the next call tries again


def test_last_lines_keep_the_converters_words() -> None:
    output = "\n".join(
        [
            "W0000 00:00:1 computation_placer.cc:177] computation placer already registered.",
            "\x1b[32mINFO:\x1b[0m onnx_op_type: Frobnicate",
            "Traceback (most recent call last):",
            '  File "onnx2tf.py", line 1, in <module>',
            "    import onnx2tf.ops.Frobnicate",
            "ModuleNotFoundError: No module named 'onnx2tf.ops.Frobnicate'",
            "E0000 00:00:2 cuda_dnn.cc:8579] Unable to register cuDNN factory",
        ]
    )
    assert converter_env.last_lines(output, 2) == (
        "INFO: onnx_op_type: Frobnicate | "
        "ModuleNotFoundError: No module named 'onnx2tf.ops.Frobnicate'"
    )
    assert converter_env.last_lines("") == "no output"
