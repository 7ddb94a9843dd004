"""Differentially private training (DP-SGD) through Opacus, for any app whose config has `privacy`.

Off unless `--privacy.epsilon` is given. Then, following Opacus' Lightning example:

1. `prepare` (before the run folder exists): checks the settings; with a pretrained backbone
   only `net.head` trains by default (`fine_tune: auto`), the frozen rest stays in eval mode so
   its batch norms are fixed per-sample maps; the trainable layers Opacus refuses are replaced
   (every BatchNorm, timm's BatchNormAct2d included, by GroupNorm, then `ModuleValidator.fix` for
   LSTM, GRU, attention, ...); one tiny forward/backward proves per-sample gradients work.
2. `DPSGD`, a Lightning callback: the train loader samples each example independently (Poisson,
   `DPDataLoader`); `PrivacyEngine.make_private` attaches per-sample gradient hooks to the
   network (not wrapped: its state dict and ONNX export stay those of the plain network) and
   makes the optimizer clip each example's gradient to `max_grad_norm` and add Gaussian noise
   whose multiplier is calibrated, as `make_private_with_epsilon` does, to spend `epsilon` over
   the planned optimizer steps (max_epochs x batches per epoch; early stopping spends less).
   The accountant's (PRV) spent epsilon is logged each epoch as `privacy/epsilon` and kept in
   checkpoints (so `--resume` goes on counting).
3. `state(trainer)`: the plain summary stored in the post-fit state, the ONNX contract's
   `privacy` section and the model card.

What the guarantee covers: the network's weights, trained on the training split. Not covered:
statistics fitted on the training data without noise (e.g. fraud's medians, IQRs and
vocabularies inside the graph), post-fit calibration and thresholds (validation split), and
baselines trained beside the network.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import asdict, dataclass, field

import pytorch_lightning as L
import torch
from pytorch_lightning.callbacks import Callback
from torch import nn
from torch.nn import functional as F

from deepapps.core.errors import ConfigError

log = logging.getLogger("deepapps")
ACCOUNTANT = "prv"
FINE_TUNE = ("auto", "head", "all")
EPSILON_TOLERANCE = 0.01  # of the noise calibration (Opacus get_noise_multiplier)


@dataclass
class Plan:
    """What `prepare` decided for one fit (plain values: it goes into the post-fit state).

    Attributes:
        epsilon, delta, max_grad_norm: the targets and the clipping norm.
        train_rows: examples in the training split (n); the sample rate is batch_size / n.
        fine_tune: `head` or `all`, as resolved.
        replaced: `layer: Old -> New` for every layer replaced to make the network private.
        frozen: names of the top-level parts of the network that do not train (eval mode).
    """

    epsilon: float
    delta: float
    max_grad_norm: float
    train_rows: int
    fine_tune: str
    replaced: list[str] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)


def settings(cfg):
    """The run's privacy section when privacy is on, else None."""
    privacy = getattr(cfg, "privacy", None)
    return privacy if privacy is not None and privacy.epsilon is not None else None


def prepare(built, cfg, check: bool = True) -> Plan | None:
    """Make `built.net` trainable with DP-SGD (in place), before the module is made.

    Args:
        built: the app's Built (its `net` is replaced by the private-compatible one).
        cfg: the run config; nothing happens without `privacy.epsilon`.
        check: False when rebuilding a checkpoint's network (same layers, no data checks).

    Returns:
        The plan, or None when privacy is off.

    Raises:
        ConfigError: epsilon or delta out of range, settings DP-SGD cannot honour, or a network
            Opacus cannot compute per-sample gradients of.
    """
    privacy = settings(cfg)
    if privacy is None:
        return None
    if check:
        if not (privacy.epsilon > 0 and math.isfinite(privacy.epsilon)):
            raise ConfigError(f"--privacy.epsilon {privacy.epsilon}: must be a positive finite number "
                              "(null turns privacy off)")
        if not privacy.max_grad_norm > 0:
            raise ConfigError(f"--privacy.max_grad_norm {privacy.max_grad_norm}: must be positive")
        _check_trainer(cfg)
    fine_tune = _fine_tune(privacy, cfg, built.net)
    frozen = _freeze(built.net, fine_tune)
    built.net, replaced = private_layers(built.net)
    if not check:
        return Plan(float(privacy.epsilon), float(privacy.delta or 0.0), float(privacy.max_grad_norm), 0, fine_tune,
                    replaced, frozen)
    loader = built.datamodule.train_dataloader()
    _check_sampler(loader)
    n = len(loader.dataset)
    delta = privacy.delta if privacy.delta is not None else 0.1 / n
    if not 0 < delta < 1 / n:
        raise ConfigError(f"--privacy.delta {privacy.delta}: must be in (0, 1/n) = (0, {1 / n:.3g}) for the {n} "
                          "training rows")
    _check_per_sample_gradients(built.net, built.dummy_inputs(2))
    if cfg.trainer.precision == "auto":
        cfg.trainer.precision = "32-true"  # per-sample gradients and noise in float32
    plan = Plan(float(privacy.epsilon), float(delta), float(privacy.max_grad_norm), n, fine_tune, replaced, frozen)
    shown = ", ".join(replaced[:4]) + (f" and {len(replaced) - 4} more" if len(replaced) > 4 else "")
    log.info("DP-SGD: epsilon %g, delta %.3g, clipping norm %g, training %s%s", plan.epsilon, plan.delta,
             plan.max_grad_norm, fine_tune, f"; replaced {shown}" if replaced else "")
    return plan


