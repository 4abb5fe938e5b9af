"""SL-CAI: each answer is critiqued against a principle and revised, for one or more rounds.

``plan`` chooses the principles, ``prompts`` arranges the turns, ``engine`` runs batched chains.
"""

from cai.critique.engine import CritiqueConfig, critique_revise, run_critique

__all__ = ["CritiqueConfig", "critique_revise", "run_critique"]
