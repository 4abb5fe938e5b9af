"""``cai run``: the whole CAI pipeline from one file, in one resumable run folder.

``plan`` turns a run file into wired, keyed steps; ``runner`` executes them with a manifest;
``processes`` runs them in child processes (eval steps of one model in one, on one engine);
``stages`` maps each stage to the public function its own command calls; ``presets/`` holds
ready run files (``cai run --preset quickstart``).
"""

from cai.run.runner import RunOptions, execute

__all__ = ["RunOptions", "execute"]
