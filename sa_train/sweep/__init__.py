"""Sweeps: a Ray Tune search over whole training runs, evaluated and summarised as an ablation table.

    sweep YAML (sweep.config)        -> validated SweepConfig; every search value loaded as a config
    search space (sweep.space)       -> Tune param_space; a trial's config -> key=value overrides
    resources (sweep.resources)      -> what one trial holds; how many trials run at once
    one trial (sweep.trial)          -> load_config -> launch (Ray Train) -> generate + evaluate -> tune.report
    tracking (sweep.tracking)        -> one parent MLflow run per sweep; each trial is a child run
    driver (sweep.runner)            -> Tuner / Tuner.restore, then the report
    report (sweep.report)            -> Markdown + CSV table and PNG bar charts, one row per trial

Submodules import Ray and torch lazily, so loading and validating a sweep file is quick.
"""
