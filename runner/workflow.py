"""What a program or a notebook calls: ``runner.run``, ``runner.load``, ``runner.recipe``, ``runner.plan``,
``runner.components``. The command line is a thin layer over these same functions, so both give the same numbers
and the same one-line :class:`~runner.errors.RunnerError` (raised here, never ``sys.exit``).

    import runner
    result = runner.run("recipes/extract.yaml", overrides={"epochs": 5})
    model = runner.load(result.folder)
    model.predict(["a.jpg"])
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from runner.errors import RunnerError
from runner.recipes import Recipe


def overrides_of(overrides: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    """``{"optimizer.lr": 0.01}`` as the command line's ``optimizer.lr=0.01`` (values as JSON, which is YAML)."""
    if not overrides:
        return []
    if isinstance(overrides, Mapping):
        return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    return [str(text) for text in overrides]


def recipe(ref: str | Path, overrides: Mapping[str, Any] | Sequence[str] | None = None,
           plugins: Sequence[Any] = ()) -> Recipe:
    """A recipe file (or packaged name) with ``overrides``, validated against every component's parameters;
    all problems are raised at once as one :class:`RunnerError`. ``plugins``: plugin files, module names or
    objects to load for it."""
    return _load(ref, overrides, plugins)[0]


def _load(ref, overrides, plugins, warn=None):
    from runner import session

    if isinstance(ref, Recipe):
        if overrides:
            raise RunnerError("give overrides when loading the recipe: runner.recipe(path, overrides=...)")
        refs, objects = session.split_plugins(plugins)
        return ref, session.catalog([*refs, *ref.plugin_refs()], objects, warn=warn)
    refs, objects = session.split_plugins(plugins)
    return session.load(ref, overrides_of(overrides), refs, objects, label="overrides", warn=warn)


def plan(recipe_or_ref: Recipe | str | Path, overrides=None, plugins: Sequence[Any] = ()) -> dict[str, Any]:
    """The parameter groups a recipe trains (what ``runner plan`` shows) without reading the data."""
    from runner import engine

    loaded, catalog = _load(recipe_or_ref, overrides, plugins)
    return engine.plan(loaded, catalog)


def components(kind: str | None = None, plugins: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """What ``runner list`` shows, as data: kind, name, plugin, summary and the parameters' JSON schema."""
    from runner import session
    from runner.types import KINDS

    if kind is not None and kind not in KINDS:
        from runner.errors import did_you_mean
        raise RunnerError(f"unknown component kind '{kind}'{did_you_mean(kind, KINDS)}; kinds: {', '.join(KINDS)}")
    refs, objects = session.split_plugins(plugins)
    catalog = session.catalog(refs, objects)
    rows = []
    for k in [kind] if kind else KINDS:
        for name in catalog.names(k):
            for entry in catalog.clashes[k].get(name) or [catalog.entries[k][name]]:
                rows.append({"kind": k, "name": name, "plugin": entry.plugin, "summary": entry.component.summary,
                             "params": entry.component.params.model_json_schema()})
    return rows


@dataclass
class Result:
    """A finished (or early-stopped) run: its folder, best val accuracy and per-epoch metrics."""

    folder: Path
    best_val_acc: float
    best_epoch: int
    summary: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)
    """One dict per epoch (``epoch``, ``train_loss``, ``val_acc``, ``lr``...), as in metrics.jsonl."""

    def to_pandas(self):
        """The metrics as a pandas DataFrame (needs pandas)."""
        import pandas

        return pandas.DataFrame(self.metrics)


