"""The evaluation: how good a model is, measured independently of every training signal.

Nothing here imports the trainers, the raters, the red-teaming code or the spec's rules, and none of those imports
this package (tests/test_architecture.py checks both ways): a model trained against a judge satisfies that judge,
so the judge that reports results must be another one.

* ``prompts``: the evaluation's own prompts (scenarios the training spec does not have, the datasets' held-out
  harmful requests, jailbreak framings, held-out ShareGPT requests), split into dev and test;
* ``judges``: one judge per behaviour category, looking at what a reply does; ``pairwise``: which of two replies
  is better; ``behaviour``: answering and grading; ``winrate``: one model against another, with the sign test;
* ``instructions`` (IFEval's verifiers) and ``mtbench`` (scored by code): general skills that must not be lost;
* ``gold``: labels made by reading, and every judge's agreement with them; ``stats``: intervals and tests;
* ``cli``: ``chatforge eval behaviours|compare|gold|instructions|mtbench``.

The reward model's held-out accuracy and calibration are a diagnostic of its training and live with it
(``chatforge.train.reward.evaluation``).
"""
