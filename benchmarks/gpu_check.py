"""GPU check: the device paths of SentenceEncoder and ClipEncoder against today's paths.

    python -m benchmarks.gpu_check [--n N] [--cpu-texts 2000] [--batch-size 1024]
        [--old-batch-size 256] [--precisions auto,bf16,fp32] [--images 1024]
        [--image-batch-size 256] [--model PATH] [--clip-model ViT-B-32]

Where CUDA is present (one short run, about a minute of work; well under 5 minutes):
- ``SentenceEncoder`` (the packaged all-MiniLM-L6-v2, or ``--model PATH``) on all 63,482
  Debian descriptions (``--n`` samples fewer). Today's path (one
  ``SentenceTransformer.encode`` call per token-sorted batch, fp32, ``--old-batch-size``) and
  the device path (``transform``, ``--batch-size``) at each of ``--precisions``, all timed in
  this run with the model loaded and warmed up outside the timing. Each line gives texts/s,
  the ratio to today's path, and the smallest cosine against (a) the CPU fp32 vectors of the
  first ``--cpu-texts`` texts, encoded on this machine's CPU in the same run, and (b) today's
  path's fp32 GPU vectors of all the texts.
- ``ClipEncoder`` ViT-B-32 on ``--images`` 256x256 JPEG files written to a temporary folder
  (random weights saved as a checkpoint, since no CLIP weights are reachable offline: the
  compute is the real architecture's, the vectors are meaningless). Today's path (one thread
  decodes and preprocesses) against ``transform`` (a thread pool does): images/s, the ratio,
  and the largest difference between their vectors.
- Targets, printed as PASS / FAIL: >= 15,000 texts/s and min cosine >= 0.9999 at the default
  precision; >= 2,000 images/s.

Without CUDA it says so, states that the GPU figures are not measured, and runs the same
steps on the CPU at smoke size (at most 64 texts and 8 images, the device paths forced), so
the script is known to run before it meets a GPU.
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

TEXT_TARGET = 15_000.0
IMAGE_TARGET = 2_000.0
COSINE_TARGET = 0.9999


def timed(fn: Callable[[], Any], cuda: bool) -> tuple[Any, float]:
    """``fn()`` and its wall time, a CUDA synchronise included so all GPU work is counted."""
    import torch

    start = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest cosine between matching rows of ``a`` and ``b``."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.min(np.sum(a * b, axis=1)))


def text_encoder(model: str | None, device: str, batch_size: int, precision: str) -> Any:
    from embetter_core import SentenceEncoder
    from embetter_core.encoders import DEFAULT_MODEL

    return SentenceEncoder(
        model or DEFAULT_MODEL, device=device, batch_size=batch_size, precision=precision
    )


def device_path(enc: Any, texts: list[str], cuda: bool) -> np.ndarray:
    """The device path: what ``transform`` runs on CUDA, forced on a CPU."""
    if cuda:
        return enc.transform(texts)
    out = enc._encode_pipelined(texts)
    if out is None:
        raise SystemExit("the device path is off for this model (see the log); nothing to time")
    return out


def check_texts(args: argparse.Namespace, cuda: bool, device: str) -> dict[str, float]:
    from benchmarks.data import load_debian

    texts = load_debian(args.n)["text"].tolist()
    cpu_n = min(args.cpu_texts, len(texts))
    cpu = text_encoder(args.model, "cpu", 32, "fp32")
    cpu.transform(texts[:64])  # load + warm up
    cpu_vecs, cpu_s = timed(lambda: cpu.transform(texts[:cpu_n]), cuda=False)
    print(
        f"CPU fp32 reference: {cpu_n} texts, {cpu_n / cpu_s:9.1f} texts/s on this machine's "
        "CPU (batch 32)",
        flush=True,
    )

    old = text_encoder(args.model, device, args.old_batch_size, "fp32")
    old._encode_batched(texts[: 2 * args.old_batch_size])  # load + warm up
    old_vecs, old_s = timed(lambda: old._encode_batched(texts), cuda)
    old_rate = len(texts) / old_s
    print(
        f"today's path   fp32: {old_rate:9.1f} texts/s ({len(texts)} texts, batch "
        f"{args.old_batch_size}, {old_s:6.2f} s); min cos vs CPU "
        f"{min_cosine(old_vecs[:cpu_n], cpu_vecs):.7f}",
        flush=True,
    )
    results = {"old_texts_per_s": old_rate}
    for precision in args.precisions.split(","):
        enc = text_encoder(args.model, device, args.batch_size, precision)
        if cuda and enc._token_plan() is None:
            print("  the device path is off for this model (see the log): transform falls back")
        device_path(enc, texts[: 2 * args.batch_size], cuda)  # load + warm up
        vecs, seconds = timed(lambda enc=enc: device_path(enc, texts, cuda), cuda)
        rate = len(texts) / seconds
        vs_cpu = min_cosine(vecs[:cpu_n], cpu_vecs)
        vs_old = min_cosine(vecs, old_vecs)
        print(
            f"device path {precision:>6}: {rate:9.1f} texts/s ({seconds:6.2f} s, batch "
            f"{args.batch_size}); {rate / old_rate:5.2f}x today's path; min cos vs CPU fp32 "
            f"{vs_cpu:.7f}, vs today's path {vs_old:.7f}",
            flush=True,
        )
        results[f"texts_per_s_{precision}"] = rate
        results[f"min_cos_cpu_{precision}"] = vs_cpu
    return results


def clip_checkpoint(folder: str, name: str) -> str:
    """A randomly initialised open_clip model saved as a checkpoint file."""
    import open_clip
    import torch

    torch.manual_seed(0)
    model = open_clip.create_model(name)
    path = os.path.join(folder, f"{name}-random.pt")
    torch.save(model.state_dict(), path)
    return path


def image_files(folder: str, n: int) -> list[str]:
    """``n`` random 256x256 RGB JPEG files (quality 90)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    paths = []
    for i in range(n):  # smooth-ish images, so JPEG sizes are photo-like, not noise-sized
        small = np.roll(base, i, axis=(0, 1)) // 2 + rng.integers(0, 128, (64, 64, 3), np.uint8)
        path = os.path.join(folder, f"img{i:05d}.jpg")
        Image.fromarray(small, "RGB").resize((256, 256)).save(path, quality=90)
        paths.append(path)
    return paths


