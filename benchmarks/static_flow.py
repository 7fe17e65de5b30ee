"""The whole embed-corpus flow on all 63,482 Debian rows with ``--encoder static``, cold and warm.

    python -m benchmarks.static_flow [--rows 0] [--threshold T] [--dedupe-method auto]

Issue 11's targets, tightened by issue 22 (cold 20 s, warm 8 s, the report step 1 s): the
real command line,
``python -m flows.embed_corpus DEBIAN --id-column id --encoder static ...``, run as a
subprocess (with the offline defaults of ``flows.offline``) twice on the same folders: cold
(an empty embedding cache) and warm (the same command again, every row a cache hit). First,
apart, the distilled static model is made ready in ``$EMBETTER_CORE_HOME`` (distilled on
first use only, about 20 s; loaded otherwise), so "cold" means a cold embedding cache, not
a model to distil.

Per run it prints the wall time from the command's start to its exit, and out of it the
Prefect temporary server's start (from Prefect's ``Starting temporary server`` line to the
flow run's first line, which follows the server's health check and the flow run's creation;
the model loads beside it, and what of the load outlasts the start, the command line's
``model load: S s`` line, is counted, not left out): the target is the time from the start
to the report (the flow's ``done`` line) less the server start, at most 20 s cold and 8 s
warm; the time to the exit is printed too. Stages come from the arrival times of the flow's
log lines (each task run's ``Finished`` line): startup (imports, parameter checks) before
the server, ingest, embed and persist (summed
over chunks), commit, dedupe, report, and the shutdown after the flow. Peak RSS: of the flow
process itself (the kernel's high-water mark ``VmHWM``, read every ``--poll`` seconds: a peak
between the last read and the exit is missed), of the whole process tree (the flow, Prefect's
server and the watchdog: the largest sum of their RSS over the same polls, so a spike shorter
than a poll can be missed), and ``wait4``'s ``ru_maxrss`` (the largest single process among
the flow and the children it waited for: exact, but not a sum).

Without ``--threshold`` the flow runs at the static encoder's recommended threshold (its
default, ``StaticEncoder.recommended_threshold``), as a user's run does. The machine's load
average is printed before and after each run: on a shared machine, read the times with it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from benchmarks.data import DEBIAN
from flows.offline import use_offline_defaults

SUMMARY = re.compile(
    r"rows: (?P<rows>\d+) \(skipped \d+\); cache: (?P<cache_hits>\d+) hits, "
    r"(?P<cache_misses>\d+) misses; (?P<pairs>\d+) pairs in (?P<clusters>\d+) clusters "
    r"\((?P<dedupe_method>\w+)\); (?P<seconds>[\d.]+) s"
)
SERVER_START = "Prefect server start (model load beside it)"
WARMUP = """
import sys, time
t0 = time.perf_counter()
from embetter_core.encoders.static import StaticEncoder, folder_problem
enc = StaticEncoder()
folder = enc.distilled_folder()
ready = folder_problem(folder, enc.distill_settings()) is None
enc.transform(["warm up"])
print(f"RESULT {ready} {time.perf_counter() - t0:.2f} {folder}")
"""


@dataclass
class Run:
    """One flow subprocess: its output lines (seconds since its start, text) and memory."""

    wall: float = 0.0
    returncode: int = 0
    lines: list[tuple[float, str]] = field(default_factory=list)
    flow_hwm_mib: float = 0.0  # VmHWM of the flow process, last read
    tree_peak_mib: float = 0.0  # largest sum of RSS over the process tree, sampled
    server_peak_mib: float = 0.0  # largest RSS of Prefect's uvicorn server, sampled
    maxrss_mib: float = 0.0  # wait4 ru_maxrss: largest single process, exact
    polls: int = 0

    def at(self, *needles: str, last: bool = False) -> float | None:
        """Arrival time of the first (or last) line holding every needle."""
        hits = [t for t, line in self.lines if all(n in line for n in needles)]
        if not hits:
            return None
        return hits[-1] if last else hits[0]

    def seconds_after(self, prefix: str) -> float:
        """The seconds a ``PREFIX<seconds> s ...`` line gives (0 without one)."""
        for _, line in self.lines:
            if line.startswith(prefix):
                return float(line[len(prefix) :].split()[0])
        return 0.0

    def result(self) -> dict[str, object]:
        """The flow's result, from its ``done: {...}`` log line, else from the summary line
        the command line prints (``rows: N (skipped S); cache: H hits, M misses; ...``)."""
        for _, line in self.lines:
            if " - done: {" in line:
                return json.loads(line.split(" - done: ", 1)[1])
        for _, line in self.lines:
            if found := SUMMARY.match(line):
                fields = found.groupdict()
                return {
                    k: v if k in ("dedupe_method", "seconds") else int(v) for k, v in fields.items()
                }
        return {}


def hwm_mib(pid: int) -> float:
    """The kernel's peak resident set size of ``pid`` (``VmHWM``), in MiB; 0 if gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_flow(cmd: list[str], poll: float) -> Run:
    """Run ``cmd``, timing each output line's arrival and polling the memory of its tree."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    run = Run()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            run.lines.append((time.perf_counter() - t0, raw.decode(errors="replace").rstrip()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    flow = psutil.Process(proc.pid)
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        run.flow_hwm_mib = max(run.flow_hwm_mib, hwm_mib(proc.pid))
        total = 0
        try:
            members = [flow, *flow.children(recursive=True)]
        except psutil.NoSuchProcess:
            members = []
        for member in members:
            try:
                rss = member.memory_info().rss
                if any("uvicorn" in part for part in member.cmdline()):
                    run.server_peak_mib = max(run.server_peak_mib, rss / 2**20)
            except psutil.Error:
                continue
            total += rss
        run.tree_peak_mib = max(run.tree_peak_mib, total / 2**20)
        run.polls += 1
        time.sleep(poll)
    run.wall = time.perf_counter() - t0
    run.returncode = proc.returncode = os.waitstatus_to_exitcode(status)
    run.maxrss_mib = usage.ru_maxrss / 1024
    reader.join(timeout=10)
    return run


def stages(run: Run) -> list[tuple[str, float | None]]:
    """Seconds per stage, from the arrival times of the flow's log lines."""
    server = run.at("Starting temporary server")
    began = run.at("Beginning flow run")
    ingest = run.at("Task run 'ingest-", "Finished in state")
    committed = run.at("Task run 'commit-store-", "Finished in state")
    deduped = run.at("Task run 'find-duplicates-", "Finished in state")
    reviewed = run.at("Task run 'write-review-", "Finished in state")  # runs before the report
    reported = run.at("Task run 'write-report-", "Finished in state")
    done = run.at(" - done: {")
    ended = run.at("Flow run", "Finished in state", last=True)
    # the model loads while the server starts; a load that outlasts the start is counted
    model_wait = run.seconds_after("model load: ")

    embed = persist = 0.0
    previous, chunks = ingest, 0
    for t, line in run.lines:  # one chunk in flight: embed, then persist (create-store first)
        if previous is None or "Finished in state" not in line:
            continue
        if re.search(r"Task run 'embed-chunk-\d+'", line):
            embed += t - previous
            previous, chunks = t, chunks + 1
        elif re.search(r"Task run '(persist-chunk-\d+|create-store-\w+)'", line):
            persist += t - previous
            previous = t

    def gap(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else b - a

    started = gap(server, began)
    server_start = None if started is None else started - model_wait
    return [
        ("startup: imports, checks", server),
        (SERVER_START, server_start),
        ("model load after the server start", model_wait),
        ("ingest (read + validate rows)", gap(began, ingest)),
        ("embed (cache reads + encoding)", embed if chunks else None),
        ("persist (store writes)", persist if chunks else None),
        ("cache tally, commit store", gap(previous, committed)),
        ("dedupe (find-duplicates)", gap(committed, deduped)),
        ("review page (write-review)", gap(deduped, reviewed)),
        ("report (write-report)", gap(reviewed or deduped, reported)),
        ("record kept, result", gap(reported, done)),
        ("flow run end", gap(done, ended)),
        ("shutdown: server stop, exit", gap(ended, run.wall)),
    ]


def show(label: str, run: Run, target: float, report_target: float) -> float:
    """Print one run's figures; returns its time without the server start."""
    print(f"\n{label} run: exit status {run.returncode}, load {os.getloadavg()[0]:.2f} after")
    if run.returncode != 0:
        print("\n".join(line for _, line in run.lines[-40:]))
        sys.exit(f"the {label} run failed")
    result = run.result()
    parts = stages(run)
    server = dict(parts)[SERVER_START] or 0.0
    report = run.at(" - done: {")
    for name, secs in parts:
        print(f"  {name:38s}: " + ("     n/a" if secs is None else f"{secs:8.2f} s"))
    print(f"  {'wall, start to exit':38s}: {run.wall:8.2f} s")
    to_exit = run.wall - server
    # the target counts from the start to the report (the flow's "done" line), as the issue
    # words it; the shutdown after it is printed apart
    without = to_exit if report is None else report - server
    print(
        f"  {'start to report, without server start':38s}: {without:8.2f} s  "
        f"(target <= {target:g} s: {without / target:.2f} of it, "
        f"{'PASS' if without <= target else 'FAIL'})"
    )
    print(f"  {'start to exit, without server start':38s}: {to_exit:8.2f} s")
    step = dict(parts)["report (write-report)"]
    if step is not None:
        print(
            f"  {'report step':38s}: {step:8.2f} s  (target <= {report_target:g} s: "
            f"{step / report_target:.2f} of it, {'PASS' if step <= report_target else 'FAIL'})"
        )
    print(
        f"  rows {result.get('rows')}, cache {result.get('cache_hits')} hits / "
        f"{result.get('cache_misses')} misses, {result.get('pairs')} pairs in "
        f"{result.get('clusters')} clusters, {result.get('removed')} removed, dedupe engine "
        f"{result.get('dedupe_method')!r}, flow's own seconds {result.get('seconds')}"
    )
    print(
        f"  peak RSS: flow process {run.flow_hwm_mib:7.0f} MiB (VmHWM), process tree "
        f"{run.tree_peak_mib:7.0f} MiB (sum, sampled {run.polls}x), Prefect server "
        f"{run.server_peak_mib:5.0f} MiB (sampled), largest single process "
        f"{run.maxrss_mib:7.0f} MiB (wait4 ru_maxrss)"
    )
    return without


def main(argv: list[str] | None = None) -> None:
    use_offline_defaults()  # the subprocesses inherit them
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(DEBIAN), help="default: the Debian corpus")
    parser.add_argument("--rows", type=int, default=0, help="only the first N rows (0: all)")
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--dedupe-method", default="auto", choices=["auto", "exact", "ann"])
    parser.add_argument("--chunk-size", type=int, default=None, help="default: the flow's")
    parser.add_argument("--cold-target", type=float, default=20.0)
    parser.add_argument("--warm-target", type=float, default=8.0)
    parser.add_argument("--report-target", type=float, default=1.0, help="the report step, s")
    parser.add_argument("--poll", type=float, default=0.1, help="seconds between RSS reads")
    parser.add_argument("--workdir", default=None, help="keep the outputs here (default: temp)")
    args = parser.parse_args(argv)

    given = sys.argv[1:] if argv is None else argv
    print("command: " + shlex.join(["python", "-m", "benchmarks.static_flow", *given]))
    print(
        f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
        f"EMBETTER_CORE_HOME={os.environ.get('EMBETTER_CORE_HOME', '(unset)')}, "
        f"PREFECT_HOME={os.environ.get('PREFECT_HOME', '(unset)')}"
    )

    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", WARMUP], capture_output=True, text=True, check=False
    )
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT")), None)
    if line is None:
        sys.exit(f"the static model could not be made ready:\n{out.stderr[-3000:]}")
    ready, secs, folder = line.split(maxsplit=3)[1:]
    print(
        f"static model {'loaded (already distilled)' if ready == 'True' else 'distilled'} in "
        f"{float(secs):.1f} s ({time.perf_counter() - t0:.1f} s with the interpreter): {folder}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        corpus = args.corpus
        if args.rows:
            import pandas as pd

            frame = pd.read_csv(corpus, keep_default_na=False, dtype={"text": str})
            corpus = str(work / f"corpus-{args.rows}.csv")
            frame.head(args.rows).to_csv(corpus, index=False)
        cmd = [
            sys.executable,
            "-m",
            "flows.embed_corpus",
            corpus,
            "--id-column",
            "id",
            "--encoder",
            "static",
            "--dedupe-method",
            args.dedupe_method,
            "--output",
            str(work / "e.h5"),
            "--cache-dir",
            str(work / "cache"),
            "--report-dir",
            str(work / "report"),
            "--no-progress",
        ]
        if args.threshold is not None:
            cmd += ["--threshold", str(args.threshold)]
        if args.chunk_size:
            cmd += ["--chunk-size", str(args.chunk_size)]
        if (work / "cache").exists() and any((work / "cache").iterdir()):
            sys.exit(f"{work / 'cache'} is not empty: the cold run needs an empty cache")
        print("flow: " + shlex.join(cmd))
        cold = run_flow(cmd, args.poll)
        cold_s = show("cold", cold, args.cold_target, args.report_target)
        warm = run_flow(cmd, args.poll)
        warm_s = show("warm", warm, args.warm_target, args.report_target)
        import hashlib

        digest = hashlib.sha1((work / "report" / "pairs.csv").read_bytes()).hexdigest()[:12]
        print(f"  pairs.csv sha1: {digest}")

    print(
        f"\nsummary: cold {cold_s:.1f} s (target {args.cold_target:g}: "
        f"{cold_s / args.cold_target:.2f}, {'PASS' if cold_s <= args.cold_target else 'FAIL'}), "
        f"warm {warm_s:.1f} s (target {args.warm_target:g}: {warm_s / args.warm_target:.2f}, "
        f"{'PASS' if warm_s <= args.warm_target else 'FAIL'}), both without the server start "
        f"(cold {dict(stages(cold))[SERVER_START] or 0:.1f} s, warm "
        f"{dict(stages(warm))[SERVER_START] or 0:.1f} s); peak RSS of the flow "
        f"process {max(cold.flow_hwm_mib, warm.flow_hwm_mib):.0f} MiB, of the tree "
        f"{max(cold.tree_peak_mib, warm.tree_peak_mib):.0f} MiB; load {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
