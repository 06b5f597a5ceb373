"""The INT8 model must not lose accuracy: on every device, the digits CNN quantized to INT8
(static, calibrated on its own calibration set) against its FP32 ONNX original, both run in
the same job on the same device over the zoo's held-out test set (360 images).

    pytest examples/pytest --fleet-inventory LAB/inventory.yaml --fleet-devices lab -n 4
"""

from pathlib import Path

ZOO = Path(__file__).resolve().parents[2] / "zoo"

MAX_DROP_PP = 1.0  # top-1 percentage points INT8 may lose against FP32
MIN_AGREEMENT = 0.97  # share of images where INT8's answer is FP32's


def test_int8_digits_cnn_keeps_fp32_accuracy(fleet_device):
    int8 = fleet_device.run(
        ZOO / "digits_cnn.onnx",
        variant="onnx:int8",
        dataset=ZOO / "digits_cnn_test.npz",  # FP32 runs first, as the reference
        calibration=ZOO / "digits_cnn_calib.npz",
        min_iterations=100,  # the accuracy pass is what matters here
    )
    assert int8.accuracy.drop_pp <= MAX_DROP_PP
    assert int8.accuracy.agreement_top1 >= MIN_AGREEMENT
    assert int8.reference is not None and int8.reference.accuracy.top1 >= 0.95
