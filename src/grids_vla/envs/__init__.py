"""Simulation environments used to generate data for and evaluate VLA policies."""
