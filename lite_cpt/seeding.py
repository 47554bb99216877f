"""Seeds derived from a run's seed and labels, stable across processes (resume depends on it)."""

from __future__ import annotations

import hashlib


def derived_seed(seed: int, *parts: object, bits: int = 32) -> int:
    """A `bits`-bit seed from sha256 of `seed/part/part...` (bits <= 32)."""
    key = "/".join(str(p) for p in (seed, *parts)).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little") & ((1 << bits) - 1)
