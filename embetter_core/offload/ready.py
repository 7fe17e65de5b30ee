"""``check_modal_ready()``: fail fast, before any work, when Modal cannot be used.

It checks, in order: the ``modal`` package, a token (``MODAL_TOKEN_ID`` /
``MODAL_TOKEN_SECRET`` or the active profile of ``~/.modal.toml``, the file ``modal setup``
writes), that Modal's server is reachable, and, when an app name is given, that the app is
deployed. Each failure raises :class:`ModalUnavailableError` saying what to run.
"""

from __future__ import annotations

import os
import socket
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from embetter_core.errors import ModalUnavailableError
from embetter_core.offload.remote import APP_NAME, CLASS_NAME, DEPLOY_HINT

DEFAULT_SERVER_URL = "https://api.modal.com"
SETUP_HINT = "run `modal setup` (or set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET)"


def config_path() -> Path:
    """The Modal config file: ``MODAL_CONFIG_PATH``, else ``~/.modal.toml``."""
    return Path(os.environ.get("MODAL_CONFIG_PATH") or Path.home() / ".modal.toml")


def _profile() -> dict[str, Any]:
    path = config_path()
    if not path.is_file():
        return {}
    try:
        profiles = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ModalUnavailableError(f"cannot read Modal config {str(path)!r}: {exc}") from exc
    active = [k for k, v in profiles.items() if isinstance(v, dict) and v.get("active")]
    name = os.environ.get("MODAL_PROFILE") or (active[0] if active else "default")
    values = profiles.get(name, {})
    return values if isinstance(values, dict) else {}


def modal_settings() -> dict[str, str | None]:
    """Token id, token secret and server URL as the modal client will see them (env first)."""
    profile = _profile()
    return {
        key: os.environ.get(f"MODAL_{key.upper()}") or profile.get(key)
        for key in ("token_id", "token_secret", "server_url")
    }


def has_modal_token() -> bool:
    """True when a Modal token id and secret are configured (not whether they are valid).

    >>> isinstance(has_modal_token(), bool)
    True
    """
    settings = modal_settings()
    return bool(settings["token_id"] and settings["token_secret"])


def _probe(server_url: str, timeout: float) -> None:
    errors = []
    for url in server_url.split(","):
        parts = urlsplit(url.strip())
        host = parts.hostname or url.strip()
        port = parts.port or (80 if parts.scheme == "http" else 443)
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            return
        except OSError as exc:
            errors.append(f"{host}:{port}: {exc}")
    raise ModalUnavailableError(
        f"cannot reach Modal's server ({'; '.join(errors)}); check the network connection "
        "or run without the Modal back-end"
    )


def check_modal_ready(
    app_name: str | None = None,
    *,
    check_network: bool = True,
    timeout: float = 10.0,
) -> None:
    """Raise :class:`ModalUnavailableError` unless Modal can run work from here.

    Args:
        app_name: also check that this app is deployed (``None``: an ephemeral run).
        check_network: try to connect to Modal's server (``timeout`` seconds per host).

    Nothing is changed: call it before any work, e.g. at the start of a flow.
    """
    try:
        import modal
    except ImportError as exc:
        raise ModalUnavailableError(
            "the `modal` package is not installed: pip install modal, then " + SETUP_HINT
        ) from exc
    if not has_modal_token():
        raise ModalUnavailableError(
            f"no Modal token found (environment or {str(config_path())!r}): {SETUP_HINT}, "
            "then retry; nothing was sent to Modal"
        )
    if not check_network:
        return
    _probe(modal_settings()["server_url"] or DEFAULT_SERVER_URL, timeout)
    if app_name is not None:
        lookup_deployed(modal, app_name)


def lookup_deployed(modal: Any, app_name: str = APP_NAME) -> Any:
    """The deployed GPU class of app ``app_name``, hydrated; a clear error if it is missing."""
    from modal.exception import AuthError, NotFoundError

    cls = modal.Cls.from_name(app_name, CLASS_NAME)
    try:
        cls.hydrate()
    except NotFoundError as exc:
        raise ModalUnavailableError(
            f"Modal app {app_name!r} (class {CLASS_NAME}) is not deployed: run `{DEPLOY_HINT}`, "
            "or use an ephemeral run"
        ) from exc
    except AuthError as exc:
        raise ModalUnavailableError(f"Modal rejected the token: {SETUP_HINT}") from exc
    except modal.exception.ConnectionError as exc:
        raise ModalUnavailableError(f"cannot connect to Modal: {exc}") from exc
    return cls
