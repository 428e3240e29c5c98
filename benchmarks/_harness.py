"""What every benchmark needs besides its own measurement: the machine's facts, an idle wait, a resource monitor.

Figures measured on a shared 2-core machine mean little without the machine, the versions and the load
they were taken under, so every results file carries `machine_facts()` and the load average; the
throughput benchmark also samples memory and the CPU share other processes took while it timed.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import threading
import time
from importlib import metadata

from malaria_lib.runtime import machine, versions

try:  # psutil is optional: without it RSS comes from /proc and the others' CPU share is not reported
    import psutil
except ImportError:  # pragma: no cover - depends on the environment
    psutil = None


def machine_facts() -> dict:
    """CPU, memory, platform, GPUs, the versions that decide the results, and the date (UTC)."""
    import platform

    import tensorflow as tf

    facts = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "machine": platform.machine(),
             "processor": platform.processor() or None, **versions(),
             "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
             "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    for name in ("pillow", "psutil", "ai-edge-litert"):
        try:
            facts[name.replace("-", "_")] = metadata.version(name)
        except metadata.PackageNotFoundError:
            facts[name.replace("-", "_")] = None
    if psutil is not None:
        facts["memory_total_gb"] = psutil.virtual_memory().total / 2**30
    recorded = machine()  # as train's result.json records them: the processor, TensorFlow's oneDNN kernels
    facts["cpu_model"], facts["onednn"] = recorded["cpu"], recorded["onednn"]
    return facts


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def wait_for_idle(max_load: float, max_wait: float, say) -> dict:
    """Poll the 1-minute load average until it is below max_load or max_wait seconds have passed."""
    started, checks = time.monotonic(), []
    while True:
        load = load_average()
        checks.append(load[0] if load else None)
        if load is None or load[0] < max_load or time.monotonic() - started >= max_wait:
            break
        say(f"load average {load[0]:.2f} >= {max_load}; waiting (up to {max_wait - (time.monotonic() - started):.0f} s more)")
        time.sleep(min(60.0, max(1.0, max_wait - (time.monotonic() - started))))
    return {"max_load": max_load, "max_wait_s": max_wait, "waited_s": time.monotonic() - started,
            "idle": load is None or load[0] < max_load, "load_checks": checks}


def rss_bytes() -> int | None:
    """Resident set size of this process now."""
    if psutil is not None:
        return psutil.Process().memory_info().rss
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_bytes() -> int:
    """The process's peak RSS so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class Monitor:
    """Samples RSS every `interval` s in a thread; also the CPU share other processes took meanwhile."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self._stop = threading.Event()

    def __enter__(self) -> Monitor:
        self.start_rss = self.peak_rss = rss_bytes() or 0
        self._wall = time.perf_counter()
        if psutil is not None:
            self._system = psutil.cpu_times()
            self._own = psutil.Process().cpu_times()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_rss = max(self.peak_rss, rss_bytes() or 0)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_rss = max(self.peak_rss, rss_bytes() or 0)
        self.wall = time.perf_counter() - self._wall
        self.others_cpu_share = None
        if psutil is not None:
            system, own = psutil.cpu_times(), psutil.Process().cpu_times()
            busy = sum(getattr(system, f) - getattr(self._system, f) for f in ("user", "nice", "system", "irq", "softirq")
                       if hasattr(system, f))
            mine = (own.user - self._own.user) + (own.system - self._own.system)
            self.others_cpu_share = max(0.0, busy - mine) / (self.wall * (os.cpu_count() or 1))

    def report(self) -> dict:
        return {"peak_rss_mb": self.peak_rss / 2**20, "rss_growth_mb": (self.peak_rss - self.start_rss) / 2**20,
                "others_cpu_share": self.others_cpu_share}
