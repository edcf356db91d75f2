"""Helpers shared by the benchmarks: the environment line and a meter of other processes' CPU use.

A benchmark on a shared machine is only as good as the machine was quiet. ``CpuMeter`` measures,
over a timed section, how many cores *other* processes kept busy on average: the machine's busy
time from /proc/stat less this process's own CPU time (os.times, children included). A value
near 0 means the timing is clean; 1 on a 2-core machine means half the machine was taken.
"""

from __future__ import annotations

import datetime
import os
import platform
import time


def _machine_busy_seconds():
    """CPU-seconds spent busy by all cores since boot (None where /proc/stat is missing)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds():
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class CpuMeter:
    """``with CpuMeter() as m: ...``; then ``m.other_cores`` (mean cores used by other processes)."""

    def __enter__(self):
        self.busy0, self.own0, self.t0 = _machine_busy_seconds(), _own_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t0
        busy = _machine_busy_seconds()
        if busy is None or self.busy0 is None or wall <= 0:
            self.other_cores = float("nan")
        else:
            other = (busy - self.busy0) - (_own_seconds() - self.own0)
            self.other_cores = max(0.0, other / wall)
        return False


def environment(threads):
    """Lines describing the machine, the versions and how busy the machine was at the start."""
    import numba
    import numpy as np

    import spingpu

    try:
        import torch

        tv = torch.__version__
    except ImportError:
        tv = "not installed"
    with CpuMeter() as m:
        time.sleep(1.0)
    return [f"date {datetime.date.today().isoformat()}, {platform.platform()}, python {platform.python_version()}",
            f"cores {os.cpu_count()}, numba threads {numba.get_num_threads()}, torch threads {threads}, "
            f"spingpu {spingpu.__version__}, numba {numba.__version__}, numpy {np.__version__}, torch {tv}",
            f"other processes at start: {m.other_cores:.2f} cores busy" +
            ("   WARNING: the machine is shared; timings will be low" if m.other_cores > 0.2 else "")]
