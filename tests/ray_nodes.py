"""A real Ray cluster of two nodes on this machine, for tests: a head and a second node, each started by
``ray start --block`` with one CPU, its own temp folder and its own free ports.

Stopping. ``ray stop`` is not used: it kills every Ray process of the machine by name, other tests' and
other people's included. Each ``ray start`` runs in a session of its own instead (``start_new_session``);
every process Ray starts for that node (GCS, raylet, agents, workers, which change their process group
but not their session) stays in it. Stopping sends SIGTERM to the two ``ray start`` processes, which
stop their nodes, then SIGKILL to whatever is still left in either session, by pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 120.0  # a busy 2-core machine takes 10-30 s to bring up both nodes
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Cluster:
    address: str  # HOST:PORT of the head's GCS, what --address takes
    sessions: tuple[int, ...]  # session ids (= pids of the `ray start` processes) of both nodes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ray_command() -> str | None:
    """The `ray` console script beside this Python (a venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "ray"
    return str(beside) if beside.is_file() else shutil.which("ray")


def in_sessions(sessions: tuple[int, ...]) -> list[int]:
    """Pids of the live processes whose session is one of ``sessions``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (proc / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
            if fields[0] != "Z" and int(fields[3]) in sessions:  # state, ppid, pgrp, session
                found.append(int(proc.name))
    return found


def _node_ports() -> list[str]:
    """Every port a node listens on, free now, so two nodes (and other tests' Ray) never collide."""
    return [
        f"--node-manager-port={free_port()}",
        f"--object-manager-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
    ]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    ray = ray_command()
    assert ray, "the ray console script is not installed"
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    env.pop("ARROW_DEFAULT_MEMORY_POOL", None)  # as a node an admin starts: Arrow's own default there
    with log.open("wb") as out:
        return subprocess.Popen(
            ["nice", ray, "start", "--block", "--num-cpus=1", "--object-store-memory=80000000", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def _wait(check, what: str, procs: list[subprocess.Popen], logs: list[Path]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not check():
        dead = [log for p, log in zip(procs, logs, strict=True) if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            tail = dead[0].read_text(errors="replace")[-2000:] if dead else ""
            raise RuntimeError(f"the Ray cluster did not come up ({what}); {tail}")
        time.sleep(0.5)


@contextlib.contextmanager
def two_nodes(folder: Path) -> Iterator[Cluster]:
    """Start a head and a second node (one CPU each) under ``folder``; yield the cluster once both are
    in it; stop both and leave no process behind (checked: an assertion names any survivor)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    address = f"127.0.0.1:{port}"
    logs = [folder / "head.log", folder / "node.log"]
    procs: list[subprocess.Popen] = []
    try:
        procs.append(
            _start(
                [
                    "--head",
                    f"--port={port}",
                    "--include-dashboard=false",
                    f"--dashboard-port={free_port()}",
                    f"--temp-dir={folder / 'head'}",
                    "--disable-usage-stats",
                    *_node_ports(),
                ],
                logs[0],
            )
        )
        _wait(lambda: _listening(port), "head", procs, logs[:1])
        procs.append(
            _start(
                [
                    f"--address={address}",
                    f"--temp-dir={folder / 'node'}",
                    "--disable-usage-stats",
                    *_node_ports(),
                ],
                logs[1],
            )
        )
        _wait(lambda: _alive_nodes(folder, address) >= 2, "second node", procs, logs)
        yield Cluster(address, tuple(p.pid for p in procs))
    finally:
        _stop(procs)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _alive_nodes(folder: Path, address: str) -> int:
    """Nodes alive in the cluster, as a short-lived driver in a subprocess sees them (the test process
    itself joins the cluster only through the code under test)."""
    script = (
        "import ray;"
        f"ray.init(address={address!r}, include_dashboard=False, log_to_driver=False, logging_level='ERROR');"
        "print(sum(n['Alive'] for n in ray.nodes()))"
    )
    with contextlib.suppress(subprocess.SubprocessError, ValueError):
        run = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=folder
        )
        return int(run.stdout.strip().splitlines()[-1]) if run.returncode == 0 else 0
    return 0


def _stop(procs: list[subprocess.Popen]) -> None:
    sessions = tuple(p.pid for p in procs)
    for p in reversed(procs):  # the second node first, then the head
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGTERM)
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=STOP_TIMEOUT_S)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while (left := in_sessions(sessions)) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=5)
    assert not in_sessions(sessions), f"Ray processes left behind: {in_sessions(sessions)}"
