"""Evaluation tasks: each answers a prompt set with the model under test and scores the answers."""
