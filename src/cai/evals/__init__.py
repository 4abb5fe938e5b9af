"""Evaluations. ``labeler``: how well the AI preference labeller agrees with human labels."""
