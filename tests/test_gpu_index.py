"""Which GPU a case means (fleet_agent.gpu_index): fleet_gpu is nvidia-smi's index, the
device_id onnxruntime gets a CUDA ordinal among the GPUs CUDA_VISIBLE_DEVICES leaves visible.
The UUIDs come from ``nvidia-smi --query-gpu=index,uuid --format=csv,noheader``
(tests/fixtures/gpu/nvidia_smi_index_uuid_h200x4.txt) or a stand-in for NVML."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest
from jobs import settings

from fleet_agent import gpu_index, providers
from fleet_agent.gpu_index import Gpu, NotVisible

UUIDS_TEXT = Path(__file__).parent / "fixtures" / "gpu" / "nvidia_smi_index_uuid_h200x4.txt"
UUIDS = gpu_index.parse_smi_uuids(UUIDS_TEXT.read_text())
GPU1 = "GPU-8f3a61c2-07be-b1d4-3c9e-f1a2b4c6d8e0"
GPU3 = "GPU-c2b17e90-4f5d-2a8c-e6b3-71d0a9f8e452"


def no_lookup() -> dict[str, int]:
    raise AssertionError("no UUID in CUDA_VISIBLE_DEVICES: nothing to look up")


def resolve(gpu=None, visible=None, device_id=None, uuids=no_lookup):
    return gpu_index.resolve(device_id, gpu, visible, uuids)


def test_parse_nvidia_smi_index_and_uuid():
    assert UUIDS == {
        "GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77": 0,
        GPU1: 1,
        "GPU-8fe0c4d1-9a7b-66e2-0d13-5b7c9e2f4a61": 2,
        GPU3: 3,
    }
    assert gpu_index.parse_smi_uuids("No devices were found\n") == {}


def test_visible_devices_as_cuda_reads_them():
    assert gpu_index.visible(None) is None
    assert gpu_index.visible("2,3") == ["2", "3"]
    assert gpu_index.visible(f" {GPU1} ,MIG-1a2b") == [GPU1, "MIG-1a2b"]
    assert gpu_index.visible("1,oops,2") == ["1"]  # CUDA stops at what it cannot read
    assert gpu_index.visible("") == []
    assert gpu_index.visible("-1") == []


def test_unset_cuda_visible_devices_changes_nothing():
    assert resolve(gpu=3) == Gpu(3, 3)
    assert resolve(device_id=2) == Gpu(2, 2)
    assert resolve() == Gpu(0, 0)


def test_fleet_gpu_becomes_its_place_among_the_visible_gpus():
    assert resolve(gpu=3, visible="2,3") == Gpu(1, 3)
    assert resolve(gpu=2, visible="3,2") == Gpu(1, 2)  # CUDA keeps the order listed
    assert resolve(visible="2,3") == Gpu(0, 2)  # no fleet_gpu: CUDA's first


def test_device_id_is_a_cuda_ordinal_sampled_on_its_physical_gpu():
    assert resolve(device_id=1, gpu=0, visible="2,3") == Gpu(1, 3)
    with pytest.raises(NotVisible, match=r"device_id 2 is not a GPU CUDA sees: .*=2,3"):
        resolve(device_id=2, visible="2,3")


def test_uuids_are_looked_up_and_a_unique_prefix_is_enough():
    assert resolve(gpu=3, visible=f"{GPU1},{GPU3}", uuids=lambda: UUIDS) == Gpu(1, 3)
    assert resolve(gpu=1, visible="0,GPU-8f3a", uuids=lambda: UUIDS) == Gpu(1, 1)
    assert gpu_index.index_of("GPU-8f", UUIDS) is None  # GPUs 1 and 2 both start so


def test_a_gpu_cuda_does_not_see_is_one_line_naming_the_fix():
    with pytest.raises(NotVisible) as caught:
        resolve(gpu=1, visible="2,3")
    assert str(caught.value) == (
        "fleet_gpu 1 is not a GPU CUDA sees: CUDA_VISIBLE_DEVICES=2,3 (nvidia-smi's GPU 2, 3);"
        " set fleet_gpu to one of those, or add GPU 1 to CUDA_VISIBLE_DEVICES in the device's"
        " environment"
    )
    with pytest.raises(NotVisible, match=r"=GPU-ffff \(nvidia-smi's GPU \? \(\?: a UUID nei"):
        resolve(gpu=0, visible="GPU-ffff", uuids=dict)
    with pytest.raises(NotVisible, match=r"CUDA_VISIBLE_DEVICES= \(no GPU\)"):
        resolve(gpu=0, visible="")


class FakeNvml(types.SimpleNamespace):
    """Two GPUs by NVML, the second in MIG mode with instances in slots 0 and 2."""

    class NVMLError(Exception):
        pass

    def __init__(self) -> None:
        super().__init__(shut=False)

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shut = True

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("gpu", index)

    def nvmlDeviceGetUUID(self, handle):
        kind, number = handle
        return f"{kind.upper()}-{number}".encode() if kind == "gpu" else f"MIG-{number}"

    def nvmlDeviceGetMaxMigDeviceCount(self, handle):
        if handle == ("gpu", 0):
            raise self.NVMLError("Not Supported")
        return 3

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle, slot):
        if slot == 1:
            raise self.NVMLError("Not Found")
        return ("mig", 10 + slot)


def test_nvml_lists_gpus_and_their_mig_instances_by_nvidia_smi_s_index():
    nvml = FakeNvml()
    assert gpu_index.nvml_uuids(nvml) == {"GPU-0": 0, "GPU-1": 1, "MIG-10": 1, "MIG-12": 1}
    assert nvml.shut


@pytest.fixture
def smi(tmp_path, monkeypatch):
    """nvidia-smi answering the fixture, NVML absent, and no lookup kept from another test."""
    tool = tmp_path / "nvidia-smi"
    tool.write_text(f'#!/bin/sh\ncat "{UUIDS_TEXT}"\n')
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setitem(sys.modules, "pynvml", None)
    gpu_index.uuid_indices.cache_clear()
    yield
    gpu_index.uuid_indices.cache_clear()


def test_a_case_s_gpu_under_uuids_by_nvidia_smi(smi, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", GPU3)
    case = settings(provider="tensorrt", gpu=3)
    assert gpu_index.of_case(case) == Gpu(0, 3)
    chain = providers.ort_chain("TensorrtExecutionProvider", case)
    assert chain[0] == ("TensorrtExecutionProvider", {"device_id": "0"})
    assert chain[1] == ("CUDAExecutionProvider", {"device_id": "0"})


def test_provider_chain_names_the_cuda_ordinal(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    chain = providers.ort_chain("CUDAExecutionProvider", settings(provider="cuda", gpu=3))
    assert chain == [("CUDAExecutionProvider", {"device_id": "1"}), "CPUExecutionProvider"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # a CPU case's fleet_gpu is not checked
    assert providers.ort_chain("CPUExecutionProvider", settings(gpu=3)) == [
        ("CPUExecutionProvider", {})
    ]
