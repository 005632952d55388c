"""model/README.md: a Hugging Face model card written from what the run folder holds (config.yaml, metrics.json,
model/tricklab.json, model/config.json).

The YAML metadata is rendered by huggingface_hub (ModelCardData + EvalResult -> `model-index`): base model and
its licence (model/resolve.py: base_model_card), language, pipeline tag, datasets, metrics. The text: the
recipe with its tricks, dev/test metrics, calibration, the per-class table, how to use it, intended use and
limits, and the command that trained it.
"""
from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any, Sequence

import yaml

from ..model import heads as _heads  # noqa: F401  (registration)
from ..model.resolve import base_model_card
from ..registry import HEADS
from ..runfiles import atomic_write

CARD_FILE = "README.md"
TASK_METRIC_NAMES = {"single_label": [("accuracy", "accuracy"), ("macro_f1", "f1")],
                     "multi_label": [("micro_f1", "f1"), ("macro_f1", "f1")],
                     "regression": [("pearson", "pearsonr"), ("spearman", "spearmanr")]}
SHOWN = {"single_label": ["accuracy", "macro_f1", "weighted_f1", "loss", "ece", "ece_calibrated"],
         "multi_label": ["micro_f1", "macro_f1", "micro_f1_tuned", "macro_f1_tuned", "subset_accuracy"],
         "regression": ["pearson", "spearman", "mse"]}


def script_counts(texts: Sequence[str]) -> dict[str, int]:
    """Letters by script over the first 2,000 texts (200 characters each), keyed by the language each script
    suggests: Han -> zh, kana -> ja, Hangul -> ko, Latin -> en."""
    counts = {"zh": 0, "ja": 0, "ko": 0, "en": 0}
    for t in texts[:2000]:
        for ch in t[:200]:
            if not ch.isalpha():
                continue
            name = unicodedata.name(ch, "")
            key = ("ja" if name.startswith(("HIRAGANA", "KATAKANA")) else "ko" if name.startswith("HANGUL")
                   else "zh" if name.startswith("CJK") else "en" if name.startswith("LATIN") else None)
            if key:
                counts[key] += 1
    return counts


def detect_language(texts: Sequence[str]) -> list[str]:
    """ISO 639-1 codes by script over a sample of texts: Han -> zh (kana -> ja, Hangul -> ko), Latin -> en
    (a guess: Latin script alone does not tell English from French); [] when nothing dominates."""
    counts = script_counts(texts)
    total = sum(counts.values())
    if counts["ja"] > 0.05 * total:
        return ["ja"]
    return [k for k in ("zh", "ko", "en") if total and counts[k] >= 0.3 * total]


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _named(items: list[dict[str, Any]]) -> str:
    return ", ".join(f"`{i['name']}`" + (f" ({', '.join(f'{k} {v}' for k, v in i.items() if k != 'name')})"
                                          if len(i) > 1 else "") for i in items) or "none"


def optimizer(tr: dict[str, Any], meta: dict[str, Any]) -> str:
    """As the run resolved it (tricklab.json); runs from before that record: from the config."""
    if meta.get("optimizer"):
        return meta["optimizer"]
    return "AdamW with BertAdam's steps (no bias correction)" if tr.get("adam_bias_correction") in (False, "false") \
        else "AdamW"


