"""Telling machine-written reviews from human ones: data, training, calibration, zero-shot baseline, metrics, the Detector."""
