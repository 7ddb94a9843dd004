"""A GRU/LSTM forecaster with a direct multi-horizon head."""

from __future__ import annotations

import torch
from torch import nn

from deepapps.core.errors import ConfigError


class RNNForecaster(nn.Module):
    """GRU/LSTM over each channel's look-back; the last hidden state maps to all H*Q at once."""

    def __init__(self, horizon: int, n_quantiles: int, cell: str = "gru", hidden_size: int = 64,
                 num_layers: int = 2, dropout: float = 0.0):
        super().__init__()
        if cell not in ("gru", "lstm"):
            raise ConfigError(f"--model.cell {cell}: choose gru or lstm")
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(1, hidden_size, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0)
        self.head = nn.Linear(hidden_size, horizon * n_quantiles)
        self.horizon, self.n_quantiles = horizon, n_quantiles

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, L = x.shape
        seq = x.reshape(B * C, L, 1)  # (B*C, L, 1)
        out, _ = self.rnn(seq)  # (B*C, L, hidden)
        y = self.head(out[:, -1])  # (B*C, H*Q)
        return y.view(B, C, self.horizon, self.n_quantiles)  # (B, C, H, Q)