def recipe(cfg: dict[str, Any], meta: dict[str, Any], metrics: dict[str, Any], base: str) -> str:
    m, tr, d = cfg["model"], cfg["train"], cfg["data"]
    loss = cfg.get("loss") or "the task's default"
    loss = _named([loss if isinstance(loss, dict) else {"name": loss}]) if cfg.get("loss") else loss
    warm = f"{tr['warmup_steps']} steps" if tr.get("warmup_steps") else f"{tr['warmup_ratio']:.0%} of the steps"
    pooling = ("(the head reads the token states)" if getattr(HEADS.get(m["head"]), "sequence", False)
               else f"-> pooling `{m['pooling']}`")
    rows = [("encoder", f"{base} {pooling} -> dropout {m['dropout']} -> head `{m['head']}`"
             + (f" {m['head_args']}" if m.get("head_args") else "")),
            ("loss", loss), ("auxiliary losses", _named(cfg.get("aux_losses") or [])),
            ("tricks", _named(cfg.get("tricks") or [])),
            ("optimizer", f"{optimizer(tr, meta)}, lr {tr['lr']}" + (f" (head {tr['head_lr']})" if tr.get("head_lr") else "")
             + f", weight decay {tr['weight_decay']}, batch {tr['batch_size']} x {tr['grad_accum']} accumulation, "
             f"max grad norm {tr['max_grad_norm']}"),
            ("schedule", f"`{tr.get('scheduler', 'linear')}`" + (f" {tr['scheduler_args']}" if tr.get("scheduler_args")
                                                                 else "") + f", warm-up {warm}"),
            ("steps", f"{metrics.get('steps', '?')} (best dev {next(iter(metrics.get('best_dev', {'?': 0})))} at step "
                      f"{metrics.get('best_step', '?')}), epochs {tr['epochs']}"),
            ("precision, seed", f"{meta.get('precision', tr['precision'])}, {tr['seed']}"),
            ("text", f"max {d['max_length']} tokens, long texts: `{d['truncation']}`, lower-cased: "
                     f"{'yes' if meta['data'].get('lowercase') else 'no'}")]
    if cfg.get("plugins"):
        rows.append(("plugins", ", ".join(f"`{p}`" for p in cfg["plugins"])))
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def results(task: str, metrics: dict[str, Any]) -> str:
    names = [k for k in SHOWN[task] if any(k in metrics.get(s, {}) for s in ("dev", "test"))]
    lines = ["| split | n | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for split in ("dev", "test"):
        if split in metrics:
            s = metrics[split]
            lines.append(f"| {split} | {s.get('n', '')} | " + " | ".join(_fmt(s.get(k, "")) for k in names) + " |")
    return "\n".join(lines)


def calibration(task: str, metrics: dict[str, Any], meta: dict[str, Any]) -> str:
    if task == "single_label" and meta.get("temperature") is not None:
        ece = "; ".join(f"{s}: ECE {metrics[s]['ece']:.4f} -> {metrics[s]['ece_calibrated']:.4f}"
                        for s in ("dev", "test") if "ece_calibrated" in metrics.get(s, {}))
        return (f"Temperature scaling fitted on dev: T = {meta['temperature']:.4f}; tricklab's predict, serve and "
                f"ONNX bundles report softmax(z / T) ({ece}). transformers' pipeline reports the raw softmax(z); "
                f"the predicted label is the same.")
    if task == "multi_label" and meta.get("thresholds"):
        th = meta["thresholds"]
        vals = th.get("per_label", th) if isinstance(th, dict) else th
        shown = json.dumps(vals, ensure_ascii=False)
        shown = shown if len(shown) <= 600 else shown[:600] + " ... (all in tricklab.json)"
        return (f"Per-label decision thresholds tuned on dev (tricklab applies them; transformers' pipeline "
                f"scores are the raw sigmoids, decide with 0.5 or these): `{shown}`")
    return "None fitted (regression, or calibration switched off)."


def per_class(metrics: dict[str, Any]) -> str:
    split = "test" if "per_class" in metrics.get("test", {}) else "dev"
    pc = metrics.get(split, {}).get("per_class")
    if not pc:
        return ""
    rows = [f"| {n} | {v['precision']:.4f} | {v['recall']:.4f} | {v['f1']:.4f} | {v['support']} |"
            for n, v in pc.items()]
    return (f"## Per class ({split})\n\n| class | precision | recall | F1 | support |\n|---|---|---|---|---|\n"
            + "\n".join(rows) + "\n")


def usage(name: str, remote: bool) -> str:
    trust = ", trust_remote_code=True" if remote else ""
    needs = " (needs tricklab installed)" if remote else ""
    return f"""```python
from tricklab import Predictor                    # pip install tricklab
Predictor.from_run("{name}").predict(["..."], top_k=3)

from transformers import pipeline                 # the same model in transformers{needs}
pipeline("text-classification", model="{name}"{trust})(["..."], top_k=None)
```"""


def adapter_usage(name: str, adapter: dict[str, Any]) -> str:
    """A folder saved with adapters (trick lora): no full weights, so tricklab (which merges them) loads it."""
    return (f"""```python
from tricklab import Predictor                    # pip install 'tricklab[peft]'
Predictor.from_run("{name}").predict(["..."], top_k=3)
```

This folder holds {adapter['method']} adapters ({adapter['parameters']:,} parameters: `adapter_model.safetensors`,
`adapter_config.json`, a PEFT adapter of the encoder) and the classification head (`head.safetensors`), not the
full weights: loading needs the base model `{adapter['base']}`, into which tricklab merges the adapters. It does
not load in transformers' pipeline by itself; `tricklab export` writes an ONNX bundle with the merged weights.""")


def note(remote: bool, task: str) -> str:
    raw = {"single_label": "softmax", "multi_label": "sigmoid"}.get(task, "output")
    return (("Loading in transformers runs this folder's `modeling_tricklab.py`, which imports the model classes "
             "from the tricklab package: `trust_remote_code=True` and `pip install tricklab` are needed. "
             if remote else "This folder is a standard transformers checkpoint. ")
            + f"Scores from transformers are the raw {raw} of the logits, before the calibration above.")


def limits(cfg: dict[str, Any], meta: dict[str, Any], lic: dict[str, str], labels: list[str], task: str) -> str:
    d = meta["data"]
    trunc = (d.get("truncation") or {}).get("policy", cfg["data"]["truncation"])
    if task == "regression":
        what = "a score"
    else:
        shown = ", ".join(f"`{x}`" for x in labels[:30]) + (" ..." if len(labels) > 30 else "")
        what = f"{len(labels)} labels: {shown}"
    chunk = " (tricklab aggregates chunk windows; transformers does not)" if trunc == "chunk" else ""
    out = [f"- Intended for classifying texts like its training data into {what}. It always answers with one of "
           f"its labels, also for texts unlike its data: use `abstain_below` (tricklab) or a score threshold where a "
           f"wrong label costs more than no label.",
           f"- Texts longer than {d['max_length']} tokens are cut (`{trunc}`); transformers' pipeline cuts the same "
           f"way only with `truncation=True` and only for `head`{chunk}.",
           "- The numbers above come from one run (one seed) on one dev/test split; `tricklab compare` measures "
           "how much they vary across seeds."]
    if lic.get("license"):
        out.append(f"- The base model's licence applies: `{lic['license']}`"
                   + "".join(f" ({lic[k]})" for k in ("license_name", "license_note") if lic.get(k)) + ".")
    else:
        out.append("- The base model's licence is not known to tricklab: check it before any use.")
    return "\n".join(out)


def card_metadata(cfg: dict[str, Any], metrics: dict[str, Any], task: str, lic: dict[str, str], language: list[str],
                  datasets: list[str], name: str) -> str:
    """The YAML block (without the --- fences), rendered by huggingface_hub."""
    from huggingface_hub import EvalResult, ModelCardData

    split = "test" if "test" in metrics else "dev"
    evals = [EvalResult(task_type="text-classification", dataset_type=datasets[0] if datasets else "custom",
                        dataset_name=datasets[0] if datasets else "custom", dataset_split=split, metric_type=mtype,
                        metric_name=key, metric_value=round(float(metrics[split][key]), 4))
             for key, mtype in TASK_METRIC_NAMES[task] if key in metrics.get(split, {})]
    data = ModelCardData(base_model=lic.get("base_model"), license=lic.get("license"),
                         license_name=lic.get("license_name"), license_link=lic.get("license_link"),
                         language=language or None, pipeline_tag="text-classification", library_name="transformers",
                         tags=["tricklab", "text-classification", task.replace("_", "-")]
                         + [t["name"] for t in cfg.get("tricks") or []],
                         datasets=datasets or None, metrics=sorted({m for _, m in TASK_METRIC_NAMES[task]}),
                         model_name=name, eval_results=evals or None)
    return data.to_yaml()


def model_card(run: str | Path, command: str | None = None, language: list[str] | None = None,
               datasets: list[str] | None = None) -> str:
    """The card text of a finished run folder (config.yaml, metrics.json, model/tricklab.json, model/config.json)."""
    run = Path(run)
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    meta = json.loads((run / "model" / "tricklab.json").read_text(encoding="utf-8"))
    remote = json.loads((run / "model" / "config.json").read_text(encoding="utf-8")).get("model_type") == "tricklab"
    task, labels = meta["task"], meta["labels"]["names"]
    lic = base_model_card(cfg["model"]["name"], meta["model"].get("backbone"))
    base = f"`{lic['base_model']}`" if lic.get("base_model") else f"`{cfg['model']['name']}` (a local folder)"
    name = run.resolve().name
    if language is None:
        language = detect_language(labels)
    cmd = command or (f"tricklab train --data DATA --config config.yaml --out {name}   "
                      f"# config.yaml: the resolved config saved in the run folder")
    body = f"""
# {name}

A {task.replace('_', '-')} text classifier fine-tuned with [tricklab](https://pypi.org/project/tricklab/) from
{base}{f" on `{datasets[0]}`" if datasets else ""}.

## Recipe

{recipe(cfg, meta, metrics, base)}

## Results

{results(task, metrics)}

## Calibration

{calibration(task, metrics, meta)}

{per_class(metrics)}
## How to use

{adapter_usage(name, meta["adapter"]) if meta.get("adapter") else usage(name, remote)}

{"" if meta.get("adapter") else note(remote, task)}

## Intended use and limitations

{limits(cfg, meta, lic, labels, task)}

## Training command

```bash
{cmd}
```
"""
    return "---\n" + card_metadata(cfg, metrics, task, lic, language, datasets or [], name) + "\n---\n" + body


def write_model_card(run: str | Path, command: str | None = None, language: list[str] | None = None,
                     datasets: list[str] | None = None) -> Path:
    path = Path(run) / "model" / CARD_FILE
    atomic_write(path, model_card(run, command, language, datasets), root=run)
    return path
