from __future__ import annotations

import pytest

from tricklab.config import load_config
from tricklab.errors import ConfigError


def test_defaults_and_set_coercion():
    cfg = load_config(None, ["train.lr=3e-5", "train.epochs=2", "model.pooling=mean", "train.group_by_length=false",
                             "data.text_column=1"])
    assert cfg.train.lr == pytest.approx(3e-5) and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 2 and cfg.model.pooling == "mean"
    assert cfg.train.group_by_length is False
    assert cfg.data.text_column == 1  # an index stays an int


def test_unknown_key_names_path_and_suggests():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.lrr'; did you mean 'train.lr'\?"):
        load_config(None, ["train.lrr=1"])
    with pytest.raises(ConfigError, match=r"unknown config key 'modle'; did you mean 'model'\?"):
        load_config(None, ["modle.name=x"])


def test_bad_types_and_choices():
    with pytest.raises(ConfigError, match=r"config train.batch_size: expected an integer, got 'big'"):
        load_config(None, ["train.batch_size=big"])
    with pytest.raises(ConfigError, match=r"train.precision: 'bf61' is not valid; did you mean 'bf16'"):
        load_config(None, ["train.precision=bf61"])
    with pytest.raises(ConfigError, match="must be at least 1"):
        load_config(None, ["train.batch_size=0"])


def test_yaml_file_and_precedence(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("task: single_label\ntrain:\n  lr: 1.0e-4\n  batch_size: 128\ntricks:\n  - {name: ema, decay: 0.99}\n")
    cfg = load_config(p, ["train.batch_size=32"], {"model.name": "x"})
    assert cfg.train.lr == pytest.approx(1e-4) and cfg.train.batch_size == 32 and cfg.model.name == "x"
    assert cfg.tricks == [{"name": "ema", "decay": 0.99}]
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, ["train.lr=2e-5", "model.head=cnn"])
    cfg.save(tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == cfg


def test_repo_configs_load():
    from pathlib import Path

    from tricklab.ablation.compare import load_variants_file, parse_variants, plan_grid
    from tricklab.config import Config

    for p in sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")):
        if p.name.startswith("variants"):  # a `compare --variants-file`: every variant must build a valid config
            runs, problems = plan_grid(Config(), parse_variants(None, load_variants_file(p)), [1], Path("unused"))
            assert not problems and len(runs) == len(load_variants_file(p)) + 1
        elif p.name.startswith("space"):   # a `tune --space`: every choice and range end builds a valid config
            from tricklab.ablation.tune import parse_space, trial_config

            for param in parse_space(p):
                for v in param.values:
                    trial_config(Config(), {param.key: v} | ({".".join(param.when): True} if param.when and
                                                             param.when[0] != "loss" else {}))
        else:
            load_config(p)


def test_cli_specs_keep_lists_and_resume_refuses_new_settings(tmp_path, capsys):
    from tricklab.cli import main, parse_spec

    assert parse_spec("ce:class_weights=[1,2,3],label_smoothing=0.1", "--loss") == {
        "name": "ce", "class_weights": [1, 2, 3], "label_smoothing": 0.1}
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path), "--resume", "--set", "train.epochs=5"]) == 2
    assert "--resume continues the run with its saved config.yaml; --set cannot change it" in capsys.readouterr().err


def test_numeric_guards():
    with pytest.raises(ConfigError, match="log_every: must be at least 1"):
        load_config(None, ["train.log_every=0"])
    with pytest.raises(ConfigError, match="train.epochs: must be positive"):
        load_config(None, ["train.epochs=0"])


def test_annotated_yaml_reads_back_as_the_config_and_explains_every_key(tmp_path, capsys):
    """`tricklab config`: the resolved config as YAML that --config reads back to the same config, every key of
    every section on its own line, each with the comment config.py gives it, changed keys with their default."""
    import dataclasses

    import yaml

    from tricklab.cli import main as cli_main
    from tricklab.config import Config, annotated_yaml

    sets = ["train.lr=1e-4", "data.text_column=评论", "data.label_column=1", "model.head_args={hidden: 64}",
            "train.scheduler=cosine", "train.scheduler_args={num_cycles: 2}", "tricks=[{name: rdrop, alpha: 4}]",
            "data.label_sep=|"]
    cfg = load_config(None, sets)
    for text in ("yes", "null", "1e5", "012", "a: b", "a #b", "~", "a\x85b", "a\u2028b", "'q'", "- x"):
        cfg.data.text_b_column = text                 # strings YAML would read as something else
        assert yaml.safe_load(annotated_yaml(cfg))["data"]["text_b_column"] == text, text
    cfg.data.text_b_column = None
    text = annotated_yaml(cfg)
    assert yaml.safe_load(text) == cfg.to_dict()
    lines = text.splitlines()
    for sec in ("data", "model", "train", "calibration", "tracking"):
        i = lines.index(f"{sec}:")
        keys = [f.name for f in dataclasses.fields(getattr(Config(), sec))]
        assert [ln.split(":")[0].strip() for ln in lines[i + 1:i + 1 + 200] if ln.startswith("  ") and
                not ln.lstrip().startswith("#")][:len(keys)] == keys
    line = {ln.split(":")[0].strip(): ln for ln in lines if ":" in ln and not ln.lstrip().startswith("#")}
    assert line["lr"].endswith("# peak learning rate of the encoder (default: 5.0e-05)")
    assert line["max_length"].endswith("# tokens per example (pairs: both texts together)")   # unchanged: no default
    assert "(default: null)" in line["text_column"] and "# name (with a header) or 0-based index" in line["text_column"]
    cont = lines[lines.index(line["on_invalid"]) + 1]       # a comment's continuation lines follow, aligned
    assert cont.strip() == "# column count, NaN target, ...) stops the run, or is dropped and listed in"
    assert cont.index("#") == line["on_invalid"].index("#")
    # the CLI prints it; train --config reads it back as the same config
    assert cli_main(["config", *[x for s in sets for x in ("--set", s)], "--trick", "fgm:epsilon=0.5"]) == 0
    out = tmp_path / "c.yaml"
    out.write_text(capsys.readouterr().out, encoding="utf-8")
    again = load_config(out)
    assert again.to_dict() == {**cfg.to_dict(), "tricks": [{"name": "rdrop", "alpha": 4}, {"name": "fgm", "epsilon": 0.5}]}
    assert cli_main(["config", "--set", "train.lrr=1"]) == 2
    for bad in (["--trick", "rdorp"], ["--loss", "focal:gama=2"], ["--set", "model.head=lineer"],
                ["--set", "model.pooling=meen"]):                       # checked as train checks them
        assert cli_main(["config", *bad]) == 2, bad
    capsys.readouterr()
    assert cli_main(["config", "--epochs", "2", "--max-train-per-class", "8"]) == 0      # train's shaping flags
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["train"]["epochs"] == 2 and shown["data"]["max_train_per_class"] == 8
