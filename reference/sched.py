"""A deterministic scheduler: several callers ("tasks") run system calls on one simulated kernel
at the same time, one at a time, switching only at yield points, in an order a schedule decides.

The driver serializes every ashmem call on `ashmem_mutex`, so a correct call runs whole and the
simulator's calls have no yield point inside: the task switches happen between calls (the caller
offers one after each). A racy implementation (a mutant, a port that forgets a lock) calls
`point()` where its lock is missing, and the schedule can then run another task in the window.
(5.10's shrinker does drop the mutex around each hole punch, and PIN/UNPIN wait for punches in
flight; the spec treats a purge as one step, so the simulator keeps it whole.)

Each task runs in a thread of its own, but only the one holding the baton runs: a yield point
passes the baton to the task the schedule names and waits for it to come back. Each entry of the
schedule decides one yield point: stay, or switch to one of the other tasks still running. A
switch inside a call (where a lock is dropped) is what exposes a race, so there the entry
switches three times in four; between calls, one time in two, and one time in four while another
task is suspended inside a call, so that the others run several calls in that window. Once the
schedule is used up, tasks take turns. So the same schedule gives the same interleaving, every
time: races replay exactly, and Hypothesis can draw and shrink the schedule like any other
argument.

`point()` is a no-op outside `Scheduler.run`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

_local = threading.local()  # .scheduler: the Scheduler running this thread's task, if any


class Scheduler:
    def __init__(self, schedule: Sequence[int]) -> None:
        self.schedule = list(schedule)
        self.turn = 0           # yield points passed: the index into the schedule
        self.current = -1       # the task holding the baton
        self.done: list[bool] = []
        self.errors: list[BaseException] = []
        self.cond = threading.Condition()
        self.suspended: set[int] = set()  # tasks waiting at a yield point inside a call

    def run(self, tasks: Sequence[Callable[[], None]]) -> None:
        """Run every task to its end under the schedule; re-raises the first task's exception."""
        self.done = [False] * len(tasks)
        threads = [threading.Thread(target=self._task, args=(i, t), daemon=True) for i, t in enumerate(tasks)]
        for thread in threads:
            thread.start()
        with self.cond:
            self._pass_baton()
            while not all(self.done):
                self.cond.wait()
        for thread in threads:
            thread.join()
        if self.errors:
            raise self.errors[0]

    def point(self, inside: bool = True) -> None:
        """A yield point of the running task (`inside` a call, or between two): the schedule may
        run another task here."""
        me = _local.task
        with self.cond:
            if inside:
                self.suspended.add(me)
            self._pass_baton(inside)
            self.cond.wait_for(lambda: self.current == me)
            self.suspended.discard(me)

    def _task(self, index: int, body: Callable[[], None]) -> None:
        _local.scheduler, _local.task = self, index
        with self.cond:
            self.cond.wait_for(lambda: self.current == index)
        try:
            body()
        except BaseException as exc:  # handed to run(), which re-raises it
            self.errors.append(exc)
        finally:
            with self.cond:
                self.done[index] = True
                if not all(self.done):
                    self._pass_baton()
                self.cond.notify_all()
            _local.scheduler = None

    def _pass_baton(self, inside: bool = False) -> None:
        """Choose the next task (the lock is held) and wake everyone: only it goes on."""
        runnable = [i for i, finished in enumerate(self.done) if not finished]
        others = [i for i in runnable if i != self.current]
        if self.turn < len(self.schedule):
            entry = self.schedule[self.turn]
            window = bool(self.suspended - {self.current})  # another task is inside a call
            stay = self.current in runnable and (entry % 4 == 0 if inside else entry % 4 != 0 if window
                                                 else entry % 2 == 0)
            choice = self.current if stay or not others else others[entry // 4 % len(others)]
        else:
            after = [i for i in runnable if i > self.current]
            choice = after[0] if after else runnable[0]
        self.turn += 1
        self.current = choice
        self.cond.notify_all()


def point(inside: bool = True) -> None:
    """A yield point, inside a call unless said (outside a Scheduler: nothing)."""
    scheduler: Scheduler | None = getattr(_local, "scheduler", None)
    if scheduler is not None:
        scheduler.point(inside)
