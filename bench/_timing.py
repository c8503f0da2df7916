"""The benchmarks' one timer (imported by the scripts in this folder, which run with it on
``sys.path``)."""

import time


def best_of(fn, repeats: int, warmup: bool = False) -> float:
    """The shortest of ``repeats`` timed calls of ``fn`` (after one untimed call that compiles,
    with ``warmup``): the figure least disturbed by a shared machine's slow spells."""
    if warmup:
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
