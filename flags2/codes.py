"""The country codes that have a flag: one list, read by the scripts, the
bundled server, the tests and the benchmarks alike.

The list ships inside this package, so ``pip install .`` (not only ``-e``)
carries it along.
"""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def country_codes() -> tuple[str, ...]:
    """The 194 codes that have a flag, upper case, sorted."""
    text = resources.files(__package__).joinpath('country_codes.txt').read_text()
    return tuple(sorted(text.split()))
