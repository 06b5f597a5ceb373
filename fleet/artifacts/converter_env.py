"""The converter environment: a venv of fleet's own for onnx2tf, built once and reused.

onnx2tf pins tensorflow, numpy < 2, onnx and onnxruntime releases that clash with fleet's own
environment, so it never runs in-process: fleet builds a venv under the cache directory on
first use and runs onnx2tf there as a subprocess. A lock keeps two processes from building it
at once; a marker written last (the pinned requirements) says the build finished, so a build
that was interrupted is started over instead of used half-done.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from fleet import paths
from fleet.artifacts.cache import file_lock, write_atomic
from fleet.errors import ConversionError

log = logging.getLogger(__name__)

# What onnx2tf 1.29.24 resolved to when it was checked (Python 3.11): pinning what shapes the
# converted files keeps them the same on every machine, which the artifact cache relies on.
REQUIREMENTS = (
    "onnx2tf==1.29.24",
    "tensorflow==2.19.0",
    "tf_keras==2.19.0",
    "numpy==1.26.4",
    "onnx==1.19.1",
    "onnxruntime==1.23.0",
    "onnxsim==0.4.36",
    "onnx_graphsurgeon==0.5.8",
    "ai-edge-litert==2.1.0",
    "protobuf==4.25.5",
    "h5py==3.11.0",
    "ml_dtypes==0.5.1",
    "psutil==5.9.5",
    "simple_onnx_processing_tools==1.1.32",
)
CONVERTER = "onnx2tf"
CONVERTER_VERSION = "1.29.24 (tensorflow 2.19.0)"
# tensorflow 2.19 has wheels for CPython 3.9-3.12; another interpreter can be named here.
PYTHON_ENV = "FLEET_CONVERTER_PYTHON"
_INSTALL_TIMEOUT_S = 1800


def env_dir() -> Path:
    return paths.cache_dir() / "converter-venv"


def converter_python() -> Path:
    """The converter venv's python, building the venv first if it is missing or stale."""
    venv = env_dir()
    python = venv / "bin" / "python"
    if _ready(venv):
        return python
    with file_lock(paths.cache_dir() / "converter-venv.lock"):
        if not _ready(venv):  # another process may have built it while we waited
            _build(venv)
    return python


def _marker(venv: Path) -> Path:
    return venv / "fleet-requirements.txt"


def _ready(venv: Path) -> bool:
    try:
        return _marker(venv).read_text() == "\n".join(REQUIREMENTS) + "\n"
    except OSError:
        return False


def _build(venv: Path) -> None:
    base = os.environ.get(PYTHON_ENV) or sys.executable
    logfile = paths.cache_dir() / "converter-venv.log"
    log.warning(
        "building the converter environment (%s %s) in %s: a few minutes, once; log: %s",
        CONVERTER,
        CONVERTER_VERSION,
        venv,
        logfile,
    )
    if venv.exists():
        shutil.rmtree(venv)  # stale pins or a build that was cut short
    start = time.monotonic()
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with logfile.open("w") as out:
        for step, argv in (
            (f"creating a venv with {base}", [base, "-m", "venv", str(venv)]),
            (
                f"installing {len(REQUIREMENTS)} pinned packages with pip",
                [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-input", *REQUIREMENTS],
            ),
        ):
            log.info("converter environment: %s", step)
            out.write(f"$ {' '.join(argv)}\n")
            out.flush()
            try:
                code = _run_step(argv, out)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise ConversionError(
                    f"building the converter environment in {venv} failed: {exc}"
                ) from exc
            if code != 0:
                raise ConversionError(
                    f"building the converter environment in {venv} failed"
                    f" ({last_lines(logfile.read_text())}); full log: {logfile}; set"
                    f" {PYTHON_ENV} to a Python 3.9-3.12 if this one has no tensorflow wheels"
                )
    write_atomic(_marker(venv), ("\n".join(REQUIREMENTS) + "\n").encode())
    log.warning("converter environment ready in %.0f s", time.monotonic() - start)


def _run_step(argv: list[str], out: TextIO) -> int:
    """Run one command of the build, its output to the log file as it comes; each step pip
    reaches is logged (the run's view shows it), so minutes of install are not minutes of
    silence. Killed after _INSTALL_TIMEOUT_S."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        proc.kill()

    timer = threading.Timer(_INSTALL_TIMEOUT_S, expire)
    timer.start()
    try:
        for line in proc.stdout or ():
            out.write(line)
            out.flush()
            step = pip_step(line)
            if step:
                log.info("converter environment: %s", step)
        code = proc.wait()
    finally:
        timer.cancel()
        proc.kill()  # nothing once it has ended; stops it if reading its output failed
        proc.wait()
    if expired.is_set():
        raise subprocess.TimeoutExpired(argv, _INSTALL_TIMEOUT_S)
    return code


def pip_step(line: str) -> str | None:
    """Where a line of pip's output says a long install is: each requirement it resolves,
    each file it downloads (not the small .metadata ones), the install itself."""
    if found := re.match(r"Collecting (\S+)", line):
        return f"resolving {found[1]}"
    if found := re.match(r"Processing (\S+)", line):  # a wheel from a local index
        return f"resolving {Path(found[1]).name}"
    found = re.match(r"\s*Downloading (\S+) \((.+)\)", line)
    if found and not found[1].endswith(".metadata"):
        return f"downloading {found[1]} ({found[2]})"
    if found := re.match(r"Installing collected packages: (.+)", line):
        return f"installing {len(found[1].split(', '))} packages"
    return None


def last_lines(text: str, count: int = 3) -> str:
    """A converter's own last words, on one line: ANSI colours, tracebacks' indented frames
    and TensorFlow's glog lines ("W0000 00:00:...": plugin and placer noise) left out."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    every = [line.strip() for line in plain.splitlines() if line.strip()]
    lines = [
        line.strip()
        for line in plain.splitlines()
        if line.strip()
        and not line[0].isspace()
        and not line.startswith("Traceback")
        and not re.match(r"[IWE]\d{4} ", line)
    ]
    lines = lines or every
    return " | ".join(lines[-count:]) if lines else "no output"
