"""A host's accelerator variables: which GPU of a server a device is (`fleet_gpu`), and the
provider and options it runs with (`fleet_provider`, `fleet_provider_options`). Their shape is
checked here; whether the provider takes those options is checked at plan time, against the
suite's runtimes (fleet.suite.providers)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fleet import yamlfile
from fleet.errors import ConfigError

GPU_VARS = ("fleet_gpu", "fleet_provider", "fleet_provider_options")
# More GPUs than any server has, fewer than a typo makes (fleet_gpu: 10000).
MAX_GPU = 255
# A provider's name, as a suite's measure.provider (fleet.suite.nodes.NAME) takes it.
_PROVIDER_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def gpu_settings(name: str, hvars: Mapping[str, Any], at: Callable[[str], str]) -> dict[str, Any]:
    """The Device fields these variables set (`at(var)`: where each was set)."""
    gpu = hvars.get("fleet_gpu")
    if gpu is not None and (
        isinstance(gpu, bool) or not isinstance(gpu, int) or not 0 <= gpu <= MAX_GPU
    ):
        raise ConfigError(
            f"{at('fleet_gpu')}: fleet_gpu of {name!r} must be a GPU index from 0 to {MAX_GPU}"
            f" (as nvidia-smi numbers them), not {yamlfile.show(gpu)}"
        )
    provider = hvars.get("fleet_provider")
    if provider is not None and not (
        isinstance(provider, str) and 0 < len(provider) <= 64 and set(provider) <= _PROVIDER_CHARS
    ):
        raise ConfigError(
            f"{at('fleet_provider')}: fleet_provider of {name!r} must be a provider name"
            f" (cuda, tensorrt, coreml, ...), not {yamlfile.show(provider)}"
        )
    options = hvars.get("fleet_provider_options") or {}
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise ConfigError(
            f"{at('fleet_provider_options')}: fleet_provider_options of {name!r} must be a"
            f" mapping of option: value, not {yamlfile.show(options)}"
        )
    return {
        "gpu": gpu,
        "provider": provider,
        "provider_options": tuple(options.items()),
        "provider_source": at("fleet_provider"),
        "options_source": at("fleet_provider_options"),
    }
