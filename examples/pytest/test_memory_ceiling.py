"""A memory ceiling for the embedded budget: on the small boards (Raspberry Pis, Jetsons, and
the lab's simulated ones), the INT8 digits CNN must run within the memory the product
reserves for inference, and take no more than a quarter of what the board has.

    pytest examples/pytest --fleet-inventory LAB/inventory.yaml --fleet-devices lab -n 4
"""

from pathlib import Path

import pytest

ZOO = Path(__file__).resolve().parents[2] / "zoo"

EMBEDDED_PEAK_MB = 256  # the whole inference process: runtime, inputs and model
MODEL_BUDGET_MB = 32  # what the model itself adds above the runtime's baseline


@pytest.mark.fleet(devices="pi,jetson,lab")
def test_int8_digits_cnn_fits_the_embedded_budget(fleet_device):
    result = fleet_device.run(
        ZOO / "digits_cnn.onnx",
        variant="onnx:int8",
        calibration=ZOO / "digits_cnn_calib.npz",
        min_iterations=100,
    )
    assert result.memory.peak_rss_mb < EMBEDDED_PEAK_MB
    assert result.memory.peak_delta_mb < MODEL_BUDGET_MB
    # The board's own limit: its memory cgroup where it has one, else its RAM.
    board_mb = result.facts.get("memory_limit_mb", result.facts.get("ram_total_mb"))
    if isinstance(board_mb, float):
        assert result.memory.peak_rss_mb < board_mb / 4
