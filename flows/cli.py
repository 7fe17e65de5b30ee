"""What both command lines share: a temporary Prefect server tied to the process's life,
signals that stop a run cleanly, checks made before a server starts, and one-line errors.

Without ``PREFECT_API_URL``, a flow run needs a temporary server: a uvicorn child process
(about 230 MB) that Prefect stops when Python exits normally. A killed process never gets
there, so the command lines (``python -m flows.embed_corpus``, ``python -m
flows.train_difference``) run their flow inside two context managers:

* :func:`stop_on_signals` turns SIGTERM and SIGINT into :class:`Stopped`, raised in the main
  thread: the flow run is marked crashed and every ``finally`` runs, the server's stop
  included; a second signal exits at once.
* :func:`temporary_server` starts the server itself (one server, which Dask workers share
  too) and a watchdog process that kills it when this process is gone, however it ended
  (``kill -9`` included): the watchdog holds the reading end of a pipe whose writing end
  only this process has, so the end of this process is the end of the pipe.

Nothing here imports Prefect or pydantic at import time: the watchdog is this file run as a
script, on the standard library alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import IO, Any

GRACE_SECONDS = 5.0  # how long the watchdog waits after SIGTERM before SIGKILL


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGINT arrived; ``exit_code`` is the shell's ``128 + signal number``.

    A ``KeyboardInterrupt``, so ``except Exception`` does not swallow it and Prefect marks
    the flow run crashed, as it does for Ctrl-C.

    >>> Stopped(signal.SIGTERM).exit_code, str(Stopped(signal.SIGTERM))
    (143, 'SIGTERM')
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def stop_on_signals(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
    """Within the block, the first of ``signals`` raises :class:`Stopped` in the main thread
    (so cleanup runs) and a second one exits at once with ``128 + signal number`` (the
    watchdog of :func:`temporary_server` still stops the server). Outside the main thread
    it does nothing. Prefect's own SIGTERM handling during a flow run hands the signal on
    to this handler once the run is marked crashed.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping: list[int] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        if stopping:
            os._exit(128 + signum)
        stopping.append(signum)
        raise Stopped(signum)

    previous = {signum: signal.signal(signum, handle) for signum in signals}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class Watchdog:
    """A process that kills the guarded processes when this one is gone.

    ``guard(pid)`` adds a process; ``close()`` ends the watchdog, leaving them alone (stop
    them first). If this process dies first, the watchdog's end of the pipe sees EOF and
    it sends SIGTERM to every guarded process still alive, then SIGKILL after
    :data:`GRACE_SECONDS`.
    """

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Watchdog:
        """Start the watchdog process (its pipe is inherited by no other child)."""
        self.process = subprocess.Popen(
            [sys.executable, "-I", os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            start_new_session=True,  # a terminal's Ctrl-C goes to the run, not to it
        )
        return self

    def _send(self, line: str) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def guard(self, pid: int) -> None:
        """Kill ``pid`` if this process dies before :meth:`close`."""
        self._send(f"+{pid}")

    def close(self) -> None:
        """End the watchdog without killing anything; waits for it to exit."""
        if self.process is None:
            return
        with contextlib.suppress(OSError):
            self._send("done")
        assert self.process.stdin is not None
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        _wait_or_kill(self.process, 10)
        self.process = None


def _wait_or_kill(process: subprocess.Popen[bytes], seconds: float) -> None:
    """Wait up to ``seconds`` for ``process`` to exit, else kill it; reaped either way."""
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def watch(stream: IO[bytes]) -> int:
    """The watchdog's loop: read ``+PID`` and ``done`` lines until EOF; at an EOF not
    preceded by ``done``, kill the guarded processes."""
    guarded: list[int] = []
    for line in stream:
        text = line.decode().strip()
        if text == "done":
            return 0
        if text.startswith("+"):
            guarded.append(int(text[1:]))
    for pid in guarded:
        _terminate(pid)
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead, waiting for its parent (or init) to reap it
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _terminate(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class TemporaryServer:
    """Prefect's temporary API server: the uvicorn child that Prefect's own
    ``SubprocessASGIServer`` runs (same command, environment and health check), started
    without importing the server's app into this process (1.5 s of imports here, which
    only the child needs). Its process is guarded by ``watchdog``."""

    def __init__(self, watchdog: Watchdog) -> None:
        self.watchdog = watchdog
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self, timeout: float) -> None:
        """Start the child and wait until ``/health`` answers (at most ``timeout`` s)."""
        import httpx
        from prefect.logging import get_logger

        self.port = _free_port()
        get_logger().info(
            "Starting temporary server on http://127.0.0.1:%d\nSee "
            "https://www.prefect.io/docs/v3/concepts/server#how-to-guides for more "
            "information on running a dedicated Prefect server.",
            self.port,
        )
        self.process = self._spawn()
        deadline = time.monotonic() + timeout
        with httpx.Client() as client:
            while time.monotonic() < deadline:
                code = self.process.poll()
                if code == 3:  # uvicorn's "address in use": another port
                    self.port = _free_port()
                    self.process = self._spawn()
                    continue
                if code is not None:
                    raise RuntimeError(f"the temporary Prefect server exited with code {code}")
                try:
                    if client.get(f"{self.api_url}/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise RuntimeError(
            f"the temporary Prefect server did not answer within {timeout:g} s "
            "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)"
        )

    def _spawn(self) -> subprocess.Popen[bytes]:
        import prefect
        from prefect.settings import get_current_settings

        env = {
            **os.environ,
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
            **get_current_settings().to_environment_variables(exclude_unset=True),
        }
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(prefect.__module_path__.parent),
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],
            env=env,
        )
        self.watchdog.guard(process.pid)
        return process

    def stop(self) -> None:
        """Stop the child: SIGTERM, then SIGKILL after 5 s."""
        if self.process is None:
            return
        from prefect.logging import get_logger

        get_logger().info("Stopping temporary server on http://127.0.0.1:%d", self.port)
        self.process.terminate()
        _wait_or_kill(self.process, 5)
        self.process = None


