"""The package layout is the architecture: imports point down the layers (ARCHITECTURE.md), and the old module
paths of 0.1 still import, with a DeprecationWarning, as the modules that now hold their code."""
from __future__ import annotations

import ast
import importlib
import sys
import warnings
from pathlib import Path

import pytest

import tricklab  # noqa: E402

SRC = Path(tricklab.__file__).resolve().parent
# lower number = lower layer; a module may import its own layer or below, never above
LAYERS = {
    "config": 0, "registry": 0, "types": 0, "errors": 0, "_compat": 0, "runfiles": 0,
    "data": 1, "model": 1, "losses": 1, "tricks": 1, "evaluation": 1, "generation": 1,
    "training": 2, "inference": 2,
    "ablation": 3,
    "cli": 4, "demo": 4, "__init__": 4, "__main__": 4,
}


def layer_of(module: str) -> str:
    """'tricklab.training.loop' -> 'training'; 'tricklab.cli' -> 'cli'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute tricklab module) for every import in a source file, late imports included."""
    rel = path.relative_to(SRC.parent).with_suffix("")
    pkg = list(rel.parts[:-1])                                     # the package relative imports start from
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = pkg[: len(pkg) - node.level + 1]
            mod = ".".join(base + ([node.module] if node.module else []))
            names = [f"{mod}.{a.name}" for a in node.names] if not node.module else [mod]
            out += [(node.lineno, n) for n in names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tricklab"):
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("tricklab")]
    return out


def test_imports_point_down_the_layers():
    bad = []
    for f in sorted(SRC.rglob("*.py")):
        here = layer_of(".".join(f.relative_to(SRC.parent).with_suffix("").parts))
        for line, target in imports_of(f):
            there = layer_of(target)
            if there in LAYERS and LAYERS[there] > LAYERS[here]:
                bad.append(f"{f.relative_to(SRC)}:{line} ({here}) imports {target} ({there})")
    assert not bad, "imports pointing up the layers:\n" + "\n".join(bad)


def test_every_top_level_name_has_a_layer():
    names = {p.stem for p in SRC.glob("*.py")} | {p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()}
    assert names <= set(LAYERS), f"add to LAYERS (and ARCHITECTURE.md): {sorted(names - set(LAYERS))}"


def test_inference_never_imports_training():
    bad = [f"{f.relative_to(SRC)}:{line} {t}" for f in (SRC / "inference").rglob("*.py")
           for line, t in imports_of(f) if layer_of(t) == "training"]
    assert not bad, bad


@pytest.mark.parametrize("old,new,name", [
    ("tricklab.train", "tricklab.training.loop", "train"),
    ("tricklab.predict", "tricklab.inference.predictor", "Predictor"),
    ("tricklab.onnx_backend", "tricklab.inference.export", "export_bundle"),
    ("tricklab.onnx_backend", "tricklab.inference.export", "OnnxModel"),
    ("tricklab.context", "tricklab.types", "TrainContext"),
    ("tricklab.stats", "tricklab.ablation.stats", "paired_t_test"),
    ("tricklab.evaluate", "tricklab.evaluation.metrics", "compute_metrics"),
    ("tricklab.compare", "tricklab.ablation.compare", "compare"),
])
def test_old_module_paths_still_import_with_a_warning(old, new, name):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        mod = importlib.import_module(old)
    assert getattr(mod, name) is getattr(importlib.import_module(new), name)
    assert importlib.import_module(new).__spec__.name == new       # the real module keeps its own name
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.import_module(new)                                  # new paths never warn


def test_public_api():
    import tricklab
    from tricklab.inference import Predictor

    assert tricklab.Predictor is Predictor
    for name in tricklab.__all__:
        assert getattr(tricklab, name) is not None
