"""On/off switches read from environment variables, spelled the same way in every one of them.

``CAI_PROGRESS``, ``CAI_VERBOSE``, ``CAI_STEP_SERVER``, ``CAI_TRACEBACK`` and ``CAI_TCMALLOC`` each
take 1, true, yes or on, and 0, false, no or off, in any case. A user who learnt one has learnt them all.
Variables that pick one of a few words (``CAI_VLLM_ATTENTION``) list them in ``CHOICES``; a value
that is none of them gets the same one warning.
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


def set_on(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """A switch that is on whenever it is set to something other than an off word (``CAI_VERBOSE``,
    ``CAI_TRACEBACK``): ``CAI_TRACEBACK=0`` is off, not set."""
    value = (os.environ if environ is None else environ).get(name, "").strip()
    return bool(value) and env_switch(name, environ) is not False


# Switch -> what becomes of a value that is no on/off word. CAI_TCMALLOC is not here: it may hold a
# path, and cai.allocator says what is wrong with one.
SWITCHES = {"CAI_PROGRESS": "ignored", "CAI_STEP_SERVER": "ignored", "CAI_VERBOSE": "taken as on",
            "CAI_TRACEBACK": "taken as on"}
# Variable -> the words it takes (any case); any other value is ignored (cai.backends.vllm_attention).
CHOICES = {"CAI_VLLM_ATTENTION": ("cai", "vllm", "auto")}


def odd_switches(environ: Mapping[str, str] | None = None) -> list[str]:
    """A warning for each switch set to a value that is neither an on nor an off word (``CAI_PROGRESS=2``),
    which would otherwise be read one way or the other without a word."""
    environ = os.environ if environ is None else environ
    words = f"{'/'.join(ON)} or {'/'.join(OFF)}"
    odd = [f"{name}={environ[name].strip()} is not one of {words}; {what}"
           for name, what in SWITCHES.items()
           if environ.get(name, "").strip() and env_switch(name, environ) is None]
    return odd + [f"{name}={environ[name].strip()} is not one of {', '.join(taken)}; ignored"
                  for name, taken in CHOICES.items()
                  if environ.get(name, "").strip() and environ[name].strip().lower() not in taken]
