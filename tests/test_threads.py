"""Threads on a shared machine: the default count honours the CPUs this process may use (its
affinity mask and its cgroup's CPU quota, as `taskset` and containers set them), and each chunk
uses fewer while other processes keep the CPUs busy."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import pytest

from nemotron_cpp import NemotronModel

_THREADS = "import sys; from nemotron_cpp import NemotronModel; print(NemotronModel(sys.argv[1]).n_threads)"
CPUS = sorted(os.sched_getaffinity(0))

needs_two_cpus = pytest.mark.skipif(len(CPUS) < 2, reason="this machine lets the process use one CPU only")


def default_threads(model: Path, preexec: Optional[object] = None) -> int:
    out = subprocess.run([sys.executable, "-c", _THREADS, str(model)], capture_output=True, text=True, timeout=120,
                         preexec_fn=preexec)  # type: ignore[arg-type]
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


def test_default_is_at_most_the_cpus_of_the_process(fixtures_dir: Path) -> None:
    with NemotronModel(fixtures_dir / "layout-a-tiny.q8_0.gguf") as model:
        assert 1 <= model.n_threads <= len(CPUS)


@needs_two_cpus
def test_affinity_mask_limits_the_default(fixtures_dir: Path) -> None:
    model = fixtures_dir / "layout-a-tiny.q8_0.gguf"
    if default_threads(model) < 2:
        pytest.skip("the CPUs of this process are one physical core")
    assert default_threads(model, lambda: os.sched_setaffinity(0, {CPUS[0]})) == 1


@pytest.fixture()
def one_cpu_cgroup() -> Iterator[Path]:
    """A cgroup with a quota of one CPU (v2 cpu.max, else v1 cpu.cfs_quota_us), or a skip where this
    process may not make one."""
    root = Path("/sys/fs/cgroup")
    name = f"nemotron-test-{uuid.uuid4().hex[:8]}"
    if "cpu" in (root / "cgroup.controllers").read_text().split() if (root / "cgroup.controllers").exists() else False:
        group, limits = root / name, {"cpu.max": "100000 100000"}
    else:
        group, limits = root / "cpu" / name, {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "100000"}
    try:
        group.mkdir()
        for key, value in limits.items():
            (group / key).write_text(value)
    except OSError as e:
        if group.exists():
            group.rmdir()
        pytest.skip(f"cannot make a cgroup with a CPU quota here ({e})")
    try:
        yield group
    finally:
        group.rmdir()


@needs_two_cpus
def test_cgroup_quota_limits_the_default(fixtures_dir: Path, one_cpu_cgroup: Path) -> None:
    model = fixtures_dir / "layout-a-tiny.q8_0.gguf"
    if default_threads(model) < 2:
        pytest.skip("the CPUs of this process are one physical core")

    def enter() -> None:
        (one_cpu_cgroup / "cgroup.procs").write_text(str(os.getpid()))

    assert default_threads(model, enter) == 1
    with NemotronModel(model, n_threads=2) as given:  # an explicit count is the caller's choice
        assert given.n_threads == 2


@needs_two_cpus
def test_fewer_threads_while_other_processes_keep_the_cpus_busy(fixtures_dir: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """ggml's workers wait for each other after every operation: with a busy loop on every CPU the
    engine computes each chunk with one thread, and with all of them again once the CPUs are free."""
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    caplog.set_level(logging.DEBUG, logger="nemotron_cpp")
    with NemotronModel(fixtures_dir / "layout-a-tiny.q8_0.gguf", n_threads=2) as model, \
            model.stream(80, endpointing=False) as stream:
        stream.feed(audio)
        loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in CPUS]
        try:
            time.sleep(0.5)
            stream.feed(audio)
            # The engine says when the count changes (a busy machine may have lowered it already).
            changes = [m for m in caplog.messages if "computing with" in m]
            assert changes[-1] == "other tasks are using the CPUs: computing with 1 of 2 threads"
        finally:
            for loop in loops:
                loop.kill()
                loop.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the engine looks at the load at most every 10 ms
            time.sleep(0.05)
            stream.feed(audio)
            changes = [m for m in caplog.messages if "computing with" in m]
            if changes and changes[-1] == "the CPUs are free again: computing with 2 of 2 threads":
                break
        assert changes[-1] == "the CPUs are free again: computing with 2 of 2 threads"