def _fine_tune(privacy, cfg, net: nn.Module) -> str:
    if privacy.fine_tune not in FINE_TUNE:
        raise ConfigError(f"--privacy.fine_tune {privacy.fine_tune}: choose {', '.join(FINE_TUNE)}")
    fine_tune = privacy.fine_tune
    if fine_tune == "auto":
        pretrained = getattr(getattr(cfg, "model", None), "pretrained", None) is not None
        fine_tune = "head" if pretrained and hasattr(net, "head") else "all"
    if fine_tune == "head" and not isinstance(getattr(net, "head", None), nn.Module):
        raise ConfigError("--privacy.fine_tune head: this network has no `head`; use all")
    return fine_tune


def _freeze(net: nn.Module, fine_tune: str) -> list[str]:
    """`head`: every top-level part but `net.head` stops learning; returns their names."""
    if fine_tune != "head":
        return []
    frozen = [name for name, _ in net.named_children() if name != "head"]
    for name in frozen:
        net.get_submodule(name).requires_grad_(False)
    return frozen


def private_layers(net: nn.Module) -> tuple[nn.Module, list[str]]:
    """Replace the trainable layers DP-SGD cannot train; returns (network, `name: Old -> New` list).

    BatchNorm mixes the examples of a batch: every trainable one (subclasses included, which
    Opacus' validator, matching exact types, would let through) becomes GroupNorm with the same
    affine weights (1 group, i.e. layer norm, over 1-d features; gcd(32, C) groups over maps),
    followed by the activation of timm's BatchNormAct and a copy (residual blocks add the shortcut
    to a norm's output in place, which Opacus' backward hooks refuse). Opacus' own fixers (`ModuleValidator`:
    LSTM, GRU, attention, instance norm) replace the rest, in place (its `fix` pickles a copy,
    which networks holding closures refuse).
    """
    from opacus.utils.module_utils import trainable_modules
    from opacus.validators import ModuleValidator

    replaced = []
    for name, module in list(net.named_modules()):
        trainable = any(p.requires_grad for p in module.parameters())
        if not isinstance(module, nn.modules.batchnorm._BatchNorm) or not trainable:
            continue
        channels = module.num_features
        groups = 1 if isinstance(module, nn.BatchNorm1d) else math.gcd(32, channels)
        norm = nn.GroupNorm(groups, channels, affine=module.affine)
        if module.affine:
            with torch.no_grad():
                norm.weight.copy_(module.weight)
                norm.bias.copy_(module.bias)
        after = [m for m in (getattr(module, "drop", None), getattr(module, "act", None))
                 if isinstance(m, nn.Module) and not isinstance(m, nn.Identity)]
        _replace(net, name, nn.Sequential(norm, *after, Copy()), module)
        replaced.append(f"{name}: {type(module).__name__} -> GroupNorm{''.join('+' + type(m).__name__ for m in after)}")
    for name, module in list(trainable_modules(net)):
        fixer = ModuleValidator.FIXERS.get(type(module))
        if fixer is not None:
            new = fixer(module)
            _replace(net, name, new, module)
            replaced.append(f"{name}: {type(module).__name__} -> {type(new).__name__}")
    for module in net.modules():  # Opacus' backward hooks refuse outputs modified in place (ReLU(inplace=True))
        if getattr(module, "inplace", False) is True:
            module.inplace = False
    errors = ModuleValidator.validate(net, strict=False)
    if errors:
        raise ConfigError(f"--privacy.epsilon: Opacus cannot make this network private ({_first_line(errors[0])})")
    return net, replaced


