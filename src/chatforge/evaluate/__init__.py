"""Evaluations of trained models, one module each; import them directly (nothing is imported here, so that one
evaluation's dependencies never load with another):

* ``chatforge.evaluate.behaviour``: behaviour checks on held-out prompts.

The reward model's held-out accuracy and calibration are a diagnostic of its training and live with it
(``chatforge.train.reward.evaluation``): nothing here imports ``chatforge.train``, and nothing in ``train/``
imports this package.
"""
