"""Prefect flows. Importing this package sets offline-friendly defaults for Prefect.

Without ``PREFECT_API_URL`` Prefect starts a temporary server per process; in a brand-new
``PREFECT_HOME`` its first start can exceed the default 20 s timeout, so raise it, and turn
analytics off (there may be no network). Anything already set in the environment wins.
"""

import os

for _key, _value in {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_key, _value)