def run(recipe_or_ref: Recipe | str | Path, overrides: Mapping[str, Any] | Sequence[str] | None = None,
        plugins: Sequence[Any] = (), progress: bool = True, resume: str | Path | None = None,
        seeds: int | None = None) -> Result | dict[str, Any]:
    """Train a recipe (a file, a packaged name or a loaded :func:`recipe`) and return its :class:`Result`.

    ``plugins``: plugin files, module names or objects (with ``@runner.api.hookimpl`` methods) registered for this
    run only, e.g. to watch epochs from a notebook. ``progress``: the live progress and epoch table (rich renders
    in Jupyter too). Ctrl-C (a kernel interrupt) leaves ``last.pt`` for ``resume=folder`` and raises
    KeyboardInterrupt.

    ``seeds=N`` runs the recipe with seeds 0..N-1 (each an ordinary run folder, inside one
    ``<output>/<name>-seeds-<time>`` folder) and returns the aggregate also written there as ``seeds.json``:
    ``best_val_acc`` and ``final_val_acc`` as ``{"mean", "std", "min", "max", "n"}`` (std: sample, n-1), ``runs``
    (each seed's figures and folder), ``folder``, and ``results``, the runs' :class:`Result` objects."""
    from runner import session

    if seeds is not None:
        import dataclasses

        from runner.engine.loop import seed_runs, seed_summary

        if resume is not None:
            raise RunnerError("seeds= runs the recipe once per seed: give no resume=")
        first, _ = _load(recipe_or_ref, overrides, plugins)  # bad input fails before any run
        folder, per_seed = seed_runs(seeds, first.settings.output, first.name)
        results = []
        for changes in per_seed:
            loaded, catalog = _load(recipe_or_ref, overrides, plugins)
            loaded = dataclasses.replace(loaded, settings=loaded.settings.model_copy(update=changes))
            results.append(train(loaded, catalog, display=_display() if progress else None))
        aggregate = seed_summary([r.summary for r in results], folder, first.name)
        return {**aggregate, "results": results}
    if resume is not None:
        refs, objects = session.split_plugins(plugins)
        loaded, catalog, _ = session.load_run_folder(resume, refs, objects)
    else:
        loaded, catalog = _load(recipe_or_ref, overrides, plugins)
    return train(loaded, catalog, resume=resume, display=_display() if progress else None)


def _display():
    from rich.console import Console

    from runner.cli.report import RichReport

    return RichReport(Console())


def train(loaded: Recipe, catalog, resume: str | Path | None = None, display=None) -> Result:
    """Build and fit a loaded recipe with ``display`` (a plugin object) registered for the run; an interrupt
    raises :class:`runner.engine.RunInterrupted` (a KeyboardInterrupt) once last.pt is consistent."""
    from runner import engine

    if display is not None:
        catalog.pm.register(display)
    try:
        built = engine.build(loaded, catalog)
        summary = engine.fit(built, resume=Path(resume) if resume is not None else None)
    finally:
        if display is not None:
            stop = getattr(display, "stop", None)
            if stop is not None:
                stop()
            catalog.pm.unregister(display)
    folder = Path(summary["folder"])
    lines = (folder / "metrics.jsonl").read_text().splitlines() if (folder / "metrics.jsonl").is_file() else []
    return Result(folder, summary["best_val_acc"], summary["best_epoch"], summary,
                  [json.loads(line) for line in lines if line.strip()])


