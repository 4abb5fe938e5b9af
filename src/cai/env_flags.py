"""On/off switches read from environment variables, spelled the same way in every one of them.

``CAI_PROGRESS``, ``CAI_VERBOSE``, ``CAI_STEP_SERVER`` and ``CAI_TCMALLOC`` each take 1, true, yes
or on, and 0, false, no or off, in any case. A user who learnt one has learnt them all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

ON = ("1", "true", "yes", "on")
OFF = ("0", "false", "no", "off")


def env_switch(name: str, environ: Mapping[str, str] | None = None) -> bool | None:
    """True for an on word, False for an off word; None when the variable is unset, empty or holds
    something else (``CAI_TCMALLOC`` may hold a path), so each caller keeps its own default."""
    value = (os.environ if environ is None else environ).get(name, "").strip().lower()
    if value in ON:
        return True
    if value in OFF:
        return False
    return None
