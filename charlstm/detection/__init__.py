"""Telling machine-written reviews from human ones: data, training, calibration, the zero-shot baseline, metrics, and
the `Detector`.
"""
