"""The Python packages the agent imports, and the pip distributions that install them.

The one table of them: the agent reports their versions in its hello event
(``sysinfo.runtimes_installed``) and finds LiteRT through it (``runtimes.tflite_module``), and
the Ansible role's venv check (``ansible/roles/fleet_device/files/check_venv.py``) runs on the
device with this file copied beside it. So it imports nothing, not even from the agent.
"""

from typing import Dict, Tuple

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