class Copy(nn.Module):
    """Returns a copy of its input: what follows may modify it in place (`x += shortcut`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


def _replace(net: nn.Module, name: str, new: nn.Module, old: nn.Module) -> None:
    parameter = next(old.parameters(), None)
    new.to(parameter.device if parameter is not None else "cpu")
    parent, _, leaf = name.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, leaf, new)


def _check_trainer(cfg) -> None:
    trainer = cfg.trainer
    if trainer.accumulate_grad_batches != 1:
        raise ConfigError("--trainer.accumulate_grad_batches: must be 1 with --privacy.epsilon (each step is one "
                          "Poisson-sampled batch; raise --data.batch_size instead)")
    if str(trainer.strategy).startswith(("ddp", "fsdp", "deepspeed")):
        raise ConfigError(f"--trainer.strategy {trainer.strategy}: DP-SGD here trains on one device")
    if getattr(cfg.model, "freeze_epochs", 0):  # unfreezing mid-run would add layers the noise was not set for
        log.info("DP-SGD: --model.freeze_epochs %s -> 0 (--privacy.fine_tune sets what trains, from the start)",
                 cfg.model.freeze_epochs)
        cfg.model.freeze_epochs = 0
    if getattr(cfg.data, "gan_oversample", 0):
        raise ConfigError("--data.gan_oversample: the oversampling GAN learns the training frauds without privacy; "
                          "set it to 0 with --privacy.epsilon")


def _check_sampler(loader) -> None:
    """Poisson sampling replaces the loader's sampler: a weighted or custom one would be lost."""
    sampler = loader.sampler
    if not isinstance(sampler, (torch.utils.data.RandomSampler, torch.utils.data.SequentialSampler)):
        raise ConfigError(f"--privacy.epsilon: DP-SGD samples each training example independently (Poisson); the "
                          f"training loader's {type(sampler).__name__} cannot be kept (e.g. --clinical.imbalance loss)")


def _check_per_sample_gradients(net: nn.Module, inputs: tuple) -> None:
    """One forward/backward of a copy with Opacus' hooks: every trainable parameter must get a
    per-sample gradient, else the network cannot be trained privately (a one-line ConfigError)."""
    import copy

    from opacus.grad_sample import GradSampleModule

    probe = copy.deepcopy(net).train()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the full backward hook's note on inputs without gradients
            out = GradSampleModule(probe)(*inputs)
            (out[0] if isinstance(out, (tuple, list)) else out).float().sum().backward()
        missing = [name for name, p in probe.named_parameters()
                   if p.requires_grad and getattr(p, "grad_sample", None) is None]
    except Exception as exc:  # noqa: BLE001 - Opacus and functorch raise many types for layers they cannot handle
        raise ConfigError(f"--privacy.epsilon: Opacus cannot compute per-sample gradients of this network "
                          f"({type(exc).__name__}: {_first_line(exc)})") from None
    if missing:
        raise ConfigError(f"--privacy.epsilon: Opacus computes no per-sample gradient for {', '.join(missing[:3])}")


def _first_line(error: object) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


class WeightedMeanCrossEntropy:
    """Class-weighted cross-entropy averaged over the batch (sum_i w_i l_i / B), not over the
    batch's weights: each example's gradient then depends on that example alone, as DP-SGD's
    per-sample clipping assumes."""

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        return F.cross_entropy(logits, target, weight=weights, reduction="none",
                               label_smoothing=self.label_smoothing).mean()


