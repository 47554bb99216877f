"""Non-finite losses and gradients: the guard lets a finite update through, skips a non-finite
one, and stops after K in a row with a message naming what to look at."""

from __future__ import annotations

import pytest
import torch

from lite_cpt.numerics import NonFiniteGuard, NonFiniteTraining


def test_guard_counts_skips_and_stops_after_the_limit_with_the_knobs():
    guard = NonFiniteGuard(2, "lr=0.001, kl_beta=0.01, dtype=torch.bfloat16")
    assert guard.allow(1, {"loss": 0.5}, torch.tensor(1.0))
    assert not guard.allow(2, {"loss": float("nan")}, torch.tensor(1.0))
    assert guard.allow(3, {"loss": 0.4}, torch.tensor(2.0))  # a finite update resets the run
    assert not guard.allow(4, {"loss": 0.4}, torch.tensor(float("inf")))
    with pytest.raises(NonFiniteTraining) as stop:
        guard.allow(5, {"loss": float("nan"), "kl": 0.25}, torch.tensor(float("nan")))
    message = str(stop.value)
    for words in ("step 5", "loss=nan", "kl=0.25", "learning rate", "KL", "precision", "lr=0.001",
                  "faults.max_consecutive_nonfinite"):
        assert words in message
    assert guard.state() == {"consecutive": 2, "skipped": 3}
