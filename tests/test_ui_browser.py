"""The Prefect UI, in a real browser: a flow run's summary and pairs table render.

Starts ``prefect server start`` on a free localhost port (its own PREFECT_HOME), runs the CLI
against it on a ~30-row corpus with near-duplicates, and opens the flow run's Artifacts tab
and the artifact pages in headless Debian Chromium through Playwright. Screenshots are kept
in the test's tmp dir. Skips only when ``/usr/bin/chromium`` is missing (``make browser``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
QUIET = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    "PYTHONUNBUFFERED": "1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"prefect server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/health", timeout=5) as resp,
        ):
            if resp.status == 200:
                return
        time.sleep(0.5)
    pytest.fail(f"prefect server not healthy after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory) -> Iterator[str]:
    """A real ``prefect server start`` on a free port; yields its API URL."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, **QUIET, "PREFECT_HOME": str(home), "PREFECT_API_URL": api_url}
    log = home / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start",
             "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: we stop it and its children
        )  # fmt: skip
    try:
        wait_healthy(api_url, proc, log)
        yield api_url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def near_duplicate_corpus(path: Path) -> Path:
    """30 rows: 24 distinct descriptions and 6 lightly reworded copies of the first six."""
    topics = [
        "network interfaces", "disk quotas", "printer queues", "system logs",
        "user accounts", "cron jobs", "kernel modules", "font caches", "mail spools",
        "package mirrors", "time zones", "firewall rules", "audio devices",
        "locale settings", "swap space", "ssh keys", "bluetooth pairing", "web proxies",
        "backup snapshots", "screen savers", "spell checking", "tape drives",
        "serial consoles", "dns resolvers",
    ]  # fmt: skip
    base = [f"Command-line tool to inspect and configure {t} on Debian" for t in topics]
    near = [f"Command line tool for inspecting and configuring {t} on Debian." for t in topics[:6]]
    ids = [f"deb-{i:03d}" for i in range(len(base))] + [f"dup-{i:03d}" for i in range(6)]
    pd.DataFrame({"id": ids, "text": base + near}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def flow_run(prefect_server, tmp_path_factory) -> dict:
    """Run the CLI against the server; return the run's id, artifacts and output paths."""
    work = tmp_path_factory.mktemp("ui-run")
    corpus = near_duplicate_corpus(work / "tiny.csv")
    env = {**os.environ, **QUIET, "PREFECT_API_URL": prefect_server}
    env["PREFECT_HOME"] = str(work / "client-home")
    cmd = [
        sys.executable, "-m", "flows.embed_corpus", str(corpus), "--id-column", "id",
        "--output", str(work / "tiny.h5"), "--report-dir", str(work / "report"),
        "--cache-dir", str(work / "cache"), "--chunk-size", "10", "--no-progress",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (work / "tiny.h5").exists()
    pairs = pd.read_csv(work / "report" / "pairs.csv")
    assert len(pairs) >= 6, pairs

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings({PREFECT_API_URL: prefect_server}),
        get_client(sync_client=True) as client,
    ):
        runs = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC)
        mine = [r for r in runs if r.parameters.get("output") == str(work / "tiny.h5")]
        assert len(mine) == 1, runs
        run = mine[0]
        assert run.state_type.value == "COMPLETED", run.state
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
    # A run has several markdown artifacts (the summary, the outputs): pick them by key.
    by_key = {a.key: a for a in artifacts}
    wanted = {"embed-corpus-summary": "markdown", "embed-corpus-top-pairs": "table"}
    assert all(key in by_key and by_key[key].type == kind for key, kind in wanted.items()), [
        (a.key, a.type) for a in artifacts
    ]
    return {
        "id": str(run.id),
        "name": run.name,
        "markdown": by_key["embed-corpus-summary"],
        "table": by_key["embed-corpus-top-pairs"],
        "pairs": pairs,
        "work": work,
    }


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    """A headless Debian Chromium page (a brand-new profile), driven by Playwright."""
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed at /usr/bin/chromium: run `make browser`")
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        page = context.new_page()
        yield page
        context.close()


