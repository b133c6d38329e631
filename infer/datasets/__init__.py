"""Data that is not a user's project: synthetic images for the demo, tests and benchmarks, and
importers of public layouts (Kaggle DSB2018)."""
