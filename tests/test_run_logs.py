"""The library's warnings (logger ``embetter_core``) reach a flow run's logs in Prefect:
``use_offline_defaults`` appends the logger to ``PREFECT_LOGGING_EXTRA_LOGGERS``, keeping a
user's loggers, and attaches it to Prefect's handlers when Prefect was imported first (as it
is by the command lines, which import the flow before they set their environment)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from flows.offline import EXTRA_LOGGERS, RUN_LOG_DEFAULTS, use_offline_defaults

ROOT = Path(__file__).resolve().parent.parent


def env_without_run_loggers(**extra: str) -> dict[str, str]:
    """This environment less what ``use_offline_defaults`` sets for the run logs."""
    env = {k: v for k, v in os.environ.items() if k not in (EXTRA_LOGGERS, *RUN_LOG_DEFAULTS)}
    return {**env, **extra}


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (None, "embetter_core"),
        ("", "embetter_core"),
        ("mylib", "mylib,embetter_core"),
        ("mylib, other", "mylib,other,embetter_core"),
    ],
)
def test_appends_to_a_users_loggers(before, after):
    env = {} if before is None else {EXTRA_LOGGERS: before}
    assert use_offline_defaults(env)[EXTRA_LOGGERS] == after
    assert env[EXTRA_LOGGERS] == after
    assert EXTRA_LOGGERS not in use_offline_defaults(env)  # once is enough
    assert env[EXTRA_LOGGERS] == after


def test_a_value_that_names_it_already_is_kept():
    env = {EXTRA_LOGGERS: "embetter_core,mylib"}
    assert EXTRA_LOGGERS not in use_offline_defaults(env)
    assert env[EXTRA_LOGGERS] == "embetter_core,mylib"


def test_prefect_imported_first_still_gets_the_logger():
    """The command lines' order: Prefect is imported (and configures logging) before
    ``use_offline_defaults`` runs; its settings and handlers must still see the logger."""
    code = (
        "import json, logging, warnings\n"
        "import flows.embed_corpus  # imports Prefect, which configures logging\n"
        "from prefect.settings import get_current_settings\n"
        "from flows.offline import use_offline_defaults\n"
        "def handlers(name):\n"
        "    return [type(h).__name__ for h in logging.getLogger(name).handlers]\n"
        "before = handlers('embetter_core')\n"
        "use_offline_defaults()\n"
        "use_offline_defaults()\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    logging.getLogger('embetter_core.encoders.cache').warning('outside a flow run')\n"
        "print(json.dumps({'before': before, 'after': handlers('embetter_core'),\n"
        "    'mylib': handlers('mylib'), 'warnings': [str(w.message) for w in caught],\n"
        "    'setting': sorted(get_current_settings().logging.extra_loggers)}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env_without_run_loggers(**{EXTRA_LOGGERS: "mylib"}),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {
        "before": [],  # Prefect read the variable before embetter_core was in it
        "after": ["APILogHandler"],  # attached once, though called twice
        "mylib": ["APILogHandler"],  # the user's logger, attached by Prefect itself
        "warnings": [],  # outside a run the record goes to the console alone, unremarked
        "setting": ["embetter_core", "mylib"],
    }


@pytest.mark.slow
def test_a_cache_warning_reaches_the_runs_logs(prefect_harness, sentence_encoder, tmp_path):
    """A cached vector that fails its checksum is re-encoded and logged by
    ``embetter_core.encoders.cache``; the flow run shows that warning in Prefect. (This process set
    the variable before importing Prefect, as a deployment or Dask worker does; the test
    above covers the command lines' order.)"""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter
    from prefect.logging.handlers import APILogHandler

    from embetter_core import cached
    from embetter_core.encoders import EncoderSpec
    from flows.embed_corpus import cache_folder, embed_corpus

    texts = ["a cat sat on the mat", "stock prices fell", "a dog ran home"]
    corpus = tmp_path / "corpus.csv"
    pd.DataFrame({"text": texts}).to_csv(corpus, index=False)
    folder = cache_folder(str(tmp_path / "cache"), EncoderSpec())
    cached(folder, sentence_encoder).transform(texts)
    con = sqlite3.connect(os.path.join(folder, "cache.db"))
    with con:
        [(blob,)] = con.execute("SELECT value FROM Cache WHERE key = ?", (texts[1],))
        damaged = bytearray(blob)
        damaged[-20] ^= 0x01  # one bit of one float
        con.execute("UPDATE Cache SET value = ? WHERE key = ?", (bytes(damaged), texts[1]))
    con.close()

    result = embed_corpus(
        input_path=str(corpus),
        output=str(tmp_path / "e.h5"),
        cache_dir=str(tmp_path / "cache"),
        report_dir=str(tmp_path / "report"),
    )
    assert (result.cache_hits, result.cache_misses) == (2, 1)
    APILogHandler().flush()  # send the queued logs now
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(text={"query": folder}))
    warnings = [log for log in logs if log.name == "embetter_core.encoders.cache"]
    assert len(warnings) == 1, [(log.name, log.message) for log in logs]
    assert "failed their checksum" in warnings[0].message
    assert warnings[0].flow_run_id is not None and warnings[0].task_run_id is not None


def test_only_prefects_own_handlers_are_attached(monkeypatch):
    import logging

    import prefect.logging.configuration as configuration
    from prefect.logging.handlers import APILogHandler

    from flows.offline import RUN_LOGGERS, attach_run_loggers

    extra, ours = logging.getLogger("prefect.extra"), logging.getLogger(RUN_LOGGERS[0])
    api, foreign = APILogHandler(), logging.StreamHandler()  # e.g. a test harness's capture
    monkeypatch.setattr(configuration, "PROCESS_LOGGING_CONFIG", {"configured": True})
    monkeypatch.setattr(extra, "handlers", [api, foreign])
    monkeypatch.setattr(ours, "handlers", [])
    attach_run_loggers()
    attach_run_loggers()  # twice: nothing more
    assert ours.handlers == [api]