def _free_port() -> int:
    """A port in 8000-8999 that nothing listens on now (as Prefect picks one)."""
    import random
    import socket

    for _ in range(50):
        port = random.randrange(8000, 9000)
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 8000-8999 for the temporary Prefect server")


@contextlib.contextmanager
def temporary_server() -> Iterator[str | None]:
    """Run the block against a temporary Prefect server that cannot outlive this process;
    yields its API URL. With ``PREFECT_API_URL`` set, that server is used (yields ``None``).

    The server is stopped when the block ends, whichever way; if this process is killed,
    the watchdog stops it. Dask workers reach the same server through ``PREFECT_API_URL``
    (otherwise each worker process would start a server of its own).

    A flow called from Python outside this block uses Prefect's own temporary server, which
    a killed process (``kill -9``, out of memory) leaves running; to get the command line's
    guarantee, call it inside: ``with temporary_server(): embed_corpus(...)``.
    """
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    if PREFECT_API_URL.value():
        yield None
        return
    watchdog = Watchdog().start()
    server = None
    try:
        server = TemporaryServer(watchdog)
        server.start(timeout=PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            try:
                yield server.api_url
            finally:
                from prefect.logging.handlers import APILogHandler

                APILogHandler().flush()  # send the run's last logs while the server is up
    finally:
        if server is not None:
            server.stop()
        watchdog.close()


# -- before the server starts -------------------------------------------------------------
def check_model_loads(encoder: Any) -> None:
    """Load ``encoder``'s model now (it is needed anyway), so a model that is not on this disk
    fails before any work, in one line, instead of inside a task after its retries.

    Raises :class:`~embetter_core.errors.ModelUnavailableError` naming the model.
    """
    from embetter_core.errors import ModelUnavailableError

    try:
        encoder.load_weights()
    except (OSError, ValueError, RuntimeError) as exc:
        name = encoder.spec_params().get("model") or type(encoder).__name__
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        where = (
            "not available offline (HF_HUB_OFFLINE=1: models come from a local path, the "
            "packaged all-MiniLM-L6-v2 or the Hugging Face cache)"
            if offline
            else "not available"
        )
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelUnavailableError(f"model {name!r} is {where}: {reason}") from exc


def error_line(exc: BaseException, model: type[Any] | None = None) -> str:
    """The error as one line for a command-line user: each problem of a pydantic validation
    error of ``model``'s parameters named by its option (``--chunk-size``), anything else as
    ``Type: message``.

    >>> from pydantic import BaseModel, Field, ValidationError
    >>> class P(BaseModel):
    ...     chunk_size: int = Field(1, ge=1)
    >>> try:
    ...     P(chunk_size=0)
    ... except ValidationError as exc:
    ...     print(error_line(exc, P))
    --chunk-size: Input should be greater than or equal to 1
    """
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return f"{type(exc).__name__}: {exc}"
    from flows.params import option_name

    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        field = error["loc"][0] if error["loc"] else None
        if model is not None and field in model.model_fields:
            message = f"{option_name(model, str(field))}: {message}"
        problems.append(message)
    return "; ".join(problems)


if __name__ == "__main__":  # the watchdog process
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(watch(sys.stdin.buffer))
