"""Using a trained model: load it from a run folder or checkpoint, predict files, evaluate a split, export.

The model is rebuilt from the recipe saved in the checkpoint (its backbone component, a head for its classes) and
its weights loaded strictly; images go through the checkpoint's own preprocessing.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from runner.types import Preprocess
from runner.errors import RunnerError, did_you_mean
from runner.images import IMAGE_EXTENSIONS, read_rgb
from runner.hardware import resolve_device, resolve_precision
from runner.weights import load_strict

DISTRIBUTION = "runner-transfer"
"""This project's name on the package index (``runner`` there is another project): used in install hints."""


@dataclass
class Trained:
    model: nn.Module
    classes: list[str]
    preprocess: Preprocess
    recipe: dict
    recipe_path: Path
    folder: Path
    device: torch.device
    dtype: torch.dtype | None
    tta: str = "none"
    """Test-time augmentation: none, flip or crops (the recipe's ``tta`` unless the command line says)."""

    def transform(self):
        """What a file goes through: one eval view, or with ``tta`` a (views, 3, H, W) stack."""
        if self.tta == "none":
            return self.preprocess.eval_transform()
        return self.preprocess.tta_transform(self.tta)

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities for (N, 3, H, W) images, or the mean over views for (N, views, 3, H, W)."""
        autocast = torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else contextlib.nullcontext()
        views = images.shape[1] if images.dim() == 5 else 0
        flat = images.flatten(0, 1) if views else images
        with torch.inference_mode(), autocast:
            probs = self.model(flat.to(self.device)).float().softmax(1).cpu()
        return probs.view(images.shape[0], views, -1).mean(1) if views else probs


def load_trained(ref: str | Path, catalog, device: str = "auto", tta: str | None = None) -> Trained:
    """The model of a run folder (its best.pt) or of a checkpoint file, ready for inference; ``tta`` overrides
    the recipe's test-time augmentation."""
    from runner import checkpoint

    path = Path(ref)
    file = path / "best.pt" if path.is_dir() else path
    if not file.is_file():
        raise RunnerError(f"{ref}: no checkpoint (expected a run folder with best.pt, or a .pt file)")
    state = checkpoint.load(file, "best")
    section = dict(state["recipe"]["backbone"])
    component = catalog.get("backbone", section.pop("name"))
    backbone = component.build(component.params.model_validate(section))
    backbone.replace_head(len(state["classes"]))
    load_strict(backbone.model, state["model"], str(file))
    target = resolve_device(device)
    model = backbone.model.to(target).eval()
    tta = tta or state["recipe"].get("tta", "none")
    if tta not in ("none", "flip", "crops"):
        raise RunnerError(f"--tta {tta}: expected none, flip or crops{did_you_mean(tta, ['none', 'flip', 'crops'])}")
    return Trained(model, list(state["classes"]), Preprocess(**state["preprocess"]), state["recipe"],
                   Path(state.get("recipe_path", ".")), file.parent,
                   target, resolve_precision(state["recipe"].get("precision", "auto"), target), tta)


