"""The seed's cache example: 10,000 texts, cold and warm, ours against embetter's.

    python -m benchmarks.cache [--n 10000] [--skip-embetter]

Prints each time and the ratios. Baselines measured in the same run: plain
``SentenceTransformer.encode`` on the same texts (for the cold call) and
``embetter.utils.cached`` (for the warm call).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--skip-embetter", action="store_true")
    args = parser.parse_args(argv)

    from embetter_core import SentenceEncoder, cached

    texts = [f"this is a pretty long text, which is more expensive {i}" for i in range(args.n)]
    enc = SentenceEncoder(batch_size=args.batch_size)
    model = enc.model_  # load once, outside every timing
    model.encode(texts[:64], batch_size=args.batch_size)  # warm up kernels
    print(
        f"{args.n} texts, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}"
    )

    plain, t_plain = timed(lambda: model.encode(texts, batch_size=args.batch_size))
    print(f"plain SentenceTransformer.encode : {t_plain:8.2f} s")

    results = {"plain": t_plain}
    with tempfile.TemporaryDirectory() as tmp:
        ours = cached(os.path.join(tmp, "ours"), enc)
        cold, t_cold = timed(lambda: ours.transform(texts))
        warm, t_warm = timed(lambda: ours.transform(texts))
        np.testing.assert_allclose(cold, plain, atol=1e-4)
        np.testing.assert_array_equal(warm, cold)
        print(f"embetter-core cached, cold      : {t_cold:8.2f} s  ({t_cold / t_plain:.3f}x plain)")
        print(
            f"embetter-core cached, warm      : {t_warm:8.3f} s  "
            f"({t_plain / t_warm:,.0f}x faster than plain)"
        )
        results.update(ours_cold=t_cold, ours_warm=t_warm)

        if not args.skip_embetter:
            from embetter.utils import cached as embetter_cached

            theirs = embetter_cached(
                os.path.join(tmp, "embetter"), SentenceEncoder(batch_size=args.batch_size)
            )
            theirs.model_  # noqa: B018  load outside the timing, as for ours
            _, e_cold = timed(lambda: theirs.transform(texts))
            _, e_warm = timed(lambda: theirs.transform(texts))
            print(f"embetter.utils.cached, cold     : {e_cold:8.2f} s")
            print(f"embetter.utils.cached, warm     : {e_warm:8.2f} s")
            print(f"warm ratio, embetter / ours     : {e_warm / t_warm:8.0f}x")
            results.update(embetter_cold=e_cold, embetter_warm=e_warm)

    print(
        f"targets: warm <= 0.2 s: {'PASS' if t_warm <= 0.2 else 'MISS'}; "
        f"cold within 10% of plain: {'PASS' if t_cold <= 1.1 * t_plain else 'MISS'}"
        + (
            ""
            if args.skip_embetter
            else f"; warm >= 100x faster than embetter's: "
            f"{'PASS' if results['embetter_warm'] / t_warm >= 100 else 'MISS'}"
        )
    )
    return results


if __name__ == "__main__":
    main()
