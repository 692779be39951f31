"""Where a training job's wall time goes, stage by stage, so that start-up can be read off
a run instead of guessed: the driver's stages (MLflow, input discovery, Ray start, the
statistics pass, encoding, training, the final scoring and evaluation, registration) and,
from the training loop, its own set-up, the wait for the first encoded batch (Ray Data
starting, and encoding when the data streams) and the time in epochs. Logged as MLflow
metrics ``time.<stage>_s`` and printed as one line."""

from __future__ import annotations

import time

# Measured inside the training loop (rank 0), logged by it to the run.
LOOP_STAGES = ("loop_setup", "first_batch", "epochs")


class StageTimes:
    """``lap(stage)`` closes the stage that ran since the previous lap (or the start)."""

    def __init__(self) -> None:
        self._last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._last
        self._last = now

    def metrics(self) -> dict[str, float]:
        return {f"time.{stage}_s": s for stage, s in self.seconds.items()}


def summary_line(driver: dict[str, float], loop: dict[str, float]) -> str:
    """``time: ray_start 6.1 s, statistics 9.8 s, training 61.0 s (loop_setup 0.4 s, …)``"""
    inner = ", ".join(f"{stage} {loop[stage]:.1f} s" for stage in LOOP_STAGES if stage in loop)
    parts = [f"{stage} {s:.1f} s" + (f" ({inner})" if stage == "training" and inner else "")
             for stage, s in driver.items()]
    return "time: " + ", ".join(parts)
