from __future__ import annotations

import numpy as np
import pytest

from training.memory import reset_peak_memory
from training.pipeline import _Stages


def _can_reset_peak() -> bool:
    try:
        reset_peak_memory(strict=True)
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _can_reset_peak(), reason="resetting the memory high-water mark needs Linux's clear_refs")
def test_each_stage_measures_its_own_memory_peak():
    stages = _Stages(["heavy", "light"])
    stages.start()
    block = np.ones(400 * 2**20 // 8)  # 400 MiB, touched, then returned to the system
    del block
    heavy = stages.measures()
    stages.start()
    light = stages.measures()
    assert heavy["seconds"] >= 0 and light["seconds"] >= 0
    # The second stage's peak starts from what the process holds now, not from the first stage's high-water mark.
    assert heavy["peak_rss_gib"] - light["peak_rss_gib"] > 0.3
