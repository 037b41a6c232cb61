"""Named random streams: every stage of the generator draws from its own ``Generator(PCG64)``.

Streams are children of ``SeedSequence(seed)`` addressed by a spawn key, exactly the children that
``SeedSequence(seed).spawn`` would hand out, but addressable without spawning the ones before. The
feed simulation uses one stream per (day, user block), so splitting the work into chunks, or writing
shards of a different size, never changes the data.
"""

from __future__ import annotations

import numpy as np

#: Stage -> first spawn-key element. Never renumber: it would change every dataset.
STAGES = {"population": 0, "graph": 1, "posts": 2, "simulation": 3, "stats": 4}


def stream(seed: int, stage: str, *key: int) -> np.random.Generator:
    """Generator for ``stage`` (and sub-key, e.g. day and block) derived from the config seed."""
    seq = np.random.SeedSequence(seed, spawn_key=(STAGES[stage], *key))
    return np.random.Generator(np.random.PCG64(seq))
