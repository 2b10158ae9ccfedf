"""LIBERO tasks without downloads: env layer, scripted expert, demo generation, robustness perturbations."""
