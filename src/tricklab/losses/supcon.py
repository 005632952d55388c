from __future__ import annotations

from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import LOSSES
from ..types import Batch, Output, TrainContext
from .base import Loss
from .functional import supcon_loss
from .gather import gather_examples, world_size


@LOSSES.register("supcon")
class SupCon(Loss):
    """Supervised contrastive loss (Khosla et al. 2020, arXiv:2004.11362) on the pooled features,
    meant as an auxiliary term: total = main + weight·SCL (weight 0.2 as in Gunel et al. 2021,
    arXiv:2011.01403, for fine-tuning).

    Views: one per example; when R-Drop stacked the batch (batch.views == V, rows [v*N:(v+1)*N] are
    view v), the V dropout passes are the V views. Features are L2-normalised; an optional
    projection head (`projection: 128` -> Linear-ReLU-Linear to 128 dims, as in the paper) is a
    submodule, trained with the model. Anchors with no positive in the batch are left out.
    Shapes: out.pooled (V*N, F), batch.labels (V*N,) long -> scalar.

    Several processes (DDP): train.batch_size is the global batch, so each process gathers every
    process's (N_r, V, P) features and labels (per example, views kept together; shards may differ
    by one) and computes the loss of the whole global batch (the same value on every process), with
    only its own rows carrying gradient, scaled by the world size W (gather.gather_examples): summed
    over processes that is W times the global gradient, and DDP's averaging (train.py averages the
    projection head's gradients the same way) leaves the single-process gradient of the global batch.
    Chosen over a differentiable all_gather (torch.distributed.nn) with local anchors because the
    backward needs no collective and the mean over anchors with positives is the global one without
    a second reduction; the price is the (V·N_global)² similarity matrix on every process, small next
    to the encoder. One process: unchanged.
    """

    tasks = ("single_label",)
    default_weight = 0.2

    def __init__(self, temperature: float = 0.07, base_temperature: float = 0.07, contrast_mode: str = "all",
                 projection: int | None = None, in_dim: int | None = None):
        super().__init__()
        for k, v in (("temperature", temperature), ("base_temperature", base_temperature)):
            if not isinstance(v, (int, float)) or v <= 0:
                raise ConfigError(f"loss supcon: {k} must be a positive number (0.07 is usual), got {v!r}")
        if contrast_mode not in ("all", "one"):
            raise ConfigError(f"loss supcon: contrast_mode must be 'all' or 'one', got {contrast_mode!r}")
        if projection is not None and (not isinstance(projection, int) or projection < 1):
            raise ConfigError(f"loss supcon: projection must be an output size (e.g. 128) or null, got {projection!r}")
        self.temperature, self.base_temperature = float(temperature), float(base_temperature)
        self.contrast_mode, self.projection_dim = contrast_mode, projection
        self.head: nn.Module | None = None
        if projection is not None and in_dim is not None:
            self._build_head(int(in_dim))

    def _build_head(self, in_dim: int) -> None:
        self.head = nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, self.projection_dim))

    def setup(self, ctx: TrainContext) -> None:
        if self.projection_dim is not None and self.head is None:
            dim = ctx.data.get("feature_dim")
            if dim is None:
                raise ConfigError("loss supcon: projection needs the feature size; fix: add in_dim: <size of "
                                  "out.pooled> (the encoder's hidden size for pooler/cls/mean pooling)")
            self._build_head(int(dim))

    def forward(self, out: Output, batch: Batch) -> Tensor:
        z = out.pooled.float()                                             # (V*N, F)
        if self.head is not None:
            z = self.head(z).float()                                       # (V*N, P)
        V = max(int(batch.views), 1)
        N = z.shape[0] // V
        feats, labels = z.reshape(V, N, -1).transpose(0, 1), batch.labels[:N]  # (N, V, F), (N,)
        if world_size() > 1:
            feats, labels = gather_examples(feats, labels)                 # (N_global, V, F), (N_global,)
        return supcon_loss(feats, labels, self.temperature, self.base_temperature, self.contrast_mode)
