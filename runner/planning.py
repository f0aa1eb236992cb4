"""The pre-run plan: what each parameter group is, how big, whether and when it trains, its lr and weight decay at
the first step, and its BatchNorm mode -- so a user sees at a glance that "frozen" really is frozen."""
from __future__ import annotations

from typing import Any

from torch import nn

from runner.freezing import is_held


def _bn_mode(modules: list[nn.Module]) -> str:
    norms = [m for m in modules if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return "-"
    held = sum(is_held(m) for m in norms)  # held in eval by the freeze policy
    return "eval (held)" if held == len(norms) else "train" if held == 0 else f"{held} of {len(norms)} held"


def plan(run) -> dict[str, Any]:
    """Rows per optimizer parameter group plus one for parameters that never train, and the totals."""
    owner = {id(p): name for name, module in run.model.named_modules() for p in module.parameters(recurse=False)}
    module_of = dict(run.model.named_modules())
    rows, in_groups = [], set()
    auto = run.resolved["optimizer"].get("lr") == "auto"  # not found yet: shown as auto x the group's scale
    for group in run.optimizer.param_groups:
        params = group["params"]
        in_groups |= {id(p) for p in params}
        modules = sorted({owner[id(p)] for p in params})
        starts = run.freeze_plan.schedule.get(group.get("name"), 1)
        trains = "from epoch 1" if starts <= 1 else f"from epoch {starts}"
        rows.append({"group": group.get("name", "group"), "modules": _summarise(modules),
                     "parameters": sum(p.numel() for p in params),
                     "trains": "never" if starts > run.recipe.settings.epochs else trains,
                     "lr": None if auto else group["lr"], "lr_scale": group.get("lr_scale", 1.0),
                     "weight_decay": group.get("weight_decay", 0.0),
                     "batchnorm": _bn_mode([module_of[m] for m in modules])})
    never = [p for p in run.model.parameters() if id(p) not in in_groups]
    if never:
        modules = sorted({owner[id(p)] for p in never})
        rows.insert(0, {"group": "(frozen)", "modules": _summarise(modules), "parameters": sum(p.numel() for p in never),
                        "trains": "never", "lr": 0.0, "lr_scale": 0.0, "weight_decay": 0.0,
                        "batchnorm": _bn_mode([module_of[m] for m in modules])})
    total = sum(p.numel() for p in run.model.parameters())
    trainable = sum(r["parameters"] for r in rows if r["trains"] != "never")
    return {"recipe": run.recipe.name, "rows": rows, "trainable": trainable, "total": total,
            "epochs": run.recipe.settings.epochs}


def _summarise(modules: list[str]) -> str:
    """Module names folded by their first two parts: ``blocks.0-3`` rather than forty names."""
    heads: dict[str, set[str]] = {}
    for name in modules:
        parts = name.split(".")
        key = parts[0]
        heads.setdefault(key, set()).add(parts[1] if len(parts) > 1 else "")
    out = []
    for key, subs in heads.items():
        numbers = sorted(int(s) for s in subs if s.isdigit())
        if numbers and len(numbers) == len(subs) and len(numbers) > 1:
            out.append(f"{key}.{numbers[0]}-{numbers[-1]}" if numbers == list(range(numbers[0], numbers[-1] + 1))
                       else f"{key}.{{{','.join(map(str, numbers))}}}")
        elif subs == {""} or len(subs) > 3:
            out.append(key)
        else:
            out.append(", ".join(f"{key}.{s}" if s else key for s in sorted(subs)))
    return ", ".join(out) or "-"
