"""A case's provider options as the runtime takes them, and what the runtime made of them.

The controller has checked the names (``measure.provider_options``); here they become
ONNX Runtime's ``providers=[(name, options), ...]`` list, CPU last, or LiteRT's interpreter
and delegate arguments. Keys that begin with ``session.`` are ONNX Runtime session config
entries (``SessionOptions.add_session_config_entry``: the CPU provider's own knobs, such as
``session.intra_op.allow_spinning``), for any provider.
"""

import json
from typing import Any, Dict, List, Optional, Tuple, Union

from fleet_agent import gpu_index
from fleet_agent.protocol import OptionValue, Settings

# The providers that take a CUDA device; the case's GPU (``settings["gpu"]``, in CUDA's
# numbering: gpu_index.py) is their device_id unless the options name one.
DEVICE_ID_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
# TensorRT and CUDA hand what they cannot run to the next provider, CPU last.
ORT_FALLBACKS = {
    "TensorrtExecutionProvider": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "CUDAExecutionProvider": ("CPUExecutionProvider",),
}
SESSION_PREFIX = "session."

ProviderEntry = Union[str, Tuple[str, Dict[str, str]]]


def _text(value: OptionValue) -> str:
    """An option as ONNX Runtime parses it: its Python binding would call str() too, and
    its boolean parser reads "1"/"0"."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def provider_options(settings: Settings) -> Dict[str, str]:
    """The options for the provider itself (not the session entries), as text."""
    return {
        k: _text(v)
        for k, v in settings["provider_options"].items()
        if not k.startswith(SESSION_PREFIX)
    }


def session_entries(settings: Settings) -> Dict[str, str]:
    return {
        k: _text(v) for k, v in settings["provider_options"].items() if k.startswith(SESSION_PREFIX)
    }


def ort_chain(wanted: str, settings: Settings) -> List[ProviderEntry]:
    """The ``providers`` list for onnxruntime: the one asked for with its options (and the
    case's GPU as its device: fleet_gpu as CUDA numbers it), then its fallbacks, CPU last. A
    fallback CUDA gets the same GPU, so that a TensorRT case that falls back stays on its GPU."""
    options = provider_options(settings)
    if wanted in DEVICE_ID_PROVIDERS and settings["gpu"] is not None and "device_id" not in options:
        options["device_id"] = str(gpu_index.of_case(settings).ordinal)
    chain: List[ProviderEntry] = [(wanted, options)]
    for name in ORT_FALLBACKS.get(wanted, ()):
        if name in DEVICE_ID_PROVIDERS and "device_id" in options:
            chain.append((name, {"device_id": options["device_id"]}))
        else:
            chain.append(name)
    return chain


def device_id(session: Any) -> int:
    """The CUDA device the session's first provider runs on (0 unless it names one)."""
    name = session.get_providers()[0]
    options = session.get_provider_options().get(name, {})
    try:
        return int(options.get("device_id", 0))
    except ValueError:
        return 0


def options_used(session: Any, settings: Settings) -> Optional[str]:
    """What the session reports for each option the case asked for, as JSON ("{}": the
    provider that ran reports none of them, e.g. a fallback to CPU); None when none were
    asked for. Provider options as ``get_provider_options()`` of the provider that ran
    says them, session entries as the session's options hold them."""
    asked = settings["provider_options"]
    if not asked:
        return None
    reported = session.get_provider_options().get(session.get_providers()[0], {})
    held = session.get_session_options()
    used: Dict[str, str] = {}
    for key in sorted(asked):
        if key.startswith(SESSION_PREFIX):
            try:
                value = held.get_session_config_entry(key)
            except RuntimeError:  # onnxruntime's way of saying it has no such entry
                value = None
        else:
            value = reported.get(key)
        if value is not None:
            used[key] = str(value)
    return json.dumps(used, sort_keys=True)


def litert_threads(settings: Settings) -> int:
    """The interpreter's threads: XNNPACK's ``num_threads`` option where XNNPACK runs (a
    delegate's options are the delegate's), else the case's."""
    value = settings["threads"]
    if settings["provider"] in ("cpu", "xnnpack"):
        value = int(settings["provider_options"].get("num_threads", value))
    return value


def delegate_options(settings: Settings) -> Dict[str, str]:
    """A LiteRT delegate library's options (``load_delegate(path, options)``), as text."""
    return provider_options(settings)
