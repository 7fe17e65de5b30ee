"""Importing the flows changes nothing in the environment; ``use_offline_defaults`` is the one
explicit place that sets the offline defaults, and a user's values win."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from flows.offline import OFFLINE_DEFAULTS, RUN_LOG_DEFAULTS, use_offline_defaults

ROOT = Path(__file__).resolve().parent.parent


def clean_env(**extra: str) -> dict[str, str]:
    """The environment less every offline default (and Prefect's API URL)."""
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_DEFAULTS}
    env.pop("PREFECT_API_URL", None)
    return {**env, **extra}


def run_python(code: str, env: dict[str, str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_flows_sets_nothing():
    code = (
        "import json, os\n"
        "import flows, flows.embed_corpus, flows.train_difference, flows.params, flows.offline\n"
        f"print(json.dumps({{k: os.environ.get(k) for k in {sorted(OFFLINE_DEFAULTS)!r}}}))\n"
    )
    seen = run_python(code, clean_env())
    assert seen == dict.fromkeys(OFFLINE_DEFAULTS)  # all unset: a hub model can download


def test_use_offline_defaults_keeps_set_values_and_reaches_prefect():
    code = (
        "import json, os\n"
        "import flows.embed_corpus  # Prefect is imported, and has read its settings\n"
        "from prefect.settings import get_current_settings\n"
        "from flows.offline import use_offline_defaults\n"
        "added = use_offline_defaults()\n"
        "s = get_current_settings()\n"
        "print(json.dumps({'added': sorted(added), 'hf': os.environ['HF_HUB_OFFLINE'],\n"
        "    'timeout': s.server.ephemeral.startup_timeout_seconds,\n"
        "    'analytics': s.server.analytics_enabled}))\n"
    )
    seen = run_python(code, clean_env(HF_HUB_OFFLINE="0"))
    assert seen == {
        "added": sorted(set(OFFLINE_DEFAULTS) - {"HF_HUB_OFFLINE"}),
        "hf": "0",  # the user's value won
        "timeout": 180,
        "analytics": False,
    }


def test_the_cli_wrapper_runs_a_command_with_the_defaults():
    env = clean_env(TOKENIZERS_PARALLELISM="true")
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    done = subprocess.run(
        [sys.executable, "-m", "flows.offline", sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert {k: seen[k] for k in OFFLINE_DEFAULTS} == {
        **OFFLINE_DEFAULTS,
        "TOKENIZERS_PARALLELISM": "true",
    }


def test_deployments_get_the_same_variables():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    everything = {}
    use_offline_defaults(everything)  # what the command lines set in an empty environment
    assert set(OFFLINE_DEFAULTS) < set(everything)
    for deployment in spec["deployments"]:
        assert deployment["work_pool"]["job_variables"]["env"] == everything


def test_use_offline_defaults_on_a_mapping():
    env = {"DO_NOT_TRACK": "0"}
    added = use_offline_defaults(env)
    run_logs = {**RUN_LOG_DEFAULTS, "PREFECT_LOGGING_EXTRA_LOGGERS": "embetter_core"}
    assert env == {**OFFLINE_DEFAULTS, "DO_NOT_TRACK": "0", **run_logs}  # tests/test_run_logs.py
    assert "DO_NOT_TRACK" not in added and len(added) == len(OFFLINE_DEFAULTS) + 1
