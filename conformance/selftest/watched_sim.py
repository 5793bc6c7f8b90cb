"""The sim adapter as the mutation run drives it: a mutated simulator may raise or hang.

Imported only after mutation.py has pointed `ashcheck.reference` at the mutated copy (it imports
the simulator). Each operation runs under a watchdog (a step of the sim takes microseconds, so one
that runs for seconds is a hang: SIGALRM ends it), and whatever the simulator raises comes out
as SimulatorCrash, so that the mutation run can tell "the simulator broke" (the suite noticed the
mutant) from "the suite itself broke".
"""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import ClassVar

from ashcheck.adapters.sim import SimAdapter
from ashcheck.spec.ops import Op
from ashcheck.spec.outcome import Outcome


class SimulatorCrash(BaseException):  # the mutant's verdict, not an error of the suite
    """The mutated simulator raised inside `perform` (the cause holds what it raised). A
    BaseException: Hypothesis must not catch it as a failing test case and replay it."""


class StepHang(BaseException):
    """One operation ran longer than WatchedSim.step_seconds."""


class WatchedSim(SimAdapter):
    name = "sim"
    step_seconds: ClassVar[float] = 10.0
    parent: ClassVar[int] = os.getppid()  # the mutation run; when it is gone, so is this check

    def perform(self, op: Op) -> Outcome:
        if os.getppid() != self.parent:  # the run was interrupted: nobody waits for this verdict
            os._exit(3)
        previous = signal.signal(signal.SIGALRM, _hang)
        signal.setitimer(signal.ITIMER_REAL, self.step_seconds)
        try:
            return super().perform(op)
        except StepHang:
            raise
        except Exception as e:
            raise SimulatorCrash(f"{op}: {type(e).__name__}: {e}") from e
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def _hang(signo: int, frame: FrameType | None) -> None:
    raise StepHang(f"one operation ran longer than {WatchedSim.step_seconds} s")
