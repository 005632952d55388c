"""train.adam_bias_correction=false: AdamW composed with c_t = (1-b1^t)/sqrt(1-b2^t) must step exactly as Adam
without bias correction (BertAdam's update, Devlin et al. 2018's optimizer), written out here by hand."""
from __future__ import annotations

import math

import pytest
import torch

from tricklab.config import TrainConfig
from tricklab.training.optim import adam_without_bias_correction, build_scheduler


def adam_no_bias_correction(p0: torch.Tensor, grads: list[torch.Tensor], lrs: list[float], wd: float,
                            b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> torch.Tensor:
    """m, v without bias correction; decoupled weight decay p *= 1 - lr·c_t·wd (AdamW's, scaled like the step);
    eps enters as eps·sqrt(1 - b2^t), which is where AdamW's eps lands once the correction is divided out."""
    p, m, v = p0.double().clone(), torch.zeros_like(p0, dtype=torch.float64), torch.zeros_like(p0, dtype=torch.float64)
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        g = g.double()
        c = (1 - b1 ** t) / math.sqrt(1 - b2 ** t)
        p = p * (1 - lr * c * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * m / (v.sqrt() + eps * math.sqrt(1 - b2 ** t))
    return p


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_adamw_without_bias_correction_is_uncorrected_adam(wd):
    torch.manual_seed(0)
    p0 = torch.randn(7, 5, dtype=torch.float64)
    grads = [torch.randn(7, 5, dtype=torch.float64) * (0.1 + i) for i in range(12)]
    w = torch.nn.Parameter(p0.clone())
    opt = torch.optim.AdamW([w], lr=1e-2, weight_decay=wd)
    tc = TrainConfig(lr=1e-2, warmup_steps=3, scheduler="linear")
    sched = build_scheduler(opt, tc, 12, [adam_without_bias_correction()])
    want_lrs = [1e-2 * (s / 3 if s < 3 else (12 - s) / 9) for s in range(12)]   # warm-up 3 (from 0), linear to 0
    for t, g in enumerate(grads, start=1):
        c = (1 - 0.9 ** t) / math.sqrt(1 - 0.999 ** t)
        assert opt.param_groups[0]["lr"] == pytest.approx(want_lrs[t - 1] * c)   # the base schedule, times c_t
        w.grad = g.clone()
        opt.step()
        sched.step()
    torch.testing.assert_close(w.detach(), adam_no_bias_correction(p0, grads, want_lrs, wd), rtol=1e-10, atol=1e-12)


def test_bias_correction_factor_values():
    """The issue's figures: BertAdam's steps are 6.5x AdamW's at step 10, 3.2x at 100, 1.7x at 456."""
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([w], lr=1.0)
    sched = build_scheduler(opt, TrainConfig(lr=1.0, scheduler="constant"), 500, [adam_without_bias_correction()])
    factors = {}
    for t in range(1, 457):
        factors[t] = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
    assert factors[10] == pytest.approx(6.5, abs=0.05) and factors[100] == pytest.approx(3.2, abs=0.05)
    assert factors[456] == pytest.approx(1.7, abs=0.05) and factors[1] == pytest.approx(0.1 / math.sqrt(0.001))
