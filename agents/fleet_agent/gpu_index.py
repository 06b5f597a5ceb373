"""Which GPU a case means, in CUDA's numbering and in nvidia-smi's.

``fleet_gpu`` (``settings["gpu"]``) is the GPU's index as nvidia-smi lists it: PCI bus order,
the same in NVML, nvidia-smi and the per-GPU lock (``gpu_lock.py``). A provider option
``device_id`` is what onnxruntime takes: a CUDA ordinal, a position among the GPUs CUDA sees.
The two agree until the device's environment sets ``CUDA_VISIBLE_DEVICES`` (``2,3``, GPU
UUIDs, MIG instances): CUDA then sees only those, numbered 0, 1, ... in the order listed. The
worker sets ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, so a number in that list is nvidia-smi's index.
"""

import functools
import os
import re
from typing import Any, Callable, Dict, List, NamedTuple, Optional

from fleet_agent import live
from fleet_agent.protocol import Settings

ENV = "CUDA_VISIBLE_DEVICES"
_NUMBER = re.compile(r"[0-9]+")
_UUID_PREFIXES = ("GPU-", "MIG-")
_SMI_UUIDS = ["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"]


class NotVisible(Exception):
    """The case's GPU is not one CUDA sees here; the message names the fix."""


class Gpu(NamedTuple):
    ordinal: int  # CUDA's: onnxruntime's device_id
    physical: Optional[int]  # nvidia-smi's index: sampling, the GPU's name; None: unknown


def visible(value: Optional[str]) -> Optional[List[str]]:
    """``CUDA_VISIBLE_DEVICES``'s entries as CUDA reads them: up to the first it cannot read
    (CUDA ignores that one and the rest, so ``-1`` or an empty value hides every GPU); None
    when it is unset (every GPU, in nvidia-smi's order)."""
    if value is None:
        return None
    entries = []
    for entry in (e.strip() for e in value.split(",")):
        if not (_NUMBER.fullmatch(entry) or entry.startswith(_UUID_PREFIXES)):
            break
        entries.append(entry)
    return entries


def parse_smi_uuids(text: str) -> Dict[str, int]:
    """``nvidia-smi --query-gpu=index,uuid --format=csv,noheader``: each GPU's UUID and index
    (a line that is not one, such as an error message, is skipped)."""
    uuids = {}
    for line in text.splitlines():
        index, _, uuid = (part.strip() for part in line.partition(","))
        if _NUMBER.fullmatch(index) and uuid.startswith("GPU-"):
            uuids[uuid] = int(index)
    return uuids


def index_of(entry: str, uuids: Dict[str, int]) -> Optional[int]:
    """nvidia-smi's index of one entry: a number is one; a UUID (or, as CUDA takes it, the
    start of exactly one) is looked up in ``uuids``; None where it names no GPU known."""
    if _NUMBER.fullmatch(entry):
        return int(entry)
    found = [index for uuid, index in uuids.items() if uuid.startswith(entry)]
    return found[0] if len(found) == 1 else None


def resolve(
    device_id: Optional[int],
    gpu: Optional[int],
    value: Optional[str],
    uuids: Callable[[], Dict[str, int]],
) -> Gpu:
    """The GPU of a case with provider option ``device_id`` (a CUDA ordinal) or ``fleet_gpu``
    ``gpu`` (nvidia-smi's index), neither: the first CUDA sees, under ``CUDA_VISIBLE_DEVICES``
    ``value``; ``uuids`` is asked only where an entry is a UUID."""
    entries = visible(value)
    if entries is None:
        same = device_id if device_id is not None else (gpu if gpu is not None else 0)
        return Gpu(same, same)
    known = uuids() if any(not _NUMBER.fullmatch(e) for e in entries) else {}
    indices = [index_of(e, known) for e in entries]
    if device_id is not None:
        if not 0 <= device_id < len(indices):
            raise NotVisible(
                "provider option device_id {} is not a GPU CUDA sees: {}={} ({}); device_id"
                " counts the GPUs listed there from 0".format(
                    device_id, ENV, value, _listed(indices)
                )
            )
        return Gpu(device_id, indices[device_id])
    if gpu is None:
        return Gpu(0, indices[0] if indices else None)
    if gpu not in indices:
        raise NotVisible(
            "fleet_gpu {} is not a GPU CUDA sees: {}={} ({}); set fleet_gpu to one of those,"
            " or add GPU {} to {} in the device's environment".format(
                gpu, ENV, value, _listed(indices), gpu, ENV
            )
        )
    return Gpu(indices.index(gpu), gpu)


def _listed(indices: List[Optional[int]]) -> str:
    if not indices:
        return "no GPU"
    names = ["?" if i is None else str(i) for i in indices]
    unknown = " (?: a UUID neither NVML nor nvidia-smi lists)" if None in indices else ""
    return "nvidia-smi's GPU {}{}".format(", ".join(names), unknown)


def of_case(settings: Settings) -> Gpu:
    """The case's GPU on this device, as ``resolve`` tells it (NotVisible: not here)."""
    device_id = settings["provider_options"].get("device_id")
    ordinal = None if device_id is None else int(device_id)
    return resolve(ordinal, settings["gpu"], os.environ.get(ENV), uuid_indices)


# Kept for the worker's life: it resolves the GPU before the timed load and onnxruntime's
# provider list again within it, where running nvidia-smi would be timed.
@functools.lru_cache(maxsize=1)
def uuid_indices() -> Dict[str, int]:
    """Each GPU's UUID, and each MIG instance's, with nvidia-smi's index of its GPU: from NVML
    where nvidia-ml-py is installed and answers, else from nvidia-smi (GPUs only); {} where
    neither can tell."""
    try:
        import pynvml  # type: ignore[import-not-found,unused-ignore]  # optional: nvidia-ml-py
    except ImportError:
        pass
    else:
        try:
            return nvml_uuids(pynvml)
        except pynvml.NVMLError:
            pass
    try:
        return parse_smi_uuids(live.run_tool(_SMI_UUIDS))
    except OSError:
        return {}


def nvml_uuids(nvml: Any) -> Dict[str, int]:
    """``uuid_indices`` by NVML, whose device indices are nvidia-smi's."""
    nvml.nvmlInit()
    try:
        uuids = {}
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            for device in [handle, *_migs(nvml, handle)]:
                uuids[_text(nvml.nvmlDeviceGetUUID(device))] = index
        return uuids
    finally:
        nvml.nvmlShutdown()


def _migs(nvml: Any, handle: Any) -> List[Any]:
    """The MIG instances of a GPU (none where it has no MIG mode)."""
    try:
        slots = nvml.nvmlDeviceGetMaxMigDeviceCount(handle)
    except nvml.NVMLError:
        return []
    migs = []
    for slot in range(slots):
        try:
            migs.append(nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot))
        except nvml.NVMLError:  # an empty slot
            continue
    return migs


def _text(uuid: Any) -> str:
    """nvidia-ml-py before 11.515 returns bytes."""
    return uuid.decode() if isinstance(uuid, bytes) else str(uuid)
