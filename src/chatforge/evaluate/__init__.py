"""Evaluations of trained models, one module each; import them directly (nothing is imported here, so that one
evaluation's dependencies never load with another):

* ``chatforge.evaluate.behaviour``: behaviour checks on held-out prompts;
* ``chatforge.evaluate.reward``: a reward model's held-out accuracy (overall, per category, per rater),
  calibration and length bias, with plots.
"""
