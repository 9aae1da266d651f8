"""Interoperability with stable-audio-tools (SAT): read its checkpoints and model configs into
sa_train exports (``sa-train import-sat``), and write sa_train models back in its format
(``sa-train export --format sat``).

    checkpoint.py   reading SAT checkpoints (.ckpt, Lightning-wrapped or not; .safetensors)
    config.py       SAT model_config.json -> sa_train config overrides
    keys.py         parameter-name maps between the two, per model type
    sat.py          the import end to end (sa-train import-sat)
    to_sat.py       the export end to end (sa-train export --format sat): config and weights back

Only the model types whose outputs sa_train reproduces exactly are accepted; anything else is
refused with a message that names the type and the supported ones. Nothing here imports SAT.
"""
