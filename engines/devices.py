"""Which NVIDIA GPUs this machine has, and whether torch can use one: what choosing a backend
needs. NVML is initialised once, lazily, and kept (`profilers.nvml` queries the same handle);
torch is imported only by `cuda_status`."""

from __future__ import annotations

from typing import Any

_state: dict[str, Any] = {"nvml": None, "error": None}


def nvml():
    """The initialised `pynvml` module, or None without a driver, library or GPU."""
    if _state["nvml"] is None:
        try:
            import pynvml

            pynvml.nvmlInit()
            _state["nvml"] = pynvml
        except Exception as e:  # no driver, no library, no GPU
            _state["nvml"] = False
            _state["error"] = str(e) or type(e).__name__
    return _state["nvml"] or None


def nvml_error() -> str | None:
    """Why NVML is unavailable (None when it works)."""
    nvml()
    return _state["error"]


def gpu_count() -> int:
    """NVIDIA GPUs NVML can see (0 without a driver). Cheap: no torch import."""
    nv = nvml()
    if not nv:
        return 0
    try:
        return int(nv.nvmlDeviceGetCount())
    except Exception:
        return 0


def cuda_status() -> tuple[bool, str]:
    """(usable, why not / which GPU). Imports torch: call only when needed."""
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        if torch.version.cuda is None:
            return False, f"torch {torch.__version__} is a CPU-only build"
        return False, "no usable NVIDIA GPU (torch.cuda.is_available() is False)"
    return True, torch.cuda.get_device_name(0)
