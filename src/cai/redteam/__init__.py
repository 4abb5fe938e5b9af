"""Red-teaming: harmful behaviors wrapped in attacks, answered by the target model, graded, and
summarised as attack success rates per attack and per harm category (``cai redteam``).

``behaviors`` loads the behaviors, ``jailbreaks`` the in-the-wild templates, ``attacks`` builds the
attacked conversations, ``attacker`` has a model write new ones, ``summary`` computes the rates,
``revise`` turns failures into SL-CAI data, and ``run`` ties them together.
"""

from cai.redteam.run import RedteamConfig, run_redteam

__all__ = ["RedteamConfig", "run_redteam"]
