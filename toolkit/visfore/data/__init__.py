"""Datasets: the Zarr layout, storage backends, clips, collection policies and the collect pipeline."""
