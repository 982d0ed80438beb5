"""The country codes that have a flag: one list, read by the scripts, the
bundled server, the tests and the benchmarks alike; and what the book's
flags.zip says about each country, for the server's metadata.json.

Both lists ship inside this package, so ``pip install .`` (not only ``-e``)
carries them along.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType

METADATA_FIELDS = ('tld_cc', 'iso_cc', 'country', 'gec_cc')  # the book's order


@functools.cache
def country_codes() -> tuple[str, ...]:
    """The 194 codes that have a flag, upper case, sorted."""
    text = resources.files(__package__).joinpath('country_codes.txt').read_text()
    return tuple(sorted(text.split()))


@functools.cache
def countries() -> Mapping[str, Mapping[str, str]]:
    """Each code's metadata, as the book's ``flags/{cc}/metadata.json`` spells it.

    Read-only, since every caller shares the one cached copy. countries.txt is
    tab-separated (names hold commas and spaces) with a header naming its
    columns, so its column order need not be the book's.
    """
    text = resources.files(__package__).joinpath('countries.txt').read_text(encoding='utf-8')
    header, *rows = text.splitlines()
    columns = header.split('\t')
    table: dict[str, Mapping[str, str]] = {}
    for row in rows:
        record = dict(zip(columns, row.split('\t'), strict=True))
        table[record['iso_cc']] = MappingProxyType({k: record[k] for k in METADATA_FIELDS})
    return MappingProxyType(table)
