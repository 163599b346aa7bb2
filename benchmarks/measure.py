"""Run one command in a child process and measure it: wall time, CPU time, peak RSS.

Peak RSS is the largest *sum* of resident memory over the child and all its descendants
(Beam's ``multi_processing`` workers are separate processes), sampled every 50 ms with
psutil, and never less than the high-water mark (``VmHWM``) of any single process in the
tree, which the kernel keeps exactly. Shared pages are counted once per process, so for forked
workers the figure is an upper bound. (Not ``ru_maxrss`` from ``wait4``: Linux carries the
forked parent's RSS into the child's ``ru_maxrss`` across ``exec``, so every child would
report at least this benchmark driver's own size.)

A memory cap (:class:`MemoryCap`) runs the child in a fresh cgroup with a memory limit when
this process may create one (cgroup v2 or v1, as root), else under ``prlimit --as``.

Example:
    >>> result = run_measured([sys.executable, "-c", "print(1)"])  # doctest: +SKIP
    >>> result.wall_s, result.peak_rss_mb, result.returncode  # doctest: +SKIP
    (0.03, 9.1, 0)
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Sequence

import psutil

__all__ = ["Measured", "MemoryCap", "run_measured"]


@dataclass
class Measured:
    """What :func:`run_measured` saw."""

    wall_s: float
    cpu_s: float  # user + system of the child and the descendants it waited for
    peak_rss_mb: float  # peak of the summed RSS of the process tree
    max_process_rss_mb: float  # the largest single process (VmHWM)
    returncode: int
    stderr_tail: str = ""
    samples: list[tuple[float, float]] = field(default_factory=list)  # (seconds, tree RSS MB)


def _tree_rss(root: psutil.Process, high_water: dict[int, int]) -> int:
    """Summed RSS of ``root`` and its descendants; records each one's VmHWM in ``high_water``."""
    total = 0
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    for process in processes:
        try:
            total += process.memory_info().rss
            high_water[process.pid] = max(high_water.get(process.pid, 0), _vm_hwm(process.pid))
        except psutil.Error:
            pass
    return total


