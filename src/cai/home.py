"""Where cai keeps converted models and caches: ``$CAI_HOME``, default ``~/.cache/cai``.

This is the one place the environment variable is read.
"""

from __future__ import annotations

import os
from pathlib import Path


def cai_home() -> Path:
    # A blank value is unset: CAI_HOME=" " made a folder named " " in the working directory.
    return Path(os.environ.get("CAI_HOME", "").strip() or Path.home() / ".cache" / "cai").expanduser()
