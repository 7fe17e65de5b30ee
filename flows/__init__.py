"""Prefect flows over ``tasks`` and ``embetter_core``. Importing them changes nothing in the
environment: for offline defaults call :func:`flows.offline.use_offline_defaults` (the
command lines and the tests do)."""
