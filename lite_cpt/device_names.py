"""How a calibration names a device, and when two names are the same device (a leaf module: the
planner and the results both read it)."""

from __future__ import annotations


def same_device(calibrated: str | None, running: str | None) -> bool:
    """Whether a calibration's device (`cpu (2 threads)`, `NVIDIA H100 80GB HBM3`) is the running
    one: the same name, thread counts aside."""
    if not calibrated or not running:
        return False
    return calibrated.split(" (")[0].strip() == running.split(" (")[0].strip()
