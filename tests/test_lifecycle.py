"""A killed command line takes its temporary Prefect server with it.

The CLI runs in a subprocess without ``PREFECT_API_URL``, so it starts a temporary server (a
uvicorn child). Once that server listens, the CLI is killed; no process it started may stay.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from flows.embed_corpus import DEMO_CORPUS

psutil = pytest.importorskip("psutil")
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def start_cli(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """``python -m flows.embed_corpus`` on 300 demo rows, with a server of its own."""
    corpus = tmp_path / "corpus.csv"
    pd.read_csv(DEMO_CORPUS, keep_default_na=False, dtype=str).head(300).to_csv(corpus)
    log = tmp_path / "cli.log"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    args = [str(corpus), "--id-column", "package", "--chunk-size", "20", "--no-progress"]
    for flag, name in [("--output", "out/e.h5"), ("--cache-dir", "cache"), ("--report-dir", "r")]:
        args += [flag, str(tmp_path / name)]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.embed_corpus", *args],
            cwd=ROOT,
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return proc, log


def listening_server(proc: subprocess.Popen, log: Path) -> psutil.Process:
    """The CLI's uvicorn child, once it accepts connections."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                if "uvicorn" in " ".join(child.cmdline()) and any(
                    c.status == psutil.CONN_LISTEN for c in child.net_connections()
                ):
                    return child
            except psutil.Error:  # gone, or a zombie, since it was listed
                continue
        time.sleep(0.2)
    pytest.fail(f"the CLI's server never listened:\n{log.read_text()}")


def running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def process_or_none(pid: int) -> psutil.Process | None:
    """The process, or None when it has already exited (in "close" mode the parent may
    finish before the test looks)."""
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def survivors(processes: list[psutil.Process], within: float) -> str:
    """Those still running (zombies count as gone) after up to ``within`` seconds, described
    ("" for none)."""
    deadline = time.monotonic() + within
    while any(map(running, processes)) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = []
    for p in processes:
        try:
            if running(p):
                left.append(f"{p.pid}: {' '.join(p.cmdline())[:120]}")
        except psutil.Error:
            continue
    return "; ".join(left)


def kill_all(proc: subprocess.Popen, processes: list[psutil.Process]) -> None:
    """Whatever the test's outcome, leave nothing running."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for p in processes:
        if running(p):
            p.kill()


def test_sigkill_leaves_no_process_behind(tmp_path):
    proc, log = start_cli(tmp_path)
    descendants: list[psutil.Process] = []
    try:
        server = listening_server(proc, log)
        descendants = psutil.Process(proc.pid).children(recursive=True)
        assert server in descendants
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        left = survivors(descendants, within=15)
        assert not left, f"still running after kill -9 of the CLI: {left}"
    finally:
        kill_all(proc, descendants)


def test_sigterm_stops_the_run_and_its_server(tmp_path):
    proc, log = start_cli(tmp_path)
    descendants: list[psutil.Process] = []
    try:
        listening_server(proc, log)
        descendants = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
        left = survivors(descendants, within=2)
        assert not left, f"still running after the CLI exited: {left}"
        assert code == 128 + signal.SIGTERM, log.read_text()
        assert "stopped by SIGTERM" in log.read_text()
    finally:
        kill_all(proc, descendants)


PARENT = """
import subprocess, sys, time
from flows.cli import Watchdog
watchdog = Watchdog().start()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
watchdog.guard(child.pid)
print(child.pid, watchdog.process.pid, flush=True)
if sys.argv[1] == "close":
    child.kill(); child.wait(); watchdog.close(); print("closed", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("how", ["kill", "close"])
def test_watchdog_kills_what_it_guards_when_its_parent_dies(tmp_path, how):
    """Fast, without Prefect: a parent guards a sleeping child, then is killed (the child
    must die) or closes the watchdog first (the watchdog exits, touching nothing)."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, how], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    watched: list[psutil.Process] = []
    try:
        child, watchdog = map(int, parent.stdout.readline().split())
        watched = [p for p in map(process_or_none, (child, watchdog)) if p is not None]
        if how == "close":
            assert parent.stdout.readline().strip() == "closed"
            assert not survivors(watched, within=10)
            return
        parent.kill()
        parent.wait()
        assert not survivors(watched, within=10)
    finally:
        kill_all(parent, watched)


def test_temporary_server_answers_without_the_app_imported_here(tmp_path):
    """The server child answers the API; this process never imports the server's app (1.5 s
    of imports only the child needs), and the child is gone after the block."""
    script = (
        "import sys, httpx\n"
        "import flows.embed_corpus\n"
        "from flows.cli import temporary_server\n"
        "with temporary_server() as url:\n"
        "    print(httpx.get(url + '/health').status_code)\n"
        "    print('prefect.server.api.server' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    before = {p.pid for p in psutil.process_iter()}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["200", "False"]
    assert "Starting temporary server on http://127.0.0.1:" in done.stderr
    assert "Stopping temporary server" in done.stderr
    time.sleep(0.5)
    left = [
        p.cmdline()
        for p in psutil.process_iter()
        if p.pid not in before and "uvicorn" in " ".join(p.cmdline())
    ]
    assert left == []
