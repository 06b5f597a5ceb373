"""Compute-only timing on a GPU: the inputs and outputs stay on the device.

``session.run(feed)`` on a CUDA or TensorRT session copies the inputs to the GPU and the
outputs back on every call: end to end, what an application sees. With IO binding the
inputs are copied once, before timing, and the outputs are left on the device, so a call
is the kernels alone (onnxruntime synchronises the device at the end of each run, so the
clock reads after the work is done). Both are timed; neither replaces the other.
"""

from typing import Any, Callable, Dict

import numpy as np

# The onnxruntime providers whose memory is the GPU's, and the device name it gives them.
GPU_PROVIDERS = ("cuda", "tensorrt")
_DEVICE = "cuda"


class Bound:
    """A session's inputs on ``device`` (``device_id``), its outputs bound there too."""

    def __init__(self, session: Any, feed: Dict[str, np.ndarray], device: str, device_id: int):
        import onnxruntime as ort

        self._session = session
        self._binding = session.io_binding()
        # Kept: the binding refers to these device buffers, which must outlive it.
        self._inputs = {
            name: ort.OrtValue.ortvalue_from_numpy(value, device, device_id)
            for name, value in feed.items()
        }
        for name, value in self._inputs.items():
            self._binding.bind_ortvalue_input(name, value)
        for output in session.get_outputs():
            self._binding.bind_output(output.name, device, device_id)

    def run(self, _feed: Any = None) -> None:
        """One run on the bound buffers (``measure``'s loops pass the feed; it is bound)."""
        self._session.run_with_iobinding(self._binding)

    def outputs(self) -> Any:
        """The last run's outputs, copied to the host (for checks, never in a timed loop)."""
        return self._binding.copy_outputs_to_cpu()


def compute_runner(
    session: Any, feed: Dict[str, np.ndarray], device_id: int
) -> Callable[[Any], None]:
    """A run of ``session`` with its inputs and outputs on CUDA device ``device_id``."""
    return Bound(session, feed, _DEVICE, device_id).run
