"""IFEval's verifiable instructions (Zhou et al. 2023, arXiv:2311.07911), checked by cai's own code.

The 541 prompts ship with cai (``cai.evals.datasets``, ``ifeval``). The checkers are written here
from the paper and the upstream definitions (google-research ``instruction_following_eval``),
rather than imported, because that code needs nltk's Punkt data and langdetect at run time, and
cai must score offline. Every checker follows its upstream counterpart's rule, with two stand-ins:
sentences are split by rule (:mod:`.text`) instead of by Punkt, and languages are told by script
and function words (:mod:`.language`) instead of by langdetect. Layout: one module of checkers per
instruction group (:mod:`.keywords`, :mod:`.length`, :mod:`.formats`, :mod:`.case`,
:mod:`.startend`), :mod:`.registry` (id -> checker and arguments) and :mod:`.scoring` (strict,
loose, the four accuracies). The eval itself is :mod:`cai.evals.tasks.ifeval`.
"""
