"""What `aios top` keeps for export: finished generations as RunRecords, oldest dropped whole
past a budget of forward passes, plus the generation in progress."""

from __future__ import annotations

import collections

from profilers.record import RunRecord

KEEP_STEPS = 20_000  # forward passes kept for export (qwen2.5-0.5b: ~6 KB each); older generations are dropped whole


class Retention:
    def __init__(self, keep_steps: int = KEEP_STEPS):
        self.keep_steps = keep_steps
        self._records: collections.deque[RunRecord] = collections.deque()
        self._kept_steps = 0

    def add(self, rec: RunRecord) -> None:
        self._records.append(rec)
        self._kept_steps += len(rec.steps)
        while self._kept_steps > self.keep_steps and len(self._records) > 1:
            self._kept_steps -= len(self._records.popleft().steps)

    def finished(self) -> list[RunRecord]:
        return list(self._records)
