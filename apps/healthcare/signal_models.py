"""ECG front end and networks (torch). Everything here exports to ONNX and runs inside the graph.

Front end (`SignalFrontEnd`): FIR band-/high-/low-pass filter (a fixed windowed-sinc kernel
applied as conv1d; torchaudio's `lfilter`/biquads are recursive loops that do not export),
torchaudio's sinc resampling, and per-signal z-normalisation. `DftSpectrogram` is torchaudio's
`Spectrogram` (and `MelSpectrogram` with torchaudio's mel filter bank) written as a conv1d with
windowed DFT kernels, because `torch.stft`'s complex output does not export; the tests check
both against torchaudio.

Networks: `resnet1d` and `fcn` (Wang, Yan & Oates 2017, the strong UCR baselines), or any timm
image backbone on the log-spectrogram (`SpectrogramEncoder`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torchaudio
from torch import nn
from torch.nn import functional as F

SIGNAL_NETS = ("resnet1d", "fcn")


def fir_kernel(sample_rate: float, highpass_hz: float | None, lowpass_hz: float | None, taps: int) -> np.ndarray:
    """Linear-phase FIR (Hamming-windowed sinc): high-pass, low-pass or band-pass, `taps` odd."""
    if taps % 2 == 0 or taps < 3:
        raise ValueError(f"--signal.filter_taps {taps}: an odd number >= 3")
    nyquist = sample_rate / 2
    for name, hz in (("highpass_hz", highpass_hz), ("lowpass_hz", lowpass_hz)):
        if hz is not None and not 0 < hz < nyquist:
            raise ValueError(f"--signal.{name} {hz}: must lie between 0 and the Nyquist frequency {nyquist:g} Hz")
    n = np.arange(taps) - (taps - 1) / 2
    window = np.hamming(taps)

    def lowpass(hz: float) -> np.ndarray:
        h = 2 * hz / sample_rate * np.sinc(2 * hz / sample_rate * n) * window
        return h / h.sum()  # unit gain at DC

    upper = lowpass(lowpass_hz) if lowpass_hz else (n == 0).astype(np.float64)  # identity when no low-pass
    return upper - lowpass(highpass_hz) if highpass_hz else upper  # band = low-pass(high) - low-pass(low)


class SignalFrontEnd(nn.Module):
    """(B, L) raw signal -> (B, L') filtered, resampled, z-normalised signal.

    Args:
        length: samples per input signal.
        fir: FIR kernel (odd length) or None.
        resample_to: samples after torchaudio's sinc resampling, or None.
        normalize: subtract each signal's mean and divide by its standard deviation.
    """

    def __init__(self, length: int, fir: np.ndarray | None = None, resample_to: int | None = None,
                 normalize: bool = True):
        super().__init__()
        self.length, self.resample_to, self.normalize = length, resample_to, normalize
        kernel = torch.as_tensor(fir, dtype=torch.float32).view(1, 1, -1) if fir is not None else None
        self.register_buffer("fir", kernel, persistent=False)

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        x = signal.float()
        if self.fir is not None:  # symmetric kernel: correlation = convolution, `same` length
            x = F.conv1d(x[:, None], self.fir, padding=self.fir.shape[-1] // 2)[:, 0]
        if self.resample_to and self.resample_to != self.length:
            x = torchaudio.functional.resample(x, self.length, self.resample_to)
        if self.normalize:
            x = (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True, unbiased=False) + 1e-6)
        return x


class DftSpectrogram(nn.Module):
    """torchaudio `Spectrogram(n_fft, hop_length, power=2, center=True, pad_mode="reflect")`
    (Hann window), optionally mapped to `n_mels` bands by torchaudio's mel filter bank, in dB.

    (B, L) -> (B, F, T) with F = n_fft // 2 + 1 (or n_mels) and T = L // hop_length + 1.
    """

    def __init__(self, n_fft: int, hop_length: int, sample_rate: float, n_mels: int | None = None):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        window = torch.hann_window(n_fft, dtype=torch.float64)
        k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
        angle = 2 * math.pi * k * torch.arange(n_fft, dtype=torch.float64)[None] / n_fft
        kernels = torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window])  # (2F, n_fft)
        self.register_buffer("kernels", kernels.float()[:, None], persistent=False)
        mel = None
        if n_mels:
            mel = torchaudio.functional.melscale_fbanks(n_fft // 2 + 1, 0.0, sample_rate / 2, n_mels, int(sample_rate))
        self.register_buffer("mel", mel, persistent=False)  # (F, n_mels)

    def power(self, signal: torch.Tensor) -> torch.Tensor:
        """|STFT|^2 (and mel bands): (B, L) -> (B, F, T)."""
        x = F.pad(signal[:, None], (self.n_fft // 2, self.n_fft // 2), mode="reflect")
        parts = F.conv1d(x, self.kernels, stride=self.hop_length)  # (B, 2F, T)
        real, imag = parts.chunk(2, dim=1)
        power = real**2 + imag**2
        if self.mel is not None:
            power = torch.matmul(power.transpose(1, 2), self.mel).transpose(1, 2)
        return power

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        return 10.0 * torch.log10(self.power(signal).clamp(min=1e-10))


class ConvBlock(nn.Module):
    """conv1d (`same` length, also for even kernels) -> batch norm -> ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int, relu: bool = True):
        super().__init__()
        self.pad = ((kernel - 1) // 2, kernel // 2)
        self.conv = nn.Conv1d(c_in, c_out, kernel, bias=False)
        self.bn = nn.BatchNorm1d(c_out)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(F.pad(x, self.pad)))
        return F.relu(x) if self.relu else x


