"""The Python packages the agent imports, the pip distributions that install them, and which
of them are installed here.

The one table of them: the agent reports their versions in its hello event and the pre-flight
check (``installed()``), finds LiteRT through it (``runtimes.tflite_module``), and the Ansible
role's venv check (``ansible/roles/fleet_device/files/check_venv.py``) runs on the device with
this file copied beside it. So it imports nothing from the agent, and from the standard library
only ``os`` and ``sys``, which every Python has loaded before it runs a line (``typing`` is for
the annotations only).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing, for check.py's sake
if TYPE_CHECKING:
    from typing import Dict, Iterable, Optional, Tuple

# Module -> the distributions that install it, as pip names them (lower case, "-"). Vendor
# builds of ONNX Runtime and TensorFlow keep the module name and change the distribution's.
DISTRIBUTIONS: Dict[str, Tuple[str, ...]] = {
    "numpy": ("numpy",),
    "onnxruntime": (
        "onnxruntime",
        "onnxruntime-gpu",
        "onnxruntime-openvino",
        "onnxruntime-directml",
        "onnxruntime-qnn",
        "onnxruntime-silicon",
    ),
    "ai_edge_litert": ("ai-edge-litert", "ai-edge-litert-nightly"),
    "tflite_runtime": ("tflite-runtime",),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-aarch64", "tensorflow-macos"),
}

# Where each package above that has LiteRT keeps its interpreter, newest package first: older
# boards only have tflite_runtime.
TFLITE_INTERPRETERS = (
    "ai_edge_litert.interpreter",
    "tflite_runtime.interpreter",
    "tensorflow.lite",
)

_METADATA = (".dist-info", ".egg-info")


def installed(path: Optional[Iterable[str]] = None) -> Dict[str, str]:
    """Module -> version of each package above installed for this Python (``path``: where to
    look, ``sys.path`` by default), never importing one.

    Read from the names of the ``NAME-VERSION.dist-info`` (pip) and ``NAME-VERSION[-pyX.Y]
    .egg-info`` (setuptools, Debian's python3-* packages) entries in each folder, the first
    folder that has a distribution winning, as for ``importlib.metadata.version``: a listing
    per folder, where ``importlib.metadata`` costs the pre-flight check and the hello event
    tens of milliseconds (it imports email, zipfile and pathlib, then reads every
    distribution's metadata file).
    """
    wanted = {dist for dists in DISTRIBUTIONS.values() for dist in dists}
    versions: Dict[str, str] = {}  # distribution -> version, from the first folder with it
    for folder in sys.path if path is None else path:
        try:
            entries = os.listdir(folder or ".")
        except OSError:  # gone, not a folder, or a zip file (no runtime installs as one)
            continue
        for entry in entries:
            if not entry.endswith(_METADATA):
                continue
            name, _, version = entry.rpartition(".")[0].partition("-")
            dist = name.lower().replace("_", "-").replace(".", "-")
            if dist in wanted and dist not in versions:
                # An egg-info's name may end in its Python ("-py3.8"); a folder without a
                # version in its name (`setup.py develop`) says it in its metadata file.
                version = version.partition("-")[0] or _version_inside(folder, entry)
                if version:
                    versions[dist] = version
    found = {}
    for module, dists in DISTRIBUTIONS.items():
        for dist in dists:
            if dist in versions:
                found[module] = versions[dist]
                break
    return found


def _version_inside(folder: str, entry: str) -> str:
    """The ``Version:`` header of a metadata folder (or egg-info file); "" without one."""
    path = os.path.join(folder or ".", entry)
    if os.path.isdir(path):
        path = os.path.join(path, "METADATA" if entry.endswith(".dist-info") else "PKG-INFO")
    try:
        with open(path, encoding="utf-8", errors="replace") as metadata:
            for line in metadata:
                if line.startswith("Version:"):
                    return line.partition(":")[2].strip()
                if not line.strip():  # the headers end at the first blank line
                    break
    except OSError:
        pass
    return ""
