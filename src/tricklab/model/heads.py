"""Heads: features -> logits. `linear` takes the pooled vector (B, P); the others read the token
sequence (B, T, H) as in the bert_CNN / bert_RNN / bert_RCNN / bert_DPCNN designs of
Bert-Chinese-Text-Classification-Pytorch. Every head returns (logits (B, C), features (B, F)) and names the
nn.Linear that produces the logits as `output_layer` (Classifier.init_output_bias sets its bias)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import HEADS
from .pooling import masked_max


@HEADS.register("linear")
class LinearHead(nn.Linear):
    """One linear layer on the pooled vector (kept an nn.Linear so a pooler+linear model saves as a
    standard transformers `*ForSequenceClassification` checkpoint: `classifier.weight/bias`)."""
    sequence = False

    def __init__(self, in_dim: int, num_labels: int, dropout: float = 0.1):
        super().__init__(in_dim, num_labels)
        self.feature_dim = in_dim

    @property
    def output_layer(self) -> nn.Linear:
        return self

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        return super().forward(x), x


def _zero_pad(h: Tensor, mask: Tensor) -> Tensor:
    return h * mask.unsqueeze(-1).to(h.dtype)


class _FCOutput:
    """The sequence heads end in `self.fc`."""

    @property
    def output_layer(self) -> nn.Linear:
        return self.fc  # type: ignore[attr-defined]


@HEADS.register("cnn")
class CNNHead(_FCOutput, nn.Module):
    """TextCNN over token states: filters of widths 2/3/4, ReLU, max over time, concat, linear."""
    sequence = True

    def __init__(self, in_dim: int, num_labels: int, dropout: float = 0.1, filter_sizes: tuple = (2, 3, 4),
                 num_filters: int = 256):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(in_dim, num_filters, k) for k in filter_sizes)
        self.max_k = max(filter_sizes)
        self.dropout = nn.Dropout(dropout)
        self.feature_dim = num_filters * len(filter_sizes)
        self.fc = nn.Linear(self.feature_dim, num_labels)

    def forward(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        x = _zero_pad(h, mask).transpose(1, 2)                       # (B, H, T)
        if x.shape[-1] < self.max_k:
            x = F.pad(x, (0, self.max_k - x.shape[-1]))
        feats = torch.cat([F.relu(c(x)).amax(-1) for c in self.convs], -1)  # (B, F*k)
        return self.fc(self.dropout(feats)), feats


@HEADS.register("rnn")
class RNNHead(_FCOutput, nn.Module):
    """Bidirectional LSTM over token states; final forward and backward states -> linear."""
    sequence = True

    def __init__(self, in_dim: int, num_labels: int, dropout: float = 0.1, hidden: int = 256, layers: int = 2):
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden, layers, batch_first=True, bidirectional=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.feature_dim = 2 * hidden
        self.fc = nn.Linear(self.feature_dim, num_labels)

    def forward(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        lengths = mask.sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(h.float(), lengths, batch_first=True, enforce_sorted=False)
        _, (hn, _) = self.lstm(packed)                                # hn: (layers*2, B, hidden)
        feats = torch.cat([hn[-2], hn[-1]], -1)                       # (B, 2*hidden)
        return self.fc(self.dropout(feats)), feats


@HEADS.register("rcnn")
class RCNNHead(_FCOutput, nn.Module):
    """RCNN: BiLSTM states concatenated with the token states, ReLU, max over time, linear."""
    sequence = True

    def __init__(self, in_dim: int, num_labels: int, dropout: float = 0.1, hidden: int = 256, layers: int = 2):
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden, layers, batch_first=True, bidirectional=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.feature_dim = 2 * hidden + in_dim
        self.fc = nn.Linear(self.feature_dim, num_labels)

    def forward(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        T = h.shape[1]
        lengths = mask.sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(h.float(), lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, 2*hidden)
        x = F.relu(torch.cat([h.float(), out], -1))                   # (B, T, 2*hidden + H)
        feats = masked_max(x, mask)
        return self.fc(self.dropout(feats)), feats


@HEADS.register("dpcnn")
class DPCNNHead(_FCOutput, nn.Module):
    """Deep pyramid CNN (Johnson & Zhang 2017): region conv, two convs, then repeated
    (downsample by 2, two convs, residual) until one position is left."""
    sequence = True

    def __init__(self, in_dim: int, num_labels: int, dropout: float = 0.1, num_filters: int = 250):
        super().__init__()
        self.region = nn.Conv1d(in_dim, num_filters, 3, padding=1)
        self.conv = nn.Conv1d(num_filters, num_filters, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.feature_dim = num_filters
        self.fc = nn.Linear(num_filters, num_labels)

    def forward(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        x = self.region(_zero_pad(h, mask).transpose(1, 2))          # (B, F, T)
        x = self.conv(F.relu(x))
        x = self.conv(F.relu(x))
        while x.shape[-1] > 1:
            px = F.max_pool1d(F.pad(x, (0, 1)), 3, stride=2)          # (B, F, ~T/2)
            x = self.conv(F.relu(px))
            x = self.conv(F.relu(x)) + px
        feats = x.squeeze(-1)                                          # (B, F)
        return self.fc(self.dropout(feats)), feats
