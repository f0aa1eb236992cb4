"""The one training engine: build the components a recipe names, fit, keep the best weights.

It knows no component by name: it asks the catalog for each kind in turn (backbone, dataset, freeze policy,
optimizer, scheduler) and calls lifecycle hooks, with a :class:`runner.api.RunView`, so plugins can observe the
run. ``run.py`` holds a run's parts and shared steps, ``build.py`` makes a run from a recipe, ``loop.py`` trains it;
checkpoints are :mod:`runner.checkpoint`'s.
"""
from runner.checkpoint import read_last
from runner.engine.build import LR_PLACEHOLDER, build, plan, prepare_features, use_cached_features
from runner.engine.loop import clip_gradients, fit, run_phase, training_step
from runner.engine.run import Run, RunInterrupted, TrainingDiverged, evaluated_model, predict

__all__ = ["LR_PLACEHOLDER", "Run", "RunInterrupted", "TrainingDiverged", "build", "clip_gradients",
           "evaluated_model", "fit", "plan", "predict", "prepare_features", "read_last", "run_phase",
           "training_step", "use_cached_features"]
