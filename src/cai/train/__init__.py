"""Training: SFT on SL-CAI revisions, a soft-label preference model, PPO with KL control, DPO, RLOO.

Every trainer's config extends :class:`cai.train.common.TrainCommon`, so the same flag means the
same thing in every command. TRL does what it does well (SFT, reward modelling, DPO, RLOO); PPO is
ours, since TRL no longer ships it.
"""