def _vm_hwm(pid: int) -> int:
    """The peak RSS of process ``pid`` since its last exec, in bytes (0 when unknown)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


class MemoryCap:
    """Run children under a memory limit: a cgroup when possible, else ``prlimit --as``.

    Args:
        limit_mb: the limit in MiB.

    ``how`` says which mechanism is used; ``wrap(cmd)`` and ``preexec`` are passed to
    :func:`run_measured`; ``oom_killed()`` says whether the cgroup killed something.
    """

    def __init__(self, limit_mb: int):
        if limit_mb <= 0:
            raise ValueError(f"limit_mb must be positive, got {limit_mb}")
        self.limit_mb = limit_mb
        self._dir: str | None = None
        self._version = 0
        self.how = f"prlimit --as={limit_mb}M (address space, per process)"

    def __enter__(self) -> "MemoryCap":
        limit = str(self.limit_mb * 1024 * 1024)
        name = f"beam_etl_bench_{uuid.uuid4().hex[:8]}"
        candidates = [
            (2, "/sys/fs/cgroup", "memory.max"),
            (2, "/sys/fs/cgroup/unified", "memory.max"),
            (1, "/sys/fs/cgroup/memory", "memory.limit_in_bytes"),
        ]
        for version, root, limit_file in candidates:
            controllers = os.path.join(root, "cgroup.controllers")
            if version == 2 and not (os.path.exists(controllers) and "memory" in open(controllers).read().split()):
                continue
            if version == 1 and not os.path.exists(os.path.join(root, limit_file)):
                continue
            path = os.path.join(root, name)
            try:
                os.mkdir(path)
                with open(os.path.join(path, limit_file), "w") as handle:
                    handle.write(limit)
                if version == 2 and os.path.exists(os.path.join(path, "memory.swap.max")):
                    with open(os.path.join(path, "memory.swap.max"), "w") as handle:
                        handle.write("0")
            except OSError:
                if os.path.isdir(path):
                    os.rmdir(path)
                continue
            self._dir, self._version = path, version
            self.how = f"cgroup v{version} memory limit {self.limit_mb} MiB ({path})"
            break
        return self

    def __exit__(self, *exc: object) -> None:
        if self._dir is not None:
            for _ in range(50):  # the cgroup can be removed once its last process is gone
                try:
                    os.rmdir(self._dir)
                    break
                except OSError:
                    time.sleep(0.1)

    def wrap(self, cmd: Sequence[str]) -> list[str]:
        if self._dir is not None:
            return list(cmd)
        return ["prlimit", f"--as={self.limit_mb * 1024 * 1024}", *cmd]

    @property
    def preexec(self) -> Callable[[], None] | None:
        if self._dir is None:
            return None
        procs = os.path.join(self._dir, "cgroup.procs")

        def join() -> None:
            with open(procs, "w") as handle:
                handle.write(str(os.getpid()))

        return join

    def oom_killed(self) -> bool:
        if self._dir is None:
            return False
        try:
            if self._version == 2:
                with open(os.path.join(self._dir, "memory.events")) as handle:
                    events = dict(line.split() for line in handle if line.strip())
                return int(events.get("oom_kill", 0)) > 0
            with open(os.path.join(self._dir, "memory.oom_control")) as handle:
                values = dict(line.split() for line in handle if line.strip())
            return int(values.get("oom_kill", 0)) > 0
        except (OSError, ValueError):
            return False


def run_measured(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    cap: MemoryCap | None = None,
    sample_every: float = 0.05,
    log_path: str | None = None,
) -> Measured:
    """Run ``cmd`` to completion and measure it.

    Args:
        cmd: the command (``[sys.executable, "-m", ...]``).
        env: its environment (default: this process's).
        cwd: its working directory.
        cap: run it under this memory cap.
        sample_every: RSS sampling interval in seconds.
        log_path: where its stdout and stderr go (default: discarded, the tail kept).
    """
    if cap is not None:
        cmd = cap.wrap(cmd)
    log = open(log_path, "wb") if log_path else None
    started = time.perf_counter()
    process = subprocess.Popen(
        list(cmd),
        env=env,
        cwd=cwd,
        stdout=log or subprocess.DEVNULL,
        stderr=log or subprocess.PIPE,
        preexec_fn=cap.preexec if cap is not None else None,
    )
    peak = 0
    high_water: dict[int, int] = {}
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    tail = bytearray()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(process.pid)
        while not stop.is_set():
            rss = _tree_rss(root, high_water)
            peak = max(peak, rss)
            samples.append((round(time.perf_counter() - started, 2), round(rss / 2**20, 1)))
            stop.wait(sample_every)

    def drain() -> None:
        if process.stderr is None:
            return
        for chunk in iter(lambda: process.stderr.read(65536), b""):
            tail.extend(chunk)
            del tail[:-20000]

    sampler = threading.Thread(target=sample, daemon=True)
    drainer = threading.Thread(target=drain, daemon=True)
    sampler.start()
    drainer.start()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    stop.set()
    sampler.join()
    drainer.join(timeout=5)
    process.returncode = os.waitstatus_to_exitcode(status)
    if log is not None:
        log.close()
        with open(log_path, "rb") as handle:
            handle.seek(max(0, os.path.getsize(log_path) - 20000))
            tail = bytearray(handle.read())
    # CPU times add up the child and the descendants it waited for. The largest single
    # process is its VmHWM as last sampled (ru_maxrss would include the forked parent's RSS).
    max_process = max(high_water.values(), default=0) / 2**20
    return Measured(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=max(peak / 2**20, max_process),
        max_process_rss_mb=max_process,
        returncode=process.returncode,
        stderr_tail=tail.decode("utf-8", "replace"),
        samples=samples,
    )


if __name__ == "__main__":  # a manual check: python -m benchmarks.measure CMD...
    result = run_measured(sys.argv[1:])
    print(f"wall {result.wall_s:.2f} s, cpu {result.cpu_s:.2f} s, peak RSS {result.peak_rss_mb:.0f} MB, rc {result.returncode}")