def image_files(paths: list[str]) -> list[Path]:
    """The image files named, and those under the folders named, in a stable order."""
    found: list[Path] = []
    for ref in paths:
        path = Path(ref)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        elif path.is_file():
            found.append(path)
        else:
            raise RunnerError(f"{ref}: no such file or folder")
    if not found:
        raise RunnerError(f"no images in {', '.join(paths)} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return found


class Files(Dataset):
    """Image files read as training reads them (:func:`runner.images.read_rgb`: alpha on white, 16-bit scaled,
    large JPEGs decoded in draft mode down to ``shorter``), each with its label (or -1) and whether it was read."""

    def __init__(self, files: list[Path], transform, labels: list[int] | None = None, shorter: int | None = None):
        self.files, self.transform, self.labels, self.shorter = files, transform, labels, shorter

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        try:
            image = self.transform(read_rgb(self.files[i], shorter=self.shorter))
            ok = True
        except Exception:  # an unreadable file: reported, not fatal
            image, ok = torch.zeros(3, 1, 1), False
        return image, (self.labels[i] if self.labels else -1), ok


def _batches(trained: Trained, files: list[Path], labels: list[int] | None, batch_size: int):
    """Batches of ``files`` read and transformed as ``trained`` sees images, with their labels and which were read."""
    dataset = Files(files, trained.transform(), labels, trained.preprocess.resize)

    def collate(items):
        good = [it for it in items if it[2]]
        images = torch.stack([it[0] for it in good]) if good else None
        return images, [it[1] for it in items], [it[2] for it in items]

    yield from DataLoader(dataset, batch_size=batch_size, collate_fn=collate)


def predict_files(trained: Trained, files: list[Path], top_k: int = 3, batch_size: int = 32) -> list[dict]:
    """One row per file: predicted class, its probability, the top k; unreadable files get an error."""
    rows, index = [], 0
    for images, _, oks in _batches(trained, files, None, batch_size):
        probs = iter(trained.probabilities(images)) if images is not None else iter(())
        for ok in oks:
            file = files[index]
            index += 1
            if not ok:
                rows.append({"file": str(file), "error": "not a readable image"})
                continue
            p = next(probs)
            values, indices = p.topk(min(top_k, len(trained.classes)))
            rows.append({"file": str(file), "class": trained.classes[int(indices[0])], "probability": float(values[0]),
                         "top": [[trained.classes[int(i)], float(v)] for v, i in zip(values, indices)]})
    return rows


def recipe_dataset(trained: Trained, split: str, catalog):
    """A split of the checkpoint recipe's own dataset component, as the recipe builds it."""
    if split not in ("train", "val"):
        raise RunnerError(f"--split {split}: expected train or val")
    section = dict(trained.recipe["dataset"])
    component = catalog.get("dataset", section.pop("name"))
    data = component.build(component.params.model_validate(section), trained.preprocess, trained.recipe_path.parent)
    if list(data.classes) != trained.classes:
        raise RunnerError(f"the recipe's dataset now has classes {data.classes}, the model {trained.classes}")
    return getattr(data, split)


def recipe_split(trained: Trained, split: str, catalog) -> tuple[list[Path], list[int]] | Dataset:
    """The files and labels of a split of the recipe's dataset when it lists them as ``samples`` (ImageFolder and
    its kin: then predict-time preprocessing and TTA apply); else the dataset itself, yielding ready tensors."""
    dataset = recipe_dataset(trained, split, catalog)
    samples = getattr(dataset, "samples", None)
    if samples is None:
        return dataset
    return [Path(path) for path, _ in samples], [int(label) for _, label in samples]


def labelled_files(folder: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    """The images of an ImageFolder-style folder whose class folders match the checkpoint's classes."""
    if not folder.is_dir():
        raise RunnerError(f"{folder}: no such folder")
    present = sorted(p.name for p in folder.iterdir() if p.is_dir())
    unknown = sorted(set(present) - set(classes))
    if unknown:
        raise RunnerError(f"{folder}: class folders {unknown} are not among the model's classes {classes}")
    files, labels = [], []
    for c, name in enumerate(classes):
        if (folder / name).is_dir():
            found = image_files([str(folder / name)]) if any((folder / name).iterdir()) else []
            files += found
            labels += [c] * len(found)
    if not files:
        raise RunnerError(f"{folder}: no images in its class folders")
    return files, labels


def evaluate(trained: Trained, files: list[Path], labels: list[int], batch_size: int = 32) -> dict:
    """Accuracy, per-class precision/recall/F1, the confusion matrix and the most confidently wrong images."""
    batches = _batches(trained, files, labels, batch_size)
    return _scores(trained, batches, [str(f) for f in files])


def evaluate_dataset(trained: Trained, dataset, name: str, batch_size: int = 64) -> dict:
    """:func:`evaluate` for a dataset that yields (tensor, label) itself (no files: items are named
    ``name[index]``); its own transform applies, so TTA does not."""
    batches = ((images, [int(t) for t in targets], [True] * len(targets))
               for images, targets in DataLoader(dataset, batch_size=batch_size))
    return _scores(trained, batches, [f"{name}[{i}]" for i in range(len(dataset))])


def _scores(trained: Trained, batches, names: list[str]) -> dict:
    n = len(trained.classes)
    confusion = torch.zeros(n, n, dtype=torch.long)
    wrong, index, skipped = [], 0, []
    for images, targets, oks in batches:
        probs = iter(trained.probabilities(images)) if images is not None else iter(())
        for target, ok in zip(targets, oks):
            file = names[index]
            index += 1
            if not ok:
                skipped.append(str(file))
                continue
            p = next(probs)
            guess = int(p.argmax())
            confusion[target, guess] += 1
            if guess != target:
                wrong.append({"file": str(file), "true": trained.classes[target],
                              "predicted": trained.classes[guess], "probability": float(p[guess])})
    per_class = []
    for c, name in enumerate(trained.classes):
        tp = int(confusion[c, c])
        precision = tp / max(int(confusion[:, c].sum()), 1)
        recall = tp / max(int(confusion[c].sum()), 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-12)
        per_class.append({"class": name, "precision": precision, "recall": recall, "f1": f1,
                          "support": int(confusion[c].sum())})
    total = int(confusion.sum())
    return {"accuracy": int(confusion.diag().sum()) / max(total, 1), "images": total, "per_class": per_class,
            "confusion": confusion.tolist(), "classes": trained.classes, "skipped": skipped,
            "most_confident_wrong": sorted(wrong, key=lambda w: -w["probability"])[:10]}


def plot_confusion(result: dict, path: Path | None = None):
    """The confusion matrix as a picture: counts in the cells, class names on both axes, over 600 px a side
    at the 80 dpi pictures are saved at; written to ``path`` (when given) and returned as the figure."""
    from runner.figures import pyplot, save_figure

    plt = pyplot()
    matrix = [[int(c) for c in row] for row in result["confusion"]]
    classes = [str(c) for c in result["classes"]]
    n = len(classes)
    side = max(9.0, 2.5 + 0.55 * n)  # inches, at 80 dpi: over 600 px once the margins are trimmed
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    image = ax.imshow(matrix, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="images")
    labels = max(7, min(13, int(160 / max(n, 1))))  # font sizes shrink with the number of classes
    turned = n > 3 or max(map(len, classes), default=0) > 8
    ax.set_xticks(range(n), classes, rotation=45 if turned else 0, ha="right" if turned else "center",
                  fontsize=labels)
    ax.set_yticks(range(n), classes, fontsize=labels)
    ax.set_xlabel("predicted", fontsize=13)
    ax.set_ylabel("true", fontsize=13)
    peak = max((c for row in matrix for c in row), default=0)
    counts = max(6, min(16, int(220 / max(n, 1))))
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(matrix[i][j]), ha="center", va="center", fontsize=counts,
                    color="white" if peak and matrix[i][j] > peak / 2 else "black")
    ax.set_title(f"accuracy {result['accuracy']:.4f} on {result['images']} images", fontsize=14)
    if path is not None:
        save_figure(fig, path)
    return fig


def export_batch(trained: Trained, images: str | None, catalog) -> torch.Tensor:
    """The real images an export is checked on: up to 8 files of ``images`` (a folder or file) or else of the
    recipe's val split, through the checkpoint's preprocessing; a val split that lists no files gives its own
    tensors."""
    found = image_files([images]) if images else recipe_split(trained, "val", catalog)
    if isinstance(found, (tuple, list)):  # files: through the checkpoint's preprocessing
        files = (found[0] if isinstance(found, tuple) else found)[:8]
        transform = trained.preprocess.eval_transform()
        batch = torch.stack([transform(read_rgb(f, shorter=trained.preprocess.resize)) for f in files])
    else:  # a dataset that yields tensors itself
        files = range(min(8, len(found)))
        batch = torch.stack([found[i][0] for i in files])
    return batch


FORMATS = {"export": "model.pt2", "onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
"""Export formats and their default file names: a ``torch.export`` program (the default), ONNX, and TorchScript
(deprecated by torch; kept for old consumers)."""


def format_of(path: str | Path) -> str:
    """The export format a file name implies: .pt2 a torch.export program, .onnx ONNX, else TorchScript."""
    suffix = Path(path).suffix.lower()
    return {".pt2": "export", ".onnx": "onnx"}.get(suffix, "torchscript")


def export_path(trained: Trained, fmt: str) -> Path:
    """Where an export goes unless told: model.pt2, model.onnx or model.torchscript.pt in the run folder."""
    return trained.folder / FORMATS[fmt]


def export(trained: Trained, batch: torch.Tensor, fmt: str, out: Path) -> float:
    """Write the model as a torch.export program, ONNX or TorchScript with its classes and preprocessing; the max
    abs difference of the written file's outputs to eager PyTorch on ``batch``."""
    model = trained.model.float().eval()
    cpu = torch.device("cpu")
    model.to(cpu)
    meta = json.dumps({"classes": trained.classes, "preprocess": trained.preprocess.__dict__})
    with torch.inference_mode():
        eager = model(batch)
    if fmt == "export":
        batch_dim = torch.export.Dim("batch", min=1, max=4096)
        program = torch.export.export(model, (batch,), dynamic_shapes=({0: batch_dim},))
        buffer = __import__("io").BytesIO()
        torch.export.save(program, buffer, extra_files={"runner.json": meta})
        from runner.runfolder import save_bytes
        save_bytes(buffer.getvalue(), out)
        with torch.inference_mode():
            exported = torch.export.load(str(out)).module()(batch)
    elif fmt == "torchscript":
        import warnings

        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch deprecates TorchScript; the CLI says so once
            traced = torch.jit.trace(model, batch)
        buffer = __import__("io").BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(traced, buffer, _extra_files={"runner.json": meta})
            from runner.runfolder import save_bytes
            save_bytes(buffer.getvalue(), out)
            loaded = torch.jit.load(str(out))
        with torch.inference_mode():
            exported = loaded(batch)
    else:
        try:
            import onnx  # noqa: F401
            import onnxruntime
        except ImportError:
            raise RunnerError(f"ONNX export needs the onnx extra: pip install '{DISTRIBUTION}[onnx]' "
                              "(onnx, onnxscript, onnxruntime)") from None
        from runner.runfolder import save_bytes

        example = batch if len(batch) > 1 else batch.repeat(2, 1, 1, 1)  # a batch of 1 would be fixed at 1
        program = torch.onnx.export(model, (example,), input_names=["images"], output_names=["logits"], dynamo=True,
                                    dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1 << 16)},),
                                    verbose=False)
        model_proto = program.model_proto  # weights inline: one self-contained file, written atomically
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = "runner", meta
        save_bytes(model_proto.SerializeToString(), out)
        session = onnxruntime.InferenceSession(str(out))
        exported = torch.from_numpy(session.run(None, {"images": batch.numpy()})[0])
    return float((exported - eager).abs().max())