class DPSGD(Callback):
    """Poisson sampling, per-sample clipping and noise (Opacus) for one Lightning fit of `plan`."""

    def __init__(self, plan: Plan):
        from opacus import PrivacyEngine

        for message in ("Full backward hook is firing", "Optimal order is the largest alpha", "Secure RNG turned off"):
            warnings.filterwarnings("ignore", message=message)  # notes on every run (secure_mode: see the card)
        self.plan = plan
        self.engine = PrivacyEngine(accountant=ACCOUNTANT)
        self.hooks = None
        self.noise_multiplier: float | None = None
        self.sample_rate: float | None = None
        self.steps_planned: int | None = None
        self.spent: float = 0.0
        self.epochs: list[dict] = []
        self.pending_history: list | None = None
        self.loader = None
        self.swapped_loss = False

    @property
    def state_key(self) -> str:
        return "DPSGD"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Before the optimizers and loaders exist: the datamodule's train loader becomes Poisson."""
        if stage != "fit":
            return
        from opacus.data_loader import DPDataLoader

        datamodule = trainer.datamodule
        self.loader = DPDataLoader.from_data_loader(type(datamodule).train_dataloader(datamodule))
        datamodule.train_dataloader = lambda: self.loader  # what the fit loop asks for
        if getattr(pl_module, "class_weights", None) is not None and getattr(pl_module, "custom_loss", "x") is None \
                and not getattr(pl_module, "multilabel", True):
            pl_module.custom_loss = WeightedMeanCrossEntropy(pl_module.optim.label_smoothing)
            self.swapped_loss = True

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The optimizer becomes Opacus' DPOptimizer; the noise is calibrated to the planned steps."""
        from opacus.accountants.utils import get_noise_multiplier

        if trainer.world_size > 1:
            raise ConfigError(f"--privacy.epsilon: DP-SGD here trains on one device, not {trainer.world_size}; "
                              "give --trainer.devices 1")
        plan = self.plan
        self.sample_rate = 1 / len(self.loader)
        self.steps_planned = max(1, int(trainer.estimated_stepping_batches))
        self.noise_multiplier = float(get_noise_multiplier(
            target_epsilon=plan.epsilon, target_delta=plan.delta, sample_rate=self.sample_rate,
            steps=self.steps_planned, accountant=ACCOUNTANT, epsilon_tolerance=EPSILON_TOLERANCE))
        net, was_training = pl_module.net, pl_module.training
        net.train()
        self.hooks, optimizer, _ = self.engine.make_private(
            module=net, optimizer=trainer.optimizers[0], data_loader=self.loader,
            noise_multiplier=self.noise_multiplier, max_grad_norm=plan.max_grad_norm,
            poisson_sampling=False,  # the loader is Poisson already (setup)
            wrap_model=False,  # hooks on the network itself: its state dict and export are unchanged
        )
        net.train(was_training)
        trainer.strategy.optimizers = [optimizer]
        if self.pending_history is not None:  # --resume: the steps already taken count
            self.engine.accountant.history = [tuple(h) for h in self.pending_history]
            self.pending_history = None
        log.info("DP-SGD: noise multiplier %.4f for %d steps at sample rate %.4g", self.noise_multiplier,
                 self.steps_planned, self.sample_rate)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        for name in self.plan.frozen:  # Lightning puts the whole module in train mode each epoch
            part = pl_module.net.get_submodule(name)
            if part.training:
                part.eval()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """After each epoch's training steps (before on_train_epoch_end, so the epoch line shows it)."""
        if trainer.sanity_checking:
            return
        history = self.engine.accountant.history
        self.spent = float(self.engine.accountant.get_epsilon(self.plan.delta)) if history else 0.0
        self.epochs.append({"epoch": int(trainer.current_epoch), "epsilon": self.spent,
                            "steps": int(sum(h[2] for h in history))})
        pl_module.log("privacy/epsilon", self.spent, on_epoch=True, prog_bar=True)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Hooks and per-sample gradients off the network, the datamodule's own loader and loss back."""
        if stage != "fit":
            return
        if self.hooks is not None:
            self.hooks.cleanup()
            self.hooks = None
        trainer.datamodule.__dict__.pop("train_dataloader", None)
        if self.swapped_loss:
            pl_module.custom_loss, self.swapped_loss = None, False

    def state_dict(self) -> dict:
        return {"history": [list(h) for h in self.engine.accountant.history], "epochs": self.epochs}

    def load_state_dict(self, state_dict: dict) -> None:
        self.pending_history = state_dict.get("history")
        self.epochs = list(state_dict.get("epochs", []))

    def summary(self) -> dict:
        """Plain numbers and strings: the post-fit state's, contract's and model card's `privacy`."""
        steps = int(sum(h[2] for h in self.engine.accountant.history))
        spent = float(self.engine.accountant.get_epsilon(self.plan.delta)) if steps else 0.0
        return asdict(self.plan) | {
            "mechanism": "DP-SGD (Opacus; Poisson sampling, per-sample clipping, Gaussian noise)",
            "accountant": ACCOUNTANT, "epsilon_spent": spent, "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate, "steps": steps, "steps_planned": self.steps_planned,
            "per_epoch": [dict(e) for e in self.epochs],
        }


def callbacks(plan: Plan | None) -> list[Callback]:
    """The DP-SGD callback of `plan` (none when privacy is off)."""
    return [DPSGD(plan)] if plan is not None else []


def state(trainer: L.Trainer) -> dict | None:
    """The privacy summary of a fit's Trainer, or None when it trained without privacy."""
    for callback in trainer.callbacks:
        if isinstance(callback, DPSGD):
            return callback.summary()
    return None