def check_images(args: argparse.Namespace, cuda: bool, device: str) -> dict[str, float]:
    from embetter_core import ClipEncoder
    from embetter_core.encoders.device import host_threads
    from embetter_core.encoders.vision import image_workers

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = clip_checkpoint(tmp, args.clip_model)
        paths = image_files(tmp, args.images)
        enc = ClipEncoder(
            args.clip_model, pretrained=checkpoint, device=device, batch_size=args.image_batch_size
        )
        enc.transform(paths[: args.image_batch_size])  # load + warm up
        workers = image_workers(device) if cuda else min(2, host_threads())

        def today() -> np.ndarray:
            out = np.empty((len(paths), enc.embedding_dim()), dtype=np.float32)
            enc._encode_images(paths, list(range(len(paths))), out, workers=0)
            return out

        def parallel() -> np.ndarray:
            if cuda:
                return enc.transform(paths)
            out = np.empty((len(paths), enc.embedding_dim()), dtype=np.float32)
            enc._encode_images(paths, list(range(len(paths))), out, workers=workers)
            return out

        old_vecs, old_s = timed(today, cuda)
        new_vecs, new_s = timed(parallel, cuda)
    old_rate, new_rate = len(paths) / old_s, len(paths) / new_s
    difference = float(np.max(np.abs(new_vecs - old_vecs)))
    print(
        f"ClipEncoder {args.clip_model}, {len(paths)} JPEG files 256x256, batch "
        f"{args.image_batch_size}:\n"
        f"  today's path (one thread decodes): {old_rate:8.1f} images/s\n"
        f"  thread pool ({workers:2d} workers)     : {new_rate:8.1f} images/s "
        f"({new_rate / old_rate:.2f}x); largest |difference| "
        f"{difference:.1e}",
        flush=True,
    )
    return {
        "old_images_per_s": old_rate,
        "images_per_s": new_rate,
        "image_max_difference": difference,
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="Debian texts (default: all)")
    parser.add_argument("--cpu-texts", type=int, default=2000, help="texts for the CPU reference")
    parser.add_argument("--batch-size", type=int, default=1024, help="device path batch")
    parser.add_argument("--old-batch-size", type=int, default=256, help="today's path batch")
    parser.add_argument("--precisions", default=None, help="default: auto,bf16,fp32 on CUDA")
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--image-batch-size", type=int, default=256)
    parser.add_argument("--model", default=None, help="local model path (default: packaged)")
    parser.add_argument("--clip-model", default="ViT-B-32", help="open_clip architecture")
    args = parser.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available()
    print(
        f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.2f}, torch threads {torch.get_num_threads()}"
    )
    if cuda:
        device = "cuda"
        print(f"GPU: {torch.cuda.get_device_name(0)}")
        args.precisions = args.precisions or "auto,bf16,fp32"
    else:
        device = "cpu"
        print(
            "no GPU present (torch.cuda.is_available() is False): GPU figures are NOT measured. "
            "Running the same steps on the CPU at smoke size, the device paths forced."
        )
        args.n = min(args.n or 64, 64)
        args.cpu_texts = min(args.cpu_texts, args.n)
        args.batch_size = min(args.batch_size, 16)
        args.old_batch_size = min(args.old_batch_size, 16)
        args.precisions = args.precisions or "fp32"
        args.images = min(args.images, 8)
        args.image_batch_size = min(args.image_batch_size, 4)
    results = check_texts(args, cuda, device)
    results.update(check_images(args, cuda, device))
    if cuda:
        first = args.precisions.split(",")[0]
        rate, cos = results[f"texts_per_s_{first}"], results[f"min_cos_cpu_{first}"]
        images = results["images_per_s"]
        print(
            f"targets: texts/s >= {TEXT_TARGET:.0f} at {first}: "
            f"{'PASS' if rate >= TEXT_TARGET else 'FAIL'}; min cos >= {COSINE_TARGET}: "
            f"{'PASS' if cos >= COSINE_TARGET else 'FAIL'}; images/s >= {IMAGE_TARGET:.0f}: "
            f"{'PASS' if images >= IMAGE_TARGET else 'FAIL'}"
        )
    else:
        print("CPU smoke run done; GPU figures: not measured (run this on a CUDA machine).")
    return results


if __name__ == "__main__":
    main()
