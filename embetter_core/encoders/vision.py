"""``ClipEncoder`` (images and texts into one open_clip space) and ``ImageLoader``.

Inputs to :class:`ClipEncoder` are PIL images, image files (a ``pathlib.Path``, or a ``str``
ending in an image extension such as ``.jpg``) and plain strings, which are encoded as text;
:meth:`ClipEncoder.text_items` marks strings as texts whatever they end in (a text corpus).
A file is cached under the sha256 of its bytes, a PIL image under a hash of its pixels, a text
under itself.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import io
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from sklearn.base import BaseEstimator, TransformerMixin

from embetter_core.encoders.base import (
    EmbeddingEncoder,
    FileBytes,
    _is_missing,
    content_key,
    pick_device,
    utf8_problem,
)
from embetter_core.encoders.device import BlockCopier, can_pin, host_threads, prefetched
from embetter_core.errors import ImageTooLargeError, UnreadableImageError
from embetter_core.files import IMAGE_SUFFIXES, file_sha256

if TYPE_CHECKING:
    from embetter_core.encoders.spec import EncoderSpec

_CHECKPOINT_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz"})
_file_digests: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256


class TextItem(str):
    """A string :class:`ClipEncoder` encodes as a text even when it looks like an image path
    (``ClipEncoder.text_items`` makes them; a text corpus's rows are texts, not files).

    >>> is_image_path(TextItem("cat.png")), is_image_path("cat.png")
    (False, True)
    """

    __slots__ = ()


def is_image_path(item: Any) -> bool:
    """True for a ``Path`` and for a ``str`` ending in an image extension (any case), except
    a :class:`TextItem`.

    >>> is_image_path("photos/cat.JPG"), is_image_path("a photo of a cat")
    (True, False)
    """
    if isinstance(item, os.PathLike):
        return True
    return (
        isinstance(item, str)
        and not isinstance(item, TextItem)
        and os.path.splitext(item)[1].lower() in IMAGE_SUFFIXES
    )


def image_file_key(path: str | os.PathLike[str]) -> tuple[str, str]:
    """The cache key of an image file: the sha256 of its bytes, so identical files share it."""
    return ("sha256", file_sha256(path))


#: Images with more pixels than this are refused, before they are decoded:
#: :class:`~embetter_core.errors.ImageTooLargeError` here, an invalid row (``--skip-invalid``
#: lists it) at ingest. Well below PIL's own bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``,
#: ~89 Mpx warns, twice that fails): a PNG is decoded in full once, at up to 4 bytes a pixel,
#: so one image needs at most ~200 MB while it is read.
MAX_IMAGE_PIXELS = 50_000_000
#: Images with more pixels than this are decoded reduced, by the smallest whole factor that
#: brings them to at most this many pixels (a JPEG scaled while it is decoded, ``draft``;
#: other formats box-averaged after, ``reduce``): each image kept for a batch then holds at
#: most ~67 MB. The model sees 224 px, so vectors barely move; images up to this size
#: (a 12 Mpx phone photo, 4096 x 4096) are decoded as they are, their vectors unchanged.
REDUCE_ABOVE_PIXELS = 4096 * 4096


def load_image(path: str | os.PathLike[str], convert: str | None = "RGB") -> Image.Image:
    """Read an image file and convert it to mode ``convert`` (``None`` keeps its mode).

    An image larger than :data:`REDUCE_ABOVE_PIXELS` comes back reduced to at most that many
    pixels; one larger than :data:`MAX_IMAGE_PIXELS` is refused with
    :class:`~embetter_core.errors.ImageTooLargeError`. A missing file raises
    ``FileNotFoundError``, an undecodable one :class:`UnreadableImageError`; all name the file.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "wide.png"
    >>> Image.new("L", (4100, 4100)).save(path)
    >>> load_image(path).size
    (2050, 2050)
    """
    name = os.fspath(path)
    with _read_errors(name), Image.open(name) as image:
        return _decoded(image, name, convert)


def check_image(path: str | os.PathLike[str]) -> None:
    """Raise as :func:`load_image` would on this file, as cheaply as it can be told: the
    size limit, ``verify()`` (chunk checksums) and a full decode (a JPEG at 1/8 scale), which
    finds data cut short that ``verify()`` misses. Ingest calls it for every image.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "dot.png"
    >>> Image.new("RGB", (4, 3)).save(path)
    >>> check_image(path)
    """
    name = os.fspath(path)
    with _read_errors(name):
        with Image.open(name) as image:
            _check_pixels(image, name)
            image.verify()
        with Image.open(name) as image:
            if image.format == "JPEG":
                image.draft(image.mode, (1, 1))  # the smallest DCT scale still reads all data
            image.load()


@contextlib.contextmanager
def _read_errors(name: str) -> Iterator[None]:
    """Turn what reading the image file ``name`` raises into the errors the package names:
    a missing file, one over the size limit, and anything else PIL raises (OSError,
    SyntaxError, ValueError, ...) as :class:`UnreadableImageError`."""
    try:
        yield
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "image file not found", name) from None
    except UnreadableImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise _too_large(name, None, exc) from exc
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ...
        raise UnreadableImageError(f"cannot read image file {name!r}: {exc}", name) from exc


def _decoded(image: Image.Image, name: str, convert: str | None) -> Image.Image:
    """``image`` (just opened) decoded within the size limits and converted to ``convert``."""
    _check_pixels(image, name)
    width, height = image.size
    if width * height > REDUCE_ABOVE_PIXELS and image.format == "JPEG":
        factor = _reduce_factor(width, height)
        image.draft(image.mode, (-(-width // factor), -(-height // factor)))
    image.load()
    out = image
    if out.width * out.height > REDUCE_ABOVE_PIXELS:
        if out.mode in ("1", "P", "PA") or out.mode.startswith("I;16"):
            # reduce() refuses these modes (and would average palette indexes)
            out = out.convert({"1": "L", "P": "RGBA", "PA": "RGBA"}.get(out.mode, "I"))
        out = out.reduce(_reduce_factor(out.width, out.height))
    if convert and out.mode != convert:
        return out.convert(convert)
    return out.copy() if out is image else out


def _reduce_factor(width: int, height: int) -> int:
    """The smallest whole factor that brings ``width x height`` to REDUCE_ABOVE_PIXELS."""
    factor = 1
    while -(-width // factor) * -(-height // factor) > REDUCE_ABOVE_PIXELS:
        factor += 1
    return factor


def _check_pixels(image: Image.Image, name: str) -> None:
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise _too_large(name, (width, height))


def _too_large(
    name: str, size: tuple[int, int] | None, cause: BaseException | None = None
) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"image file {name!r} is too large to decode safely ({size_text(size, cause)}); the "
        f"limit is {MAX_IMAGE_PIXELS:,} pixels (embetter_core.encoders.vision.MAX_IMAGE_PIXELS): "
        "shrink the image, or leave it out (--skip-invalid lists it)",
        name,
        size,
    )


def size_text(size: tuple[int, int] | None, cause: BaseException | None = None) -> str:
    """An image's size as errors name it, or why it is unknown (``cause``).

    >>> size_text((8000, 7000))
    '8000 x 7000 = 56,000,000 pixels'
    """
    if size is None:
        return f"{cause}".rstrip(".") if cause else "size unknown"
    return f"{size[0]} x {size[1]} = {size[0] * size[1]:,} pixels"


def _check_image_file(path: str | os.PathLike[str], pos: int) -> None:
    """Fail early on a missing file, one whose header PIL cannot identify, or one above
    :data:`MAX_IMAGE_PIXELS`."""
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise FileNotFoundError(errno.ENOENT, f"image file at input position {pos} not found", name)
    try:
        with Image.open(name) as image:
            _check_pixels(image, name)
    except ImageTooLargeError as exc:
        raise ImageTooLargeError(f"input position {pos}: {exc}", name, exc.size) from None
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(
            f"input position {pos}: {_too_large(name, None, exc)}", name
        ) from exc
    except Exception as exc:
        raise UnreadableImageError(
            f"cannot read image file {name!r} at input position {pos}: {exc}", name
        ) from exc


def _as_list(X: Any, what: str) -> list[Any]:
    if isinstance(X, str | os.PathLike | Image.Image):
        raise ValueError(f"expected a sequence of {what}, got a single item; wrap it in a list")
    if hasattr(X, "ndim") and getattr(X, "ndim", 1) != 1:
        raise ValueError(f"expected a 1-D sequence of {what}, got an array of shape {X.shape}")
    if hasattr(X, "tolist"):
        return list(X.tolist())
    try:
        return list(X)
    except TypeError:
        raise ValueError(f"expected a sequence of {what}, got {type(X).__name__}") from None


def _bad_item(item: Any) -> str:
    if item is None:
        return "None"
    return "NaN" if _is_missing(item) else type(item).__name__


def _batches(positions: list[int], size: int) -> list[list[int]]:
    size = max(int(size), 1)
    return [positions[i : i + size] for i in range(0, len(positions), size)]


_IMAGE_BLOCK = 16_384  # image vectors copied back from the device at once


def image_workers(device: str) -> int:
    """Threads that decode and preprocess images: none on a CPU, where the forward pass is
    the bottleneck and would lose the cores; one per host core (up to 16) on CUDA."""
    return host_threads() if device.split(":")[0] == "cuda" else 0


class ClipEncoder(EmbeddingEncoder):
    """Encode images and texts into one open_clip space (model loaded lazily, once).

    ``transform`` takes PIL images, image files (``Path``, or ``str`` ending in ``.jpg``,
    ``.png``, ... -- such a string is always read as a file) and plain strings (encoded as
    text); mixed inputs keep their order. It returns float32 ``(n, d)``, each row
    L2-normalised, so a dot product is the cosine similarity.

    Args:
        name: open_clip architecture, e.g. ``"ViT-B-32"`` (see ``open_clip.list_models()``).
        pretrained: open_clip weight tag (``"openai"``, ``"laion2b_s34b_b79k"``, ...) or the
            path of a local checkpoint file for that architecture.
        device: ``"cpu"``, ``"cuda"``, ``"mps"``; ``None`` picks cuda, then mps, then cpu.
        batch_size: images (or texts) per forward pass.

    >>> enc = ClipEncoder("ViT-B-32", pretrained="openai")
    >>> enc.cache_keys(["a photo of a cat"])
    ['a photo of a cat']
    >>> enc.fingerprint()
    '{"encoder": "ClipEncoder", "model": "ViT-B-32", "pretrained": "openai"}'
    """

    remote_packages = (  # what a Modal container needs to run it
        "torch",
        "torchvision",
        "huggingface-hub",
        "safetensors",
        "open-clip-torch",
        "pillow",
    )
    modalities = ("text", "image")

    @classmethod
    def text_items(cls, texts: Sequence[str]) -> list[Any]:
        """``texts`` as :class:`TextItem`: encoded as texts even when one ends in ``.png``."""
        return [TextItem(text) for text in texts]

    def __init__(
        self,
        name: str = "ViT-B-32",
        pretrained: str | os.PathLike[str] = "openai",
        device: str | None = None,
        batch_size: int = 32,
    ) -> None:
        self.name = name
        self.pretrained = pretrained
        self.device = device
        self.batch_size = batch_size

    # -- what decides the vectors ---------------------------------------------------------
    def _checkpoint_path(self) -> Path | None:
        """The resolved checkpoint file when ``pretrained`` is a path, ``None`` for a tag."""
        value = self.pretrained
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError(
                "pretrained must name open_clip weights: a tag such as 'openai' or a checkpoint "
                "file; random weights would give different vectors on every load"
            )
        text = os.fspath(value)
        looks_like_path = (
            isinstance(value, os.PathLike)
            or os.sep in text
            or "/" in text
            or Path(text).suffix.lower() in _CHECKPOINT_SUFFIXES
            or os.path.isfile(text)
        )
        if not looks_like_path:
            return None
        path = Path(text).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(errno.ENOENT, "open_clip checkpoint file not found", text)
        return path

    def _fingerprint_fields(self) -> dict[str, Any]:
        path = self._checkpoint_path()
        if path is None:
            return {"model": self.name, "pretrained": os.fspath(self.pretrained)}
        stat = path.stat()
        memo = (str(path), stat.st_size, stat.st_mtime_ns)
        if memo not in _file_digests:
            _file_digests[memo] = file_sha256(path)
        return {
            "model": self.name,
            "pretrained": str(path),
            "size": stat.st_size,
            "sha256": _file_digests[memo],
        }

    # -- how EncoderSpec strings and Modal see it ----------------------------------------------
    @classmethod
    def parse_weights(cls, text: str) -> dict[str, str]:
        """``ARCH@TAG`` (or ``ARCH@CHECKPOINT_PATH``) from an encoder string ``clip:ARCH@TAG``.

        The tag is required: open_clip has several weights per architecture.

        >>> ClipEncoder.parse_weights("ViT-B-32@laion2b_s34b_b79k")
        {'model': 'ViT-B-32', 'pretrained': 'laion2b_s34b_b79k'}
        """
        arch, sep, tag = text.partition("@")
        if not (sep and arch.strip() and tag.strip()):
            raise ValueError(
                f"clip model {text!r}: write an open_clip model as clip:ARCH@TAG, e.g. "
                "clip:ViT-B-32@openai or clip:ViT-B-32@/path/to/checkpoint.pt"
            )
        return {"model": arch.strip(), "pretrained": tag.strip()}

    @classmethod
    def format_weights(cls, spec: EncoderSpec) -> str:
        """``ARCH@TAG``, the defaults filled in for ``None``."""
        pretrained = spec.pretrained or cls._init_default("pretrained")
        return f"{spec.model or cls._init_default('name')}@{pretrained}"

    def check_remote(self) -> None:
        """Refuse a local checkpoint file: a Modal container cannot read this disk."""
        if self._checkpoint_path() is not None:
            self._refuse_local_weights(os.fspath(self.pretrained))

    def pack_items(self, items: Sequence[Any]) -> list[Any]:
        """Replace local image paths by their bytes (a container cannot read this disk)."""
        packed: list[Any] = []
        for item in items:
            if is_image_path(item):
                with open(item, "rb") as fh:
                    packed.append(FileBytes(os.fspath(item), fh.read()))
            else:
                packed.append(item)
        return packed

    def unpack_items(self, items: Sequence[Any]) -> list[Any]:
        """Decode :class:`~embetter_core.encoders.base.FileBytes` into RGB images, exactly as
        ``load_image`` reads the file."""
        out: list[Any] = []
        for item in items:
            if isinstance(item, FileBytes):
                with Image.open(io.BytesIO(item.data)) as image:
                    out.append(_decoded(image, item.name, "RGB"))
            else:
                out.append(item)
        return out

    # -- lazily loaded model ----------------------------------------------------------------
    def _load(self) -> None:
        import open_clip

        path = self._checkpoint_path()
        has_schema = self.name.startswith(("hf-hub:", "local-dir:"))
        if not has_schema and self.name not in open_clip.list_models():
            close = difflib.get_close_matches(self.name, open_clip.list_models(), n=5)
            raise ValueError(
                f"unknown open_clip model {self.name!r}; close names: {close} "
                "(all names: open_clip.list_models())"
            )
        if path is None and not has_schema:
            tags = open_clip.list_pretrained_tags_by_model(self.name)
            if self.pretrained not in tags:
                raise ValueError(
                    f"unknown pretrained tag {self.pretrained!r} for open_clip model "
                    f"{self.name!r}; known tags: {tags}, or pass a checkpoint file path"
                )
        device = pick_device(self.device)
        weights = str(path) if path is not None else os.fspath(self.pretrained)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                self.name, pretrained=weights, device=device
            )
        except RuntimeError as exc:
            raise RuntimeError(
                f"could not load open_clip model {self.name!r} with pretrained={weights!r} "
                f"(a tag needs its weights downloaded or cached; offline, pass a checkpoint "
                f"file): {exc}"
            ) from exc
        model.eval()
        self.__dict__["_lazy_model"] = model
        self.__dict__["_lazy_preprocess"] = preprocess
        self.__dict__["_lazy_tokenizer"] = open_clip.get_tokenizer(self.name)
        self.__dict__["_lazy_device"] = device

    @property
    def model_(self) -> Any:
        """The loaded open_clip model (loads model, preprocess and tokenizer on first use)."""
        if "_lazy_model" not in self.__dict__:
            self._load()
        return self.__dict__["_lazy_model"]

    def embedding_dim(self) -> int:
        """The vector size of the model (its joint image-text dimension)."""
        model = self.model_
        dim = getattr(getattr(model, "visual", None), "output_dim", None)
        if dim is None:
            import torch

            with torch.inference_mode():
                dim = model.encode_text(self.__dict__["_lazy_tokenizer"]([""])).shape[-1]
        return int(dim)

    # -- the encoder contract -----------------------------------------------------------------
    def validate_input(self, X: Any) -> list[Any]:
        """Return ``X`` as a list; fail on None / NaN / other types and on a text that cannot
        be written as UTF-8 (a lone surrogate, as :func:`~embetter_core.encoders.base.check_texts`
        refuses), naming the position, and on a missing or undecodable image file (naming the
        file)."""
        items = _as_list(X, "images, image paths or texts")
        for pos, item in enumerate(items):
            if is_image_path(item):
                _check_image_file(item, pos)
            elif isinstance(item, str):
                if not item.isascii() and (problem := utf8_problem(item)) is not None:
                    raise ValueError(
                        f"text input at position {pos} cannot be written as UTF-8: {problem}"
                    )
            elif not isinstance(item, Image.Image):
                raise ValueError(
                    f"input at position {pos} is {_bad_item(item)}; expected a PIL image, "
                    "an image path or a text"
                )
        return items

    def cache_keys(self, items: Sequence[Any]) -> list[Any]:
        """A text is its own key, an image file the sha256 of its bytes, a PIL image a hash
        of its pixels."""
        keys: list[Any] = []
        for item in items:
            if is_image_path(item):
                keys.append(image_file_key(item))
            elif isinstance(item, str):
                keys.append(str(item))  # a TextItem shares the plain text's key
            else:
                keys.append(content_key(item))
        return keys

    def transform(self, X: Any) -> np.ndarray:
        """Encode images and texts into a float32 array ``(n, d)`` of unit-length rows."""
        import torch

        items = self.validate_input(X)
        model = self.model_
        tokenizer = self.__dict__["_lazy_tokenizer"]
        device = self.__dict__["_lazy_device"]
        out = np.empty((len(items), self.embedding_dim()), dtype=np.float32)
        is_text = [isinstance(it, str) and not is_image_path(it) for it in items]
        image_pos = [i for i, text in enumerate(is_text) if not text]
        text_pos = [i for i, text in enumerate(is_text) if text]
        with torch.inference_mode():
            if image_pos:
                self._encode_images(items, image_pos, out, workers=image_workers(device))
            for chunk in _batches(text_pos, self.batch_size):
                tokens = tokenizer([items[i] for i in chunk]).to(device)
                vectors = model.encode_text(tokens, normalize=True)
                out[chunk] = vectors.float().cpu().numpy()
        return out

    def _encode_images(
        self, items: list[Any], positions: list[int], out: np.ndarray, workers: int = 0
    ) -> None:
        """Write the vectors of the images ``items[i]``, ``i`` in ``positions``, to ``out[i]``.

        ``workers=0`` (the CPU path) decodes and preprocesses each batch in this thread, then
        runs it. With ``workers`` threads (the CUDA path), a pool decodes and preprocesses up
        to two batches ahead of the forward pass (PIL and torch release the GIL for most of
        that work), each batch is copied to the device from pinned memory without waiting,
        and the vectors come back once per block. Same vectors, same order.
        """
        import torch

        model = self.model_
        preprocess = self.__dict__["_lazy_preprocess"]
        device = self.__dict__["_lazy_device"]
        if workers <= 0:
            with torch.inference_mode():
                for chunk in _batches(positions, self.batch_size):
                    images = [self._image(items[i]) for i in chunk]
                    pixels = torch.stack([preprocess(image) for image in images]).to(device)
                    vectors = model.encode_image(pixels, normalize=True)
                    out[chunk] = vectors.float().cpu().numpy()
            return
        pin = can_pin(device)
        size = max(int(self.batch_size), 1)
        # A PIL image opened lazily decodes on first use; one object listed twice must not
        # decode in two threads at once.
        locks = {id(items[i]): threading.Lock() for i in positions}

        def pixels_of(i: int) -> Any:
            item = items[i]
            if isinstance(item, Image.Image):
                with locks[id(item)]:
                    item.load()
            return preprocess(self._image(item))

        copier = BlockCopier(out, block_rows=_IMAGE_BLOCK)
        with (
            torch.inference_mode(),
            ThreadPoolExecutor(workers, thread_name_prefix="embetter-images") as pool,
        ):
            ready = prefetched(pixels_of, positions, depth=2 * size, pool=pool)
            with contextlib.closing(ready):
                for chunk in _batches(positions, size):
                    tensors = [next(ready) for _ in chunk]
                    shape = (len(tensors), *tensors[0].shape)
                    pixels = torch.empty(shape, dtype=tensors[0].dtype, pin_memory=pin)
                    torch.stack(tensors, out=pixels)
                    pixels = pixels.to(device, non_blocking=pin)
                    copier.add(chunk, model.encode_image(pixels, normalize=True))
        copier.flush()

    @staticmethod
    def _image(item: Any) -> Image.Image:
        # Convert before resizing, so a PIL image and its file give the same vector.
        if isinstance(item, Image.Image):
            return item if item.mode == "RGB" else item.convert("RGB")
        return load_image(item, "RGB")


class ImageLoader(TransformerMixin, BaseEstimator):
    """Turn image paths into PIL images in mode ``convert`` (``None`` keeps each file's mode).

    ``fit`` does nothing. PIL images pass through (converted). A missing file raises
    ``FileNotFoundError``, an undecodable one :class:`UnreadableImageError`; both name the file.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "dot.png"
    >>> Image.new("L", (4, 3)).save(path)
    >>> [(im.mode, im.size) for im in ImageLoader().transform([path, str(path)])]
    [('RGB', (4, 3)), ('RGB', (4, 3))]
    """

    def __init__(self, convert: str | None = "RGB") -> None:
        self.convert = convert

    def fit(self, X: Any = None, y: Any = None) -> ImageLoader:
        """Do nothing. Returns ``self``."""
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def transform(self, X: Any) -> list[Image.Image]:
        """Load every path in ``X`` (a list, tuple, Series or 1-D array) as a PIL image."""
        images = []
        for pos, item in enumerate(_as_list(X, "image paths")):
            if isinstance(item, Image.Image):
                convert = self.convert and item.mode != self.convert
                images.append(item.convert(self.convert) if convert else item)
            elif isinstance(item, str | os.PathLike):
                images.append(load_image(item, self.convert))
            else:
                raise ValueError(
                    f"input at position {pos} is {_bad_item(item)}; expected an image path"
                )
        return images