class ResidualBlock(nn.Module):
    """Three conv blocks (kernels 8, 5, 3) plus a 1x1 shortcut, as in Wang et al. (2017)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(ConvBlock(c_in, c_out, 8), ConvBlock(c_out, c_out, 5),
                                  ConvBlock(c_out, c_out, 3, relu=False))
        self.shortcut = ConvBlock(c_in, c_out, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class ResNet1d(nn.Module):
    """(B, 1, L) -> (B, 2 * width): residual blocks of width, 2w, 2w channels, global average pool."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.blocks = nn.Sequential(ResidualBlock(1, width), ResidualBlock(width, 2 * width),
                                    ResidualBlock(2 * width, 2 * width))
        self.num_features = 2 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x).mean(-1)


class FCN(nn.Module):
    """(B, 1, L) -> (B, 2 * width): conv blocks of 2w, 4w, 2w channels (kernels 8, 5, 3), average pool."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.blocks = nn.Sequential(ConvBlock(1, 2 * width, 8), ConvBlock(2 * width, 4 * width, 5),
                                    ConvBlock(4 * width, 2 * width, 3))
        self.num_features = 2 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x).mean(-1)


class SpectrogramEncoder(nn.Module):
    """(B, 1, L) -> features of a 2-D image backbone on the log-spectrogram.

    The dB spectrogram is standardised per signal, resized to image_size x image_size
    (bilinear) and repeated to the backbone's 3 channels.
    """

    def __init__(self, spectrogram: DftSpectrogram, image_backbone: nn.Module, image_size: int):
        super().__init__()
        self.spectrogram, self.image_backbone, self.image_size = spectrogram, image_backbone, image_size
        self.num_features = image_backbone.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = self.spectrogram(x[:, 0])[:, None]  # (B, 1, F, T)
        mean = spec.mean((2, 3), keepdim=True)
        spec = (spec - mean) / (spec.std((2, 3), keepdim=True, unbiased=False) + 1e-6)
        image = F.interpolate(spec, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return self.image_backbone(image.expand(-1, 3, -1, -1))


class SignalClassifier(nn.Module):
    """(B, L) raw float signal -> (B, K) logits: front end, backbone, dropout + linear head."""

    def __init__(self, front_end: SignalFrontEnd, backbone: nn.Module, num_outputs: int, drop_rate: float = 0.0):
        super().__init__()
        self.front_end, self.backbone = front_end, backbone
        self.head = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(backbone.num_features, num_outputs))

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self.front_end(signal)[:, None]))
