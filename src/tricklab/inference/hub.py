"""`tricklab push`: upload a run's model/ folder (weights, tokenizer, config.json with auto_map where needed,
modeling_tricklab.py, tricklab.json, the README.md model card) to the Hugging Face Hub with huggingface_hub
(HfApi.create_repo + HfApi.upload_folder). The token is huggingface_hub's: `--token`, $HF_TOKEN or `hf auth login`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..errors import TrickLabError
from ..evaluation.model_card import CARD_FILE, write_model_card
from ..model.classifier import META_FILE, WEIGHTS_FILE, upgrade_model_folder

NEEDED = ("config.json", WEIGHTS_FILE, META_FILE)


def model_folder(run: str | Path, log: Callable[[str], None] | None = print) -> Path:
    """The model/ folder of a run (or a model folder itself), checked to hold what a push needs. A folder saved
    by an older tricklab gets the config transformers needs to load its head (upgrade_model_folder); its model
    card is written from the run folder when missing."""
    run = Path(run)
    d = run / "model" if (run / "model").is_dir() else run
    missing = [f for f in NEEDED if not (d / f).is_file()]
    if (d / "adapter_model.safetensors").is_file():
        raise TrickLabError(f"--run {run}: {d} holds adapters (trick lora) and the head, not the full weights that a "
                            f"transformers model folder on the Hub needs; fix: train without --trick lora to push, or "
                            f"export it: tricklab export --run {run} (the ONNX bundle has the merged weights)")
    if missing:
        raise TrickLabError(f"--run {run}: {d} is not a finished tricklab model folder (missing {', '.join(missing)}); "
                            f"fix: give the --out folder of a finished `tricklab train`")
    if not (d / CARD_FILE).is_file():
        if not ((d.parent / "config.yaml").is_file() and (d.parent / "metrics.json").is_file()):
            raise TrickLabError(f"--run {run}: {d} has no {CARD_FILE} and no run folder around it to write one from "
                                f"(config.yaml, metrics.json); fix: push the run folder, or add a {CARD_FILE}")
        write_model_card(d.parent)
    if upgrade_model_folder(d) and log:
        log(f"note: {d / 'config.json'} rewritten so that transformers loads the trained head "
            f"(TrickLabForSequenceClassification, trust_remote_code=True); the weights are unchanged")
    return d


def push_run(run: str | Path, repo: str, private: bool = False, token: str | None = None, api: Any = None,
             log: Callable[[str], None] | None = print) -> str:
    """Create `repo` (a model repo; private when asked; kept if it exists) and upload the model folder in one
    commit. Returns the repo URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError as e:
        raise TrickLabError(f"--repo {repo!r}: not a valid repo id ({str(e).splitlines()[0]}); fix: user/name or "
                            f"organisation/name") from None
    folder = model_folder(run, log)
    api = api or HfApi(token=token)
    try:
        url = api.create_repo(repo_id=repo, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="model",
                          commit_message=f"tricklab push of {Path(run).resolve().name}",
                          ignore_patterns=["*.tmp", "*.old"])
    except Exception as e:  # network, authentication, offline mode: one line, what to do
        raise TrickLabError(f"push to {repo}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; fix: "
                            f"check the network, the token (--token, $HF_TOKEN or `hf auth login`) and that "
                            f"HF_HUB_OFFLINE is not set") from None
    if log:
        log(f"pushed {folder} to {url}")
    return str(url)
