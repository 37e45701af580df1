"""Hyper-parameter and architecture sweeps on Optuna (`ferkit sweep`).

One concept per module, each importing only the ones above it:

    space    search spaces: TOML files and the packaged presets (presets/*.toml)
    storage  Optuna RDB storage, heartbeats, and the cross-process claim lock
    study    create or join a study; claim its next trial exactly once
    worker   train claimed trials in-process; N local worker processes
    report   a study's trials as a table, JSON and plots

Importing this package does not import Optuna or torch; `ferkit.sweeps.storage.load_optuna()`
does, with a message naming the extra to install.
"""
