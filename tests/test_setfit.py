"""Few-shot training: SetFit's pair sampler, the cosine-similarity loss and the logistic-regression head against
reference formulas, the stratified K-per-class subset, and `train.strategy=setfit` end to end (CLI train ->
predict, compare finetune vs setfit)."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
import yaml
from scipy import optimize

from conftest import tiny_cfg, write_thucnews
from tricklab.cli import main as cli_main
from tricklab.config import load_config
from tricklab.data import encode, load_data
from tricklab.data.pairs import epoch_pair_batches, sample_pairs
from tricklab.errors import ConfigError
from tricklab.training.setfit import cosine_similarity_loss, embeddings, fit_logistic_regression, logistic_regression

LABELS = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 3])      # class 3 has a single row


# ---------------------------------------------------------------- the pair sampler


def test_pairs_balanced_and_labelled_right():
    it = 7
    pairs = sample_pairs(LABELS, it, seed=3)
    n = len(LABELS)
    assert pairs.shape == (2 * n * it, 3) and pairs.dtype == np.int64
    a, b, t = pairs.T
    assert (t == 1).sum() == (t == 0).sum() == n * it                 # balanced positives / negatives
    same = LABELS[a] == LABELS[b]
    assert np.array_equal(same, t == 1)                                # targets: 1 iff same label
    alone = LABELS[a] == 3
    assert np.all(a[(t == 1) & ~alone] != b[(t == 1) & ~alone])       # a positive partner is another row ...
    assert np.all(b[(t == 1) & alone] == a[(t == 1) & alone])         # ... unless the row is alone in its class
    for row in range(n):                                               # every row anchors it + it pairs
        assert Counter(t[a == row].tolist()) == {1: it, 0: it}
    assert (np.diff(a) < 0).sum() > len(a) / 4                         # shuffled: anchors in no particular order


def test_pairs_seeded_and_partners_uniform():
    assert np.array_equal(sample_pairs(LABELS, 4, 11), sample_pairs(LABELS, 4, 11))
    assert not np.array_equal(sample_pairs(LABELS, 4, 11), sample_pairs(LABELS, 4, 12))
    pairs = sample_pairs(LABELS, 3000, seed=0)
    a, b, t = pairs.T
    pos = Counter(b[(a == 0) & (t == 1)].tolist())                     # row 0: the 3 other rows of class 0
    assert set(pos) == {1, 2, 3} and all(abs(c / 3000 - 1 / 3) < 0.04 for c in pos.values())
    neg = Counter(b[(a == 0) & (t == 0)].tolist())                     # any of the 6 rows of other classes
    assert set(neg) == {4, 5, 6, 7, 8, 9} and all(abs(c / 3000 - 1 / 6) < 0.03 for c in neg.values())


def test_epoch_batches_cover_every_pair_and_split_across_processes():
    tc = load_config(None, ["train.batch_size=6", "train.setfit_iterations=2", "train.seed=5"]).train
    one = epoch_pair_batches(LABELS.tolist(), tc, epoch=0)
    assert [len(b) for b in one] == [6, 6, 6, 6, 6, 6, 4]              # 40 pairs, 6 a step
    assert not np.array_equal(np.concatenate(one), np.concatenate(epoch_pair_batches(LABELS.tolist(), tc, 1)))
    halves = [epoch_pair_batches(LABELS.tolist(), tc, 0, rank, 2) for rank in (0, 1)]
    for k, b in enumerate(one):
        assert np.array_equal(np.concatenate([halves[0][k], halves[1][k]]), b)


# ---------------------------------------------------------------- the loss and the head


def test_cosine_similarity_loss_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(5, 8, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(5, 8, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    loss = cosine_similarity_loss(u, v, y)
    loss.backward()
    U, V, Y = u.detach().numpy(), v.detach().numpy(), y.numpy()
    nu, nv = np.linalg.norm(U, axis=1, keepdims=True), np.linalg.norm(V, axis=1, keepdims=True)
    cos = (U * V).sum(1, keepdims=True) / (nu * nv)
    assert float(loss.detach()) == pytest.approx(np.mean((cos[:, 0] - Y) ** 2), rel=1e-6)
    coef = 2 / len(Y) * (cos - Y[:, None])                             # dL/dcos_i
    assert np.allclose(u.grad.numpy(), coef * (V / (nu * nv) - cos * U / nu ** 2), rtol=1e-5, atol=1e-7)
    assert np.allclose(v.grad.numpy(), coef * (U / (nu * nv) - cos * V / nv ** 2), rtol=1e-5, atol=1e-7)


def test_logistic_regression_matches_scipy_on_the_same_objective():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5))
    y = (X[:, 0] + 0.5 * rng.normal(size=60) > 0).astype(int) + (X[:, 1] > 1)
    C, K, P = 0.5, 3, 5

    def objective(theta):
        W, b = theta[:K * P].reshape(K, P), theta[K * P:]
        z = X @ W.T + b
        z = z - z.max(1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        nll = -np.log(p[np.arange(len(y)), y]).sum() + (W ** 2).sum() / (2 * C)
        d = p - np.eye(K)[y]
        return nll, np.concatenate([(d.T @ X + W / C).ravel(), d.sum(0)])

    ref = optimize.minimize(objective, np.zeros(K * P + K), jac=True, method="L-BFGS-B", tol=1e-12).x
    W, b = logistic_regression(X, y, K, C=C, max_iter=500)
    assert np.allclose(W, ref[:K * P].reshape(K, P), atol=1e-4) and np.allclose(b, ref[K * P:], atol=1e-4)
    assert np.abs(objective(np.concatenate([W.ravel(), b]))[1]).max() < 1e-4   # stationary point
    # the reported gradient is the objective's at the returned solution: small when converged, not after 2 steps
    for steps in (500, 2):
        W, b, grad = fit_logistic_regression(X, y, K, C, steps)
        want = np.abs(objective(np.concatenate([W.ravel(), b]))[1]).max()
        assert grad == pytest.approx(want, rel=1e-6, abs=1e-12)
        assert (grad < 1e-4) == (steps == 500)



def test_the_head_gives_lbfgs_room_for_its_line_searches(monkeypatch):
    """max_iter iterations need more objective evaluations than torch's default of 1.25 x max_iter once the
    strong-Wolfe line search takes several per iteration: the fit asks for 20 x."""
    seen = {}
    real = torch.optim.LBFGS

    def spy(params, **kw):
        seen.update(kw)
        return real(params, **kw)

    monkeypatch.setattr(torch.optim, "LBFGS", spy)
    rng = np.random.default_rng(1)
    fit_logistic_regression(rng.normal(size=(20, 3)), rng.integers(0, 2, 20), 2, 1.0, 7)
    assert seen["max_iter"] == 7 and seen["max_eval"] == 140 and seen["line_search_fn"] == "strong_wolfe"


def test_pair_loss_is_the_cosine_loss_of_each_text_pooled_alone(tiny_model):
    """The training step's loss and gradient equal the reference: each text embedded on its own (no batch, no
    padding), cos(u, v) against the pair's target, squared, averaged; and the head's dropout is off meanwhile."""
    from types import SimpleNamespace

    from tricklab.model import build_classifier
    from tricklab.training.setfit import no_head_dropout, pair_loss

    torch.manual_seed(0)
    model, tok, _ = build_classifier(str(tiny_model), 3, "mean", "linear", {}, 0.5)
    model.eval()                                          # the encoder's own dropout off: the two passes agree
    texts = ["球赛冠军队员", "股市银行", "玩家游戏版本更新", "球赛", "利率上调基金"]
    enc = encode(tok, texts, None, 24, False, [0, 1, 2, 0, 1])
    pairs = np.array([[0, 3, 1], [1, 4, 1], [2, 0, 0], [4, 2, 0]])
    run = SimpleNamespace(enc=SimpleNamespace(train=enc), pad_id=tok.pad_token_id, device=torch.device("cpu"),
                          model=model, accelerator=SimpleNamespace(backward=lambda loss: loss.backward()))
    params = [p for p in model.parameters() if p.requires_grad]
    with no_head_dropout(model):
        assert model.dropout.p == 0.0
        got = pair_loss(run, pairs, scale=2.0)
    assert model.dropout.p == 0.5                         # restored
    grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    model.zero_grad()

    def alone(i: int) -> torch.Tensor:
        ids = torch.tensor([enc.input_ids[i]])
        h = model.encoder(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        return h.mean(dim=1)[0]                          # mean pooling over the text's own tokens

    cos = torch.stack([torch.nn.functional.cosine_similarity(alone(a), alone(b), dim=0) for a, b, _ in pairs])
    ref = ((cos - torch.tensor(pairs[:, 2], dtype=torch.float32)) ** 2).mean()
    assert got == pytest.approx(ref.item(), rel=1e-4)
    (2.0 * ref).backward()                                # the scale multiplies the gradient, not the value
    for p, g in zip(params, grads):
        ref_g = p.grad if p.grad is not None else torch.zeros_like(p)
        assert torch.allclose(g, ref_g, atol=1e-5, rtol=1e-3)


# ---------------------------------------------------------------- K per class


def test_max_train_per_class_exact_counts_and_seeds(tmp_path):
    data = write_thucnews(tmp_path / "d", n_train=60)                 # 20 rows per class
    lines = (data / "train.txt").read_text(encoding="utf-8").splitlines()
    # class 1 (finance) has only 4 rows: fewer than K
    kept = [ln for ln in lines if not ln.endswith("\t1")] + [ln for ln in lines if ln.endswith("\t1")][:4]
    (data / "train.txt").write_text("\n".join(kept) + "\n", encoding="utf-8")
    b = load_data(load_config(None, ["data.max_train_per_class=6", "train.seed=1"]), data)
    assert Counter(b.train.labels) == {0: 6, 2: 6, 1: 4}
    assert any("16 of 44 examples, at most 6 per class (data.max_train_per_class, seed 1)" in n
               and "fewer than 6 in train, all kept: finance (4)" in n for n in b.notes), b.notes
    order = [kept.index(f"{r.text}\t{y}") for r, y in zip(b.train.rows, b.train.labels)]
    assert order == sorted(order)                                      # file order kept
    again = load_data(load_config(None, ["data.max_train_per_class=6", "train.seed=1"]), data)
    other = load_data(load_config(None, ["data.max_train_per_class=6", "train.seed=2"]), data)
    texts = lambda bb: [r.text for r in bb.train.rows]                 # noqa: E731
    assert texts(again) == texts(b) and texts(other) != texts(b)
    assert [r.text for r, y in zip(other.train.rows, other.train.labels) if y == 1] == \
           [r.text for r, y in zip(b.train.rows, b.train.labels) if y == 1]   # all 4 kept whatever the seed
    assert len(b.dev) == 30                                            # a dev file is left whole


def test_max_train_per_class_draws_every_row_of_a_class_alike(tmp_path):
    """Over many seeds each row is drawn K/n of the time (uniform within its class), whatever its position; with
    no dev file, the dev rows are held out before the draw and never drawn."""
    from tricklab.data.dataset import per_class_subset

    data = write_thucnews(tmp_path / "d", n_train=60)                   # 20 rows per class
    b = load_data(load_config(None, []), data)
    k, seeds = 5, 600
    counts = Counter()
    for seed in range(seeds):
        sub, _ = per_class_subset(b.train, "single_label", b.label_map.names, k, seed)
        assert Counter(sub.labels) == {0: k, 1: k, 2: k}
        counts.update(int(i) for i in sub.index)
    sizes = Counter(b.train.labels)
    for i, y in enumerate(b.train.labels):                             # binomial(600, 1/4): mean 150, sd 10.6
        assert abs(counts[int(b.train.index[i]) if b.train.index is not None else i] - seeds * k / sizes[y]) < 50
    (data / "dev.txt").unlink()
    held = load_data(load_config(None, ["data.max_train_per_class=4", "train.seed=3"]), data)
    assert not {r.text for r in held.dev.rows} & {r.text for r in held.train.rows} and len(held.dev) > 0


def test_max_train_per_class_only_single_label(tmp_path):
    with pytest.raises(ConfigError, match="single_label tasks, not regression"):
        load_config(None, ["task=regression", "data.max_train_per_class=4"])
    (tmp_path / "train.tsv").write_text("".join(f"文本{i}\ta|b\n" if i % 2 else f"文本{i}\ta\n" for i in range(20)))
    with pytest.raises(ConfigError, match="single_label tasks, not multi_label"):
        load_data(load_config(None, ["data.max_train_per_class=4"]), tmp_path / "train.tsv")


# ---------------------------------------------------------------- end to end


def test_setfit_config_errors(tiny_model, tmp_path, capsys):
    for sets, msg in ((["task=multi_label"], "single_label classification only, not multi_label"),
                      (["model.head=cnn"], "model.head must be linear"),
                      (["tricks=[{name: ema}]"], "tricks would not be used"),
                      (["data.sampler=balanced"], "data.sampler=balanced would not be used"),
                      (["train.setfit_iterations=0"], "train.setfit_iterations: must be at least 1"),
                      (["data.truncation=chunk"], "data.truncation=chunk .windows. does not apply"),
                      (["train.strategy=setfi"], "did you mean 'setfit'")):
        with pytest.raises(ConfigError, match=msg):
            load_config(None, ["train.strategy=setfit", *sets])
    # LoRA is the one trick SetFit takes (its pairs train the adapters); a per-class draw cut again is refused
    assert load_config(None, ["train.strategy=setfit", "tricks=[{name: lora, r: 4}]"]).tricks[0]["name"] == "lora"
    with pytest.raises(ConfigError, match="undo its balance; fix: set one of them"):
        load_config(None, ["data.max_train_per_class=8", "data.max_train_samples=100"])
    (tmp_path / "train.tsv").write_text("".join(f"文本{i}\t{i / 7:.3f}\n" for i in range(20)))   # detected regression
    assert cli_main(["train", "--data", str(tmp_path / "train.tsv"), "--model", str(tiny_model), "--set",
                     "train.strategy=setfit", "--out", str(tmp_path / "r")]) == 2
    assert "setfit: for single_label classification only, not regression" in capsys.readouterr().err


def test_setfit_train_cli_then_predict(tiny_model, tmp_path, capsys):
    from tricklab.model import load_model

    data = write_thucnews(tmp_path / "d", n_train=90, n_dev=30)
    run = tmp_path / "run"
    args = ["train", "--data", str(data), "--model", str(tiny_model), "--out", str(run), "--max-train-per-class", "8",
            "--set", "train.strategy=setfit", "--set", "train.setfit_iterations=4", "--set", "model.pooling=mean",
            "--set", "train.batch_size=8", "--set", "train.lr=1e-3", "--set", "train.precision=fp32", "--set",
            "data.max_length=24", "--set", "train.log_every=2", "--set", "train.warmup_ratio=0", "--epochs", "2",
            "--set", "train.setfit_head_c=0.5", "--set", "train.setfit_head_steps=200"]
    assert cli_main(args) == 0
    err = capsys.readouterr().out
    assert "setfit: 192 pairs an epoch (4 positive + 4 negative per train row), 8 pairs a step" in err
    assert "train 24 | dev 30 | test 30 | 3 labels" in err and "| 48 steps |" in err
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    body = [r for r in log if "loss/cosine" in r]
    assert body[-1]["step"] == 48 and body[-1]["epoch"] == 2 and body[-1]["loss"] < body[0]["loss"]
    assert any("dev/accuracy" in r for r in log) and "final/test/accuracy" in log[-1]
    m = json.loads((run / "metrics.json").read_text())
    assert m["accuracy"] > 0.6 and m["steps"] == 48, m                 # 3 learnable classes; chance is 0.33
    # the saved model: a tuned encoder and, as its head, the logistic regression on that encoder's embeddings
    from transformers import AutoModel

    model, tok, meta = load_model(run / "model")

    pre = AutoModel.from_pretrained(tiny_model).state_dict()
    assert any(not torch.equal(v, pre[k]) for k, v in model.encoder.state_dict().items() if k in pre)
    b = load_data(load_config(None, ["data.max_train_per_class=8", "train.seed=42", "data.max_length=24"]), data)
    enc = encode(tok, [r.text for r in b.train.rows], None, 24, meta["data"]["lowercase"], b.train.labels)
    X = embeddings(model, enc, 64, tok.pad_token_id, torch.device("cpu"), "fp32")
    W, bias = logistic_regression(X, np.array(b.train.labels), 3, C=0.5, max_iter=200)   # the run's C and steps
    assert np.allclose(model.classifier.weight.detach().numpy(), W, atol=1e-4)
    assert np.allclose(model.classifier.bias.detach().numpy(), bias, atol=1e-4)
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["strategy"] == "setfit"
    # an ordinary run folder: predict reads it unchanged
    inp = tmp_path / "in.txt"
    inp.write_text("球赛冠军队员胜负\n股市银行基金利率\n")
    assert cli_main(["predict", "--run", str(run), str(inp)]) == 0
    out = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["label"] for x in out] == ["sports", "finance"]


def test_setfit_with_lora_trains_the_adapters_and_the_run_reloads(tiny_model, tmp_path, capsys):
    pytest.importorskip("peft")
    from safetensors.torch import load_file
    from transformers import AutoModel

    data = write_thucnews(tmp_path / "d", n_train=45, n_dev=15)
    run = tmp_path / "run"
    assert cli_main(["train", "--data", str(data), "--model", str(tiny_model), "--out", str(run), "--quiet",
                     "--set", "train.strategy=setfit", "--set", "train.setfit_iterations=2", "--set",
                     "model.pooling=mean", "--set", "train.batch_size=8", "--set", "train.lr=1e-2", "--set",
                     "train.precision=fp32", "--set", "data.max_length=24", "--set", "train.max_steps=4",
                     "--set", "train.setfit_head_steps=1", "--trick", "lora:r=4,alpha=8"]) == 0
    out = capsys.readouterr().out
    assert "trainable parameters:" in out
    assert "warning: setfit head: the logistic regression stopped after train.setfit_head_steps=1 iterations" in out
    adapters = load_file(str(run / "model" / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in adapters.items())    # the pairs moved the adapters
    assert not (run / "model" / "model.safetensors").exists()                         # the base is not copied
    meta = json.loads((run / "model" / "tricklab.json").read_text())
    assert meta["adapter"]["base"] == str(tiny_model) and meta["adapter"]["parameters"] == sum(
        v.numel() for v in adapters.values())
    from tricklab.model import load_model

    merged, _, _ = load_model(run / "model")               # base + adapters merged: the encoder moved off the base
    base = AutoModel.from_pretrained(tiny_model).state_dict()
    assert any(not torch.equal(v, base[k]) for k, v in merged.encoder.state_dict().items() if k in base)
    cfg = load_config(run / "config.yaml")                 # the saved config loads again: evaluate and predict run
    assert cfg.train.strategy == "setfit" and cfg.tricks[0]["name"] == "lora"
    assert cli_main(["evaluate", "--run", str(run), "--data", str(data / "dev.txt"), "--out", str(tmp_path / "ev")]) == 0
    inp = tmp_path / "in.txt"
    inp.write_text("球赛冠军队员胜负\n")
    capsys.readouterr()
    assert cli_main(["predict", "--run", str(run), str(inp)]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["label"] in {"sports", "finance", "game"}


def test_compare_finetune_vs_setfit(tiny_model, tmp_path, capsys):
    data = write_thucnews(tmp_path / "d", n_train=60, n_dev=24)
    out = tmp_path / "grid"
    assert cli_main(["compare", "--data", str(data), "--model", str(tiny_model), "--variants", "finetune,setfit",
                     "--baseline", "finetune", "--seeds", "1", "--out", str(out), "--max-train-per-class", "6",
                     "--epochs", "1", "--set", "train.batch_size=8", "--set", "train.lr=2e-3", "--set",
                     "train.precision=fp32", "--set", "data.max_length=24", "--set", "train.setfit_iterations=2",
                     "--set", "model.pooling=mean"]) == 0
    for v in ("finetune", "setfit"):
        cfg = yaml.safe_load((out / v / "seed1" / "config.yaml").read_text())
        assert cfg["train"]["strategy"] == v and cfg["data"]["max_train_per_class"] == 6
        assert (out / v / "seed1" / "predictions.npz").is_file()
    assert "| setfit | 1 |" in (out / "leaderboard.md").read_text(encoding="utf-8")


def test_max_train_per_class_flag_reaches_every_command(monkeypatch, tmp_path, capsys):
    import tricklab.ablation.compare as compare_mod
    import tricklab.ablation.tune as tune_mod
    import tricklab.training.loop as loop_mod

    seen = {}

    class Done:
        failed: list = []

    monkeypatch.setattr(loop_mod, "train", lambda cfg, *a, **k: seen.setdefault("train", cfg))
    monkeypatch.setattr(compare_mod, "compare", lambda base, *a, **k: seen.setdefault("compare", base) and Done())
    monkeypatch.setattr(tune_mod, "tune", lambda base, *a, **k: seen.setdefault("tune", base))
    d = str(tmp_path)
    assert cli_main(["train", "--data", d, "--max-train-per-class", "4", "--out", str(tmp_path / "r")]) == 0
    assert cli_main(["compare", "--data", d, "--max-train-per-class", "5", "--variants", "finetune,setfit"]) == 0
    assert cli_main(["tune", "--data", d, "--space", "s.yaml", "--max-train-per-class", "6"]) == 0
    assert [seen[c].data.max_train_per_class for c in ("train", "compare", "tune")] == [4, 5, 6]
    assert cli_main(["train", "--out", str(tmp_path / "r"), "--resume", "--max-train-per-class", "4"]) == 2
    assert "--max-train-per-class cannot change it" in capsys.readouterr().err
