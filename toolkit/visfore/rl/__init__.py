"""Reinforcement learning: SB3 training and the zoo hyperparameters, policy runs, robustness evaluation and mimicry."""
