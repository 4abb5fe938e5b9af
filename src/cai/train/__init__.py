"""Training: SFT on SL-CAI revisions, a soft-label preference model, PPO with KL control, DPO, RLOO.

Every trainer's config extends :class:`cai.train.common.TrainCommon`, so the same flag means the
same thing in every command. TRL does what it does well (SFT, reward modelling, DPO, RLOO); PPO is
ours, since TRL no longer ships it.
"""

import warnings

# TRL warns from each module that checks the vLLM version (five times when RLOOTrainer is imported)
# that the installed vLLM is newer than it was tested with. cai's trainers never generate through
# TRL's vLLM path (cai's own vllm backend does not go through TRL), so the warning is noise. It is
# ignored rather than shown "once": vLLM's import adds filters, which resets Python's once-registry.
warnings.filterwarnings("ignore", message="TRL currently supports vLLM versions")
