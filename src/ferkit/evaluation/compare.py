"""Comparing runs: the options that differ, one row per run, and runs grouped into recipes.

Runs that share every option but the seed (and the runtime options, which say where and how
fast a run executed: training.config's RuntimeOptions) are one recipe repeated; a SeedGroup
gives the spread the seeds give. Options a run's ferkit did not record count at today's
defaults.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from ferkit.errors import ModelError
from ferkit.evaluation.runs import RunRecord

# Options that always differ between runs or only say where/how fast a run executed.
_DIFF_SKIP = ("out", "resume", "threads", "num_workers", "eval_batch_size")
# Measurements in config.json's execution record, not choices: they differ between any two runs.
_DIFF_SKIP_PREFIXES = ("execution.timed_images_per_s.", "execution.why")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, default=str)


def _options(run: RunRecord) -> dict[str, Any]:
    """The run's options, flattened, with those an older ferkit did not record at today's
    defaults (a run from before --sam was added is a run with sam=0), model arguments too."""
    from ferkit.training.config import TrainConfig

    if not run.config:
        return {}
    return {**_flatten(TrainConfig().to_dict()), **_flatten(_model_defaults(run.model)),
            **_flatten(run.config)}


def _recipe(run: RunRecord) -> dict[str, Any]:
    """The options that make the run's recipe, but its seed: runs that differ only in the seed
    (or in where and how fast they ran) are one recipe repeated. Which options are the recipe
    is training.config's to say (RuntimeOptions vs Recipe), as for --resume; an option this
    ferkit does not know counts as recipe."""
    from ferkit.training.config import EXECUTION_KEY, RETIRED_FIELDS, RUNTIME_FIELDS

    skip = {*RUNTIME_FIELDS, *RETIRED_FIELDS, EXECUTION_KEY, "seed"}
    return {k: v for k, v in _options(run).items() if k.split(".", 1)[0] not in skip}


def _model_defaults(model: str) -> dict[str, Any]:
    """{"model_kwargs": the keyword defaults of the model's factory} ({} for an unknown one)."""
    import inspect

    from ferkit.models.registry import get_entry

    try:
        factory = get_entry(model).factory
    except ModelError:  # a model this ferkit does not have: its runs compare as recorded
        return {}
    return {"model_kwargs": {n: p.default for n, p in inspect.signature(factory).parameters.items()
                             if p.default is not inspect.Parameter.empty
                             and n != "num_classes"}}


def _implied(key: str, recipe: dict[str, Any]) -> bool:
    """An aug_* value the recipe's --augment preset sets anyway: left out of its label."""
    from ferkit.training.config import PRESETS

    preset = PRESETS.get(recipe.get("augment"), {})
    return key in preset and recipe.get(key) == preset[key]


MISSING = object()  # config_diff's value of an option a run does not have


def config_diff(runs: list[RunRecord]) -> list[tuple[str, list[Any]]]:
    """(option, value per run) for the options whose values differ (absent = missing)."""
    flat = [_options(r) for r in runs]
    keys: list[str] = []
    for f in flat:
        keys += [k for k in f if k not in keys]
    rows = []
    for key in keys:
        if key in _DIFF_SKIP or key.startswith(_DIFF_SKIP_PREFIXES):
            continue
        values = [f.get(key, MISSING) for f in flat]
        if len({json.dumps(v, sort_keys=True, default=str) if v is not MISSING else "\0"
                for v in values}) > 1:
            rows.append((key, values))
    return rows


def summary_rows(runs: list[RunRecord]) -> list[dict[str, Any]]:
    rows = []
    for r in runs:
        best, last = r.best, r.last
        f1, f1_source = r.macro_f1
        rows.append({"run": r.label, "path": str(r.path), "model": r.model,
                     "parameters": r.n_parameters, "epochs": r.epochs,
                     "last_val_acc": last["val_acc"] if last else None,
                     "best_val_acc": best["val_acc"] if best else None,
                     "best_epoch": best.get("epoch") if best else None,
                     "macro_f1": f1, "macro_f1_source": f1_source,
                     "train_seconds": r.train_seconds})
    return rows


@dataclass
class SeedGroup:
    """Runs of one recipe (every option equal but the seed): the spread seeds give."""

    label: str
    runs: list[RunRecord]

    def stats(self, key: str) -> dict[str, float] | None:
        """Mean, sample standard deviation, min and max of `last` or `best` val accuracy."""
        values = [m["val_acc"] for r in self.runs if (m := getattr(r, key)) is not None]
        if not values:
            return None
        v = np.asarray(values, dtype=np.float64)
        return {"n": len(v), "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1
                else 0.0, "min": float(v.min()), "max": float(v.max())}

    @property
    def seeds(self) -> list[Any]:
        return [r.config.get("seed") for r in self.runs]

    @property
    def epochs(self) -> list[int]:
        """The epochs its runs finished (one value unless some are still running)."""
        return sorted({r.epochs for r in self.runs})


def seed_groups(runs: list[RunRecord]) -> list[SeedGroup]:
    """Group the runs by recipe, in order of first appearance; each group is labelled by the
    options that set it apart from the other groups ("all runs" when there is one group)."""
    by_key: dict[str, tuple[dict[str, Any], list[RunRecord]]] = {}
    for r in runs:
        recipe = _recipe(r)
        key = json.dumps(recipe, sort_keys=True, default=str)
        by_key.setdefault(key, (recipe, []))[1].append(r)
    recipes = [recipe for recipe, _ in by_key.values()]
    groups = [members for _, members in by_key.values()]
    differing = [k for k in dict.fromkeys(k for rec in recipes for k in rec)
                 if len({json.dumps(rec.get(k, "(absent)"), default=str) for rec in recipes}) > 1]
    out = []
    for g, rec in zip(groups, recipes, strict=True):
        label = ", ".join(f"{k}={_value(rec[k]) if k in rec else '(absent)'}"
                          for k in differing if not _implied(k, rec)) or "all runs"
        out.append(SeedGroup(label, g))
    return out


def recipe_rows(runs: list[RunRecord]) -> list[dict[str, Any]]:
    """One row per recipe (see seed_groups): its runs, seeds, and last/best val accuracy stats."""
    return [{"recipe": g.label, "runs": [r.label for r in g.runs], "seeds": g.seeds,
             "epochs": g.epochs,
             "last_val_acc": g.stats("last"), "best_val_acc": g.stats("best")}
            for g in seed_groups(runs)]


__all__ = ["MISSING", "SeedGroup", "config_diff", "recipe_rows", "seed_groups", "summary_rows"]