class Model:
    """A trained model loaded from a run folder or checkpoint: its classes, its preprocessing, and predict,
    evaluate and export -- the same functions ``runner predict``, ``evaluate`` and ``export`` call."""

    def __init__(self, trained, catalog):
        self._trained, self._catalog = trained, catalog

    def __repr__(self) -> str:
        return f"Model({self.folder}, classes={self.classes})"

    @property
    def classes(self) -> list[str]:
        return list(self._trained.classes)

    @property
    def preprocess(self):
        """The :class:`runner.api.Preprocess` images go through before the model."""
        return self._trained.preprocess

    @property
    def folder(self) -> Path:
        return self._trained.folder

    @property
    def recipe(self) -> dict[str, Any]:
        """The resolved recipe the model was trained with."""
        return dict(self._trained.recipe)

    @property
    def module(self):
        """The ``torch.nn.Module`` itself, in eval mode."""
        return self._trained.model

    def predict(self, images, top_k: int = 3, batch_size: int = 32) -> list[dict[str, Any]]:
        """Classes and probabilities for ``images``: file paths or folders (as ``runner predict``), PIL images, or
        a preprocessed ``(N, 3, H, W)`` tensor. One dict per image: ``class``, ``probability``, ``top`` (the
        ``top_k`` classes with probabilities) and, for files, ``file`` (or ``error`` when unreadable)."""
        import torch

        from runner import inference

        if isinstance(images, (str, Path)):
            images = [images]
        if isinstance(images, torch.Tensor):
            return [self._row(p, top_k) for p in self._trained.probabilities(images)]
        images = list(images)
        if all(isinstance(i, (str, Path)) for i in images):
            files = inference.image_files([str(i) for i in images])
            return inference.predict_files(self._trained, files, top_k, batch_size)
        from runner.images import to_rgb

        transform = self._trained.transform()
        batch = torch.stack([transform(to_rgb(image)) for image in images])  # as training reads image files
        return [self._row(p, top_k) for p in self._trained.probabilities(batch)]

    def _row(self, probs, top_k: int) -> dict[str, Any]:
        values, indices = probs.topk(min(top_k, len(self.classes)))
        return {"class": self.classes[int(indices[0])], "probability": float(values[0]),
                "top": [[self.classes[int(i)], float(v)] for v, i in zip(values, indices)]}

    def evaluate(self, data: str | Path | None = None, split: str = "val", batch_size: int = 32) -> dict[str, Any]:
        """Accuracy, per-class precision/recall/F1, the confusion matrix and the most confidently wrong images, on
        a folder of class folders (``data``) or on a split of the recipe's own dataset."""
        from runner import inference

        if data is not None:
            return inference.evaluate(self._trained, *inference.labelled_files(Path(data), self.classes),
                                      batch_size=batch_size)
        found = inference.recipe_split(self._trained, split, self._catalog)
        if isinstance(found, tuple):
            return inference.evaluate(self._trained, *found, batch_size=batch_size)
        return inference.evaluate_dataset(self._trained, found, split)

    def export(self, path: str | Path | None = None, format: str | None = None,
               images: str | Path | None = None) -> dict[str, Any]:
        """Write the model (format from ``format`` or the file's suffix: ``.pt2`` a torch.export program, ``.onnx``,
        else TorchScript) and check it against eager PyTorch on up to 8 real images (``images``, else the recipe's
        val split). Returns ``path``, ``format``, ``images`` and ``max_abs_diff``."""
        from runner import inference

        fmt = format or (inference.format_of(path) if path is not None else "export")
        if fmt not in inference.FORMATS:
            from runner.errors import did_you_mean
            raise RunnerError(f"format {fmt}: expected {', '.join(inference.FORMATS)}"
                              f"{did_you_mean(fmt, inference.FORMATS)}")
        trained = self._trained
        batch = inference.export_batch(trained, str(images) if images is not None else None, self._catalog)
        target = Path(path) if path is not None else inference.export_path(trained, fmt)
        diff = inference.export(trained, batch, fmt, target)
        return {"path": target, "format": fmt, "images": len(batch), "max_abs_diff": diff}


def load(ref: str | Path, device: str = "auto", tta: str | None = None, plugins: Sequence[Any] = (),
         warn=None) -> Model:
    """The model of a run folder (its best.pt) or a checkpoint file; ``tta``: none, flip or crops (default: the
    recipe's). ``plugins``: plugin files, modules or objects providing the backbone, if not installed; ``warn``
    is called with each installed plugin that failed to load."""
    from runner import inference, session

    refs, objects = session.split_plugins(plugins)
    catalog = session.catalog(refs, objects, warn=warn)
    return Model(inference.load_trained(ref, catalog, device=device, tta=tta), catalog)