def base_url(api_url: str) -> str:
    return api_url.removesuffix("/api")


def test_flow_run_artifacts_tab_links_to_the_summary(
    prefect_server, flow_run, browser_page, tmp_path
):
    page = browser_page
    root = base_url(prefect_server)
    page.goto(root + "/", wait_until="networkidle", timeout=90_000)
    assert page.url.startswith(root + "/v2"), page.url  # this Prefect serves its V2 UI by default
    page.goto(
        f"{root}/v2/runs/flow-run/{flow_run['id']}?tab=Artifacts",
        wait_until="networkidle",
        timeout=90_000,
    )
    page.get_by_text(flow_run["name"]).first.wait_for(timeout=60_000)
    card = page.get_by_text("embed-corpus-summary").first
    card.wait_for(timeout=60_000)
    page.screenshot(path=str(tmp_path / "flow-run-artifacts.png"), full_page=True)
    body = page.inner_text("body")
    assert "Completed" in body
    for key in ["embed-corpus-summary", "embed-corpus-top-pairs", "embed-corpus-progress"]:
        assert key in body, body[:2000]
    card.click()
    page.get_by_role("heading", name="Near-duplicate report").wait_for(timeout=60_000)
    assert f"/artifacts/artifact/{flow_run['markdown'].id}" in page.url, page.url
    page.screenshot(path=str(tmp_path / "summary-from-tab.png"), full_page=True)


def test_markdown_summary_renders(prefect_server, flow_run, browser_page, tmp_path):
    page = browser_page
    page.goto(
        f"{base_url(prefect_server)}/v2/artifacts/artifact/{flow_run['markdown'].id}",
        wait_until="networkidle",
        timeout=90_000,
    )
    heading = page.get_by_role("heading", name="Near-duplicate report")
    heading.wait_for(timeout=60_000)
    page.screenshot(path=str(tmp_path / "summary.png"), full_page=True)
    # markdown became HTML: a heading and a table, not the raw "# ..." / "| ... |" source
    body = page.inner_text("body")
    assert "# Near-duplicate report" not in body and "|---|" not in body
    summary: dict[str, str] = {}
    for tr in page.locator("tr").all():
        cells = [c.strip() for c in tr.locator("td").all_inner_texts()]
        if len(cells) == 2:
            summary.setdefault(cells[0], cells[1])
    assert summary["rows"] == "30", summary
    assert summary["duplicate pairs"] == str(len(flow_run["pairs"])), summary
    assert summary["cache hits / misses"] == "0 / 30", summary
    assert summary["store"] == str(flow_run["work"] / "tiny.h5"), summary
    assert page.get_by_role("heading", name="Largest clusters").count() == 1
    assert page.locator("li").filter(has_text="dup-000").count() == 1


def test_pairs_table_renders(prefect_server, flow_run, browser_page, tmp_path):
    page = browser_page
    page.goto(
        f"{base_url(prefect_server)}/v2/artifacts/artifact/{flow_run['table'].id}",
        wait_until="networkidle",
        timeout=90_000,
    )
    table = page.locator("table").first
    table.wait_for(timeout=60_000)
    page.screenshot(path=str(tmp_path / "pairs-table.png"), full_page=True)
    headers = [h.strip() for h in table.locator("th").all_inner_texts()]
    assert headers[:3] == ["id_a", "id_b", "score"], headers
    shown = {}
    for tr in table.locator("tbody tr").all():
        cells = [c.strip() for c in tr.locator("td").all_inner_texts()]
        shown[frozenset(cells[:2])] = float(cells[2])
    pairs = flow_run["pairs"]
    assert len(shown) == len(pairs)
    for a, b, score in zip(pairs["id_a"], pairs["id_b"], pairs["score"], strict=True):
        assert shown[frozenset({a, b})] == pytest.approx(score, abs=1e-5), (a, b, shown)
