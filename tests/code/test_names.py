"""flrepo.names writes out the Unicode format characters' ranges instead of scanning every code point at
import: the table must be what unicodedata says."""

from __future__ import annotations

import unicodedata

from flrepo import names


def test_the_written_out_format_ranges_are_unicodedatas():
    scanned = names.scan_format_ranges()
    assert (173, 173) in scanned and (8203, 8207) in scanned  # soft hyphen; zero-width space .. RLM
    if unicodedata.unidata_version in names.KNOWN_FORMAT_RANGES:
        assert list(names.KNOWN_FORMAT_RANGES[unicodedata.unidata_version]) == scanned
    assert names._format_ranges() == scanned
