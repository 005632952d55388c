"""Evaluation: metrics, calibration (temperature, ECE), multi-label thresholds, reports and plots, prediction
files, and the end of a training run (final.py). May import: model, data, and the ground floor."""
