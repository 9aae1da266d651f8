"""Evaluation of generated audio: the paper's metrics (FD, KL, CLAP score), timing accuracy and,
for the synthetic dataset, prompt adherence measured from the audio.

Entry points: :func:`sa_train.evaluation.evaluate.evaluate_folder` (a flat metrics dict) and
:func:`~sa_train.evaluation.evaluate.run_evaluation` (everything, with per-clip results); the
command line is `sa-train evaluate`. Submodules import lazily, so importing this package is cheap.
"""
