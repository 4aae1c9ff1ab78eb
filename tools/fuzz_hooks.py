"""Schemathesis hooks for `make fuzz` (loaded through SCHEMATHESIS_HOOKS by tools/fuzz.py).

tus parts (`PATCH /uploads/{id}`) are raw bytes of the media type tus names,
`application/offset+octet-stream`, which schemathesis cannot generate by itself.
"""

from __future__ import annotations

import schemathesis
from hypothesis import strategies as st

schemathesis.openapi.media_type("application/offset+octet-stream", st.binary(max_size=4096))
