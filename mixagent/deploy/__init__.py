"""Deployment: a mixing policy drives the data mixture of a real training run."""
