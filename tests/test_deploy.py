"""``prefect.yaml`` deployed with Prefect's own CLI to a real server, run once by a real worker.

Against the session's Prefect test server (``prefect_harness``): ``prefect work-pool create``,
``prefect deploy --all`` and ``prefect worker start --run-once`` run as subprocesses of the
project's Python, exactly as the README ("Nightly runs") tells a person to run them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
POOL = "embetter-process"


def prefect_cli(*args: str, env: dict[str, str], timeout: float = 300) -> str:
    """Run ``python -m prefect ARGS`` in the project root; fail with its output if it fails."""
    proc = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"prefect {' '.join(args)} exited {proc.returncode}:\n{out}"
    return out


def tiny_corpus(path: Path) -> Path:
    """20 rows: 16 distinct Debian-style descriptions and 4 near-copies of the first ones."""
    base = [
        f"Utility number {i} for managing {topic} on Debian systems"
        for i, topic in enumerate(
            ["network interfaces", "disk quotas", "printer queues", "system logs",
             "user accounts", "cron jobs", "kernel modules", "font caches",
             "mail spools", "package mirrors", "time zones", "firewall rules",
             "audio devices", "locale settings", "swap space", "ssh keys"]
        )
    ]  # fmt: skip
    near = [t.replace("Utility", "A utility") + "." for t in base[:4]]
    frame = pd.DataFrame({"id": [f"pkg-{i:02d}" for i in range(20)], "text": base + near})
    frame.to_csv(path, index=False)
    return path


def test_prefect_yaml_declares_the_deployments():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    by_name = {d["name"]: d for d in spec["deployments"]}
    nightly = by_name["nightly"]
    assert nightly["entrypoint"] == "flows/embed_corpus.py:embed_corpus"
    assert nightly["work_pool"]["name"] == POOL
    assert [s["cron"] for s in nightly["schedules"]] == ["30 2 * * *"]
    assert by_name["train-difference"]["entrypoint"] == "flows/train_difference.py:train_difference"
    assert "schedules" not in by_name["train-difference"]
    pull = spec["pull"][0]["prefect.deployments.steps.set_working_directory"]
    assert pull["directory"] == "{{ project-dir.stdout }}"


def test_deploy_all_then_run_once_through_a_process_worker(prefect_harness, tmp_path):
    import prefect.settings
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.states import StateType
    from prefect.utilities.asyncutils import run_coro_as_sync

    api_url = prefect.settings.PREFECT_API_URL.value()
    assert api_url, "the Prefect test harness did not set PREFECT_API_URL"
    env = {
        **os.environ,
        "PREFECT_API_URL": api_url,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }

    # 1. the work pool, then every deployment in prefect.yaml, with Prefect's own CLI
    async def pool_names() -> set[str]:
        async with get_client() as client:
            return {p.name for p in await client.read_work_pools()}

    if POOL not in run_coro_as_sync(pool_names()):
        prefect_cli("work-pool", "create", "--type", "process", POOL, env=env)
    out = prefect_cli("deploy", "--all", "--prefect-file", "prefect.yaml", env=env)
    assert "embed-corpus/nightly" in out and "train-difference/train-difference" in out, out

    # 2. what the server now holds
    async def read_deployments():
        async with get_client() as client:
            nightly = await client.read_deployment_by_name("embed-corpus/nightly")
            train = await client.read_deployment_by_name("train-difference/train-difference")
            return nightly, train

    nightly, train = run_coro_as_sync(read_deployments())
    assert nightly.work_pool_name == POOL and train.work_pool_name == POOL
    assert nightly.entrypoint == "flows/embed_corpus.py:embed_corpus"
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in nightly.schedules] == [
        ("30 2 * * *", "UTC", True)
    ]
    assert train.schedules == []
    assert nightly.parameters["output"] == "out/nightly/embeddings.h5"
    assert nightly.parameters["chunk_size"] == 1000
    assert nightly.parameters["input_path"] is None
    assert nightly.parameters["incremental"] is True and nightly.parameters["threshold"] is None
    # the parameter schema comes from the flow signature, so the server validates runs
    schema = nightly.parameter_openapi_schema["properties"]
    assert {"input_path", "output", "cache_dir", "chunk_size", "threshold"} <= set(schema)
    assert train.parameter_openapi_schema["required"] == ["pairs"]
    # ... and from EmbedParams, the one declaration, with the descriptions the UI shows
    from flows.embed_corpus import EmbedParams
    from flows.offline import use_offline_defaults

    assert list(schema) == list(EmbedParams.model_fields)
    assert schema["chunk_size"]["description"] == EmbedParams.model_fields["chunk_size"].description
    # each run gets the offline defaults the command lines set
    run_env: dict[str, str] = {}
    use_offline_defaults(run_env)  # what the command lines set in an empty environment
    assert nightly.job_variables == train.job_variables == {"env": run_env}
    # the pull step goes back to the folder `prefect deploy` ran in (the project root)
    assert nightly.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
    ]

    # 3. one run on a tiny corpus, its outputs in tmp_path, picked up by a real worker
    corpus = tiny_corpus(tmp_path / "tiny.csv")
    output = tmp_path / "tiny.h5"
    params = {
        "input_path": str(corpus),
        "id_column": "id",
        "output": str(output),
        "cache_dir": str(tmp_path / "cache"),
        "report_dir": str(tmp_path / "report"),
        "chunk_size": 8,
    }

    async def start_run():
        async with get_client() as client:
            return await client.create_flow_run_from_deployment(nightly.id, parameters=params)

    created = run_coro_as_sync(start_run())
    assert created.state_type == StateType.SCHEDULED

    # the server checks run parameters against the flow's schema before anything runs
    async def bad_runs() -> list[str]:
        errors = []
        async with get_client() as client:
            for dep, bad in [(nightly, {**params, "chunk_size": 0}), (train, {})]:
                with pytest.raises(PrefectHTTPStatusError) as info:
                    await client.create_flow_run_from_deployment(dep.id, parameters=bad)
                errors.append(info.value.response.text)
        return errors

    chunk_error, pairs_error = run_coro_as_sync(bad_runs())
    assert "chunk_size" in chunk_error and "pairs" in pairs_error, (chunk_error, pairs_error)

    worker = subprocess.run(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL,
         "--run-once", "--limit", "1", "--install-policy", "never"],
        cwd=tmp_path,  # the pull step, not the worker's folder, decides where the flow runs
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )  # fmt: skip
    log = worker.stdout + worker.stderr
    assert worker.returncode == 0, log

    async def read_run():
        async with get_client() as client:
            return await client.read_flow_run(created.id)

    run = run_coro_as_sync(read_run())
    assert run.state_type == StateType.COMPLETED, f"{run.state}\n{log}"
    assert run.parameters["chunk_size"] == 8
    assert run.parameters["cache_dir"] == str(tmp_path / "cache")  # overrides won

    with h5py.File(output) as f:
        assert f["embeddings"].shape == (20, 384)
        assert [i.decode() for i in f["ids"][:]] == [f"pkg-{i:02d}" for i in range(20)]
    pairs = pd.read_csv(tmp_path / "report" / "pairs.csv")
    found = {frozenset(p) for p in zip(pairs["id_a"], pairs["id_b"], strict=True)}
    assert {frozenset({f"pkg-{i:02d}", f"pkg-{16 + i:02d}"}) for i in range(4)} <= found
