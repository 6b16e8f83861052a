"""Executors: where independent pieces of work run.

A backend decides where a round's step runs (one process, Flower nodes); an
executor decides where independent tasks go: the firm's warm-start chains of
one seed, baseline fronts, defended fits. Every executor maps a function over
tasks and yields the results *in task order*, so results never depend on which
executor ran them. Chosen by name from ``[engine] executor``; the issue "Scale
out" adds Ray.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, Iterator, Protocol

__all__ = ["EXECUTORS", "Executor", "ProcessExecutor", "SerialExecutor", "make_executor", "shutdown_workers"]


class Executor(Protocol):
    """Maps ``fn`` over ``tasks`` (tuples of arguments), yielding results in task order."""

    name: str
    n_workers: int

    def map(self, fn: Callable, tasks: Iterable[tuple]) -> Iterator: ...


class SerialExecutor:
    """Everything in this process, one task after the other."""

    name = "serial"
    n_workers = 1

    def map(self, fn: Callable, tasks: Iterable[tuple]) -> Iterator:
        return (fn(*task) for task in tasks)


class ProcessExecutor:
    """Local worker processes (joblib's loky pool, reused across calls).

    With one worker it runs serially: starting a process to run one task
    costs more than the task.
    """

    name = "processes"

    def __init__(self, n_jobs: int = 2):
        self.n_workers = (os.cpu_count() or 1) if n_jobs == -1 else int(n_jobs)

    def map(self, fn: Callable, tasks: Iterable[tuple]) -> Iterator:
        if self.n_workers == 1:
            return SerialExecutor().map(fn, tasks)
        from joblib import Parallel, delayed

        return Parallel(n_jobs=self.n_workers, return_as="generator")(delayed(fn)(*task) for task in tasks)


EXECUTORS = {"serial": SerialExecutor, "processes": ProcessExecutor}


def make_executor(name: str = "processes", n_jobs: int = 2) -> Executor:
    """An executor by name; ``n_jobs`` (-1: all cores) sizes the process pool."""
    if name == "serial":
        return SerialExecutor()
    if name == "processes":
        return ProcessExecutor(n_jobs)
    raise ValueError(f"unknown executor {name!r}; allowed: {', '.join(EXECUTORS)}")


def shutdown_workers() -> None:
    """Stop the local worker processes now (on exit or interrupt, so none outlive the run)."""
    import sys

    loky = sys.modules.get("joblib.externals.loky.reusable_executor")
    pool = getattr(loky, "_executor", None)  # asking loky for the pool would start one
    if pool is not None:
        pool.shutdown(wait=False, kill_workers=True)
