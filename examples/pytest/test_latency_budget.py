"""A latency budget per device class: the digits CNN's p95 at batch 1 on one thread must stay
within what the product allows on each class of board.

    pytest examples/pytest --fleet-inventory LAB/inventory.yaml --fleet-devices lab -n 4
"""

from pathlib import Path

ZOO = Path(__file__).resolve().parents[2] / "zoo"

# p95 of one inference (ms), batch 1, one thread, per fleet_class of the inventory.
P95_BUDGET_MS = {
    "pi": 2.0,
    "jetson": 1.0,
    "mac": 0.5,
    "gpu": 0.5,
    "x86": 0.5,
    "lab": 1.0,  # a simulated board: a core of this machine, shared
    "local": 1.0,
}


def test_digits_cnn_p95_within_its_class_budget(fleet_device):
    result = fleet_device.run(
        ZOO / "digits_cnn.onnx",
        variant="onnx:fp32",
        warmup_seconds=0.5,  # caches, clocks and allocators settle first
        min_iterations=300,
        threads=1,
    )
    assert result.latency.p95_ms < P95_BUDGET_MS[fleet_device.device_class]
