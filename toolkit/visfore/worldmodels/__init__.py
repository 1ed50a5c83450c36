"""Forward (world) models: training, open-loop evaluation, run loading, prediction, the learned simulator and sweeps."""
