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


def _keep(x: Tensor, n: Tensor) -> Tensor:
    """(B, C, T) -> the same with positions t >= n[b] set to zero (each text's own length n (B,))."""
    return x * (torch.arange(x.shape[-1], device=x.device) < n[:, None]).unsqueeze(1).to(x.dtype)


class _FCOutput:
    """The sequence heads end in `self.fc`."""

    @property
    def output_layer(self) -> nn.Linear:
        return self.fc  # type: ignore[attr-defined]


@HEADS.register("cnn")
class CNNHead(_FCOutput, nn.Module):
    """TextCNN (Kim 2014, arXiv:1408.5882) over token states (B, T, H): filters of widths 2/3/4, ReLU, max over
    time, concat, linear. Only windows inside a text's real tokens count (batches are right-padded); a text
    shorter than a filter is zero-extended to that filter's width (one window). So padding never matters."""
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
        n = mask.sum(1)                                                # (B,) real tokens
        x = F.pad(_zero_pad(h, mask).transpose(1, 2), (0, self.max_k - 1))  # (B, H, T + max_k - 1): every width fits
        feats = []
        for c in self.convs:
            k = c.kernel_size[0]
            y = F.relu(c(x))                                           # (B, F, T + max_k - k)
            # windows t <= L - k lie inside the text; t = 0 alone when L < k. ReLU >= 0, so zeros drop out of the max
            feats.append(_keep(y, (n - k).clamp(min=0) + 1).amax(-1))  # (B, F)
        feats = torch.cat(feats, -1)                                   # (B, F*len(filter_sizes))
        return self.fc(self.dropout(feats)), feats


def bilstm(in_dim: int, hidden: int, layers: int, dropout: float) -> nn.LSTM:
    """The bidirectional LSTM of the rnn and rcnn heads (dropout between its layers only)."""
    return nn.LSTM(in_dim, hidden, layers, batch_first=True, bidirectional=True, dropout=dropout if layers > 1 else 0.0)


@HEADS.register("rnn")
class RNNHead(_FCOutput, nn.Module):
    """Bidirectional LSTM over token states; final forward and backward states -> linear."""
    sequence = True

    def __init__(self, in_dim: int, num_labels: int, dropout: float = 0.1, hidden: int = 256, layers: int = 2):
        super().__init__()
        self.lstm, self.dropout = bilstm(in_dim, hidden, layers, dropout), nn.Dropout(dropout)
        self.feature_dim = 2 * hidden
        self.fc = nn.Linear(self.feature_dim, num_labels)

    def forward(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        lengths = mask.sum(1).clamp(min=1).cpu()                      # packing: the LSTM never sees padding
        h = h.to(self.lstm.weight_ih_l0.dtype)                        # (B, T, H) in the LSTM's dtype
        packed = nn.utils.rnn.pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
        _, (hn, _) = self.lstm(packed)                                # hn: (layers*2, B, hidden)
        feats = torch.cat([hn[-2], hn[-1]], -1)                       # (B, 2*hidden)
        return self.fc(self.dropout(feats)), feats


@HEADS.register("rcnn")
class RCNNHead(_FCOutput, nn.Module):
    """RCNN: BiLSTM states concatenated with the token states, ReLU, max over time, linear."""
    sequence = True

    def __init__(self, in_dim: int, num_labels: int, dropout: float = 0.1, hidden: int = 256, layers: int = 2):
        super().__init__()
        self.lstm, self.dropout = bilstm(in_dim, hidden, layers, dropout), nn.Dropout(dropout)
        self.feature_dim = 2 * hidden + in_dim
        self.fc = nn.Linear(self.feature_dim, num_labels)

    def forward(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        T = h.shape[1]
        lengths = mask.sum(1).clamp(min=1).cpu()                      # packing: the LSTM never sees padding
        h = h.to(self.lstm.weight_ih_l0.dtype)                        # (B, T, H) in the LSTM's dtype
        packed = nn.utils.rnn.pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, 2*hidden)
        x = F.relu(torch.cat([h, out], -1))                           # (B, T, 2*hidden + H)
        feats = masked_max(x, mask)                                    # max over real tokens only
        return self.fc(self.dropout(feats)), feats


@HEADS.register("dpcnn")
class DPCNNHead(_FCOutput, nn.Module):
    """Deep pyramid CNN (Johnson & Zhang 2017, ACL, "Deep Pyramid Convolutional Neural Networks for Text
    Categorization") over token states (B, T, H): region conv, two convs, then repeated (downsample by 2, two
    convs, residual) until one position is left. Per text: its same-padded convs see zeros beyond its own end,
    its downsampling tracks its own length, and it stops at its own depth, so a padded text gets exactly
    the features it gets alone."""
    sequence = True

    def __init__(self, in_dim: int, num_labels: int, dropout: float = 0.1, num_filters: int = 250):
        super().__init__()
        self.region = nn.Conv1d(in_dim, num_filters, 3, padding=1)
        self.conv = nn.Conv1d(num_filters, num_filters, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.feature_dim = num_filters
        self.fc = nn.Linear(num_filters, num_labels)

    def forward(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        n, T = mask.sum(1).clamp(min=1), h.shape[1]                    # (B,) each text's own length; batch length
        # after every conv, zeros beyond each text's end: its same-padded convs see what it sees alone
        x = _keep(self.region(_zero_pad(h, mask).transpose(1, 2)), n)  # (B, F, T)
        x = _keep(self.conv(F.relu(x)), n)
        x = _keep(self.conv(F.relu(x)), n)
        feats = x[..., 0]                                              # (B, F) texts of length 1 stop here
        while T > 1:
            # pool 3 / stride 2 after a zero: a text of length L keeps L // 2 positions. Two zeros (not one) keep
            # the batch axis >= 1 (ceil(T / 2)) in an ONNX graph traced longer than its input; the extra position
            # lies beyond every text's end and is zeroed by _keep
            n, T = n // 2, (T + 1) // 2
            px = _keep(F.max_pool1d(F.pad(x, (0, 2)), 3, stride=2), n)  # (B, F, T)
            x = _keep(self.conv(F.relu(px)), n)
            x = _keep(self.conv(F.relu(x)), n) + px
            feats = torch.where((n == 1)[:, None], x[..., 0], feats)   # a text stops at its own depth (n hits 1 once)
        return self.fc(self.dropout(feats)), feats
