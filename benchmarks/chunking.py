"""How much chunking alone costs sentence-transformers: one call against 1,000-row calls.

    python -m benchmarks.chunking

Same 3,000 Debian texts (seed 1 sample, as in benchmarks.pipeline), batch size 32: one
``encode`` call sorts all texts by length; three calls sort within each chunk only.
"""

import time

from benchmarks.data import load_debian
from embetter_core import SentenceEncoder

texts = load_debian(10000, seed=1)["text"].tolist()[:3000]
m = SentenceEncoder().model_
m.encode(texts[:64])
t = time.perf_counter()
m.encode(texts, batch_size=32)
one = time.perf_counter() - t
t = time.perf_counter()
for i in range(0, 3000, 1000):
    m.encode(texts[i : i + 1000], batch_size=32)
chunked = time.perf_counter() - t
print(f"one call {one:.1f} s, 3 chunks of 1000 {chunked:.1f} s, ratio {one / chunked:.3f}")
