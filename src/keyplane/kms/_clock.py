"""The service's clock, which a tester may move forward.

Every date rule of the service (deletion windows, rotation dates) reads one clock. In
production it is real time. With ``[clock] adjustable = true`` it is real time plus an
offset that ``advance`` grows, so a user can watch a year's rotation happen in seconds
through the API. The offset only grows (dates never run backwards under a key) and is
not stored: a restart returns to real time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from keyplane.errors import ValidationError

# How far one advance may go: a century is plenty for any date rule KMS has.
MAX_ADVANCE_SECONDS = 100 * 366 * 86400.0


class AdjustableClock:
    """Real time plus an offset that only grows."""

    def __init__(self, base: Callable[[], float] = time.time) -> None:
        self._base = base
        self.offset = 0.0

    def __call__(self) -> float:
        return self._base() + self.offset

    def advance(self, seconds: float) -> float:
        """Move the clock ``seconds`` forward; returns the new now.

        Raises:
            ValidationError: not a finite number of seconds in (0, a century].
        """
        if not (
            isinstance(seconds, int | float)
            and not isinstance(seconds, bool)
            and math.isfinite(seconds)
            and 0 < seconds <= MAX_ADVANCE_SECONDS
        ):
            raise ValidationError(
                f"Seconds must be a number greater than 0 and at most "
                f"{MAX_ADVANCE_SECONDS:.0f}, not {seconds!r}"
            )
        self.offset += float(seconds)
        return self()
