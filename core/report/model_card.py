"""Model cards: a Markdown summary of the data, model, metrics and export of a run (no torch)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from deepapps.core.runtime.io import write_text

SPLIT_ORDER = ("train", "val", "test", "test_torch")
SPLIT_NAMES = {"val": "validation", "test": "test", "test_torch": "test (PyTorch)", "train": "train"}
HEADLINE_METRICS = ("accuracy", "macro_f1", "auroc")


def render_model_card(info: dict) -> str:
    """Render a model card as Markdown; every key of `info` is optional.

    Args:
        info: keys `app`, `title`, `created`, `data`, `model`, `config_yaml`,
            `metrics`, `export`, `plots`, `onnx`, `intended_use`, `limitations`, and
            `sections`: an app's own (heading, Markdown body) pairs, placed after the metrics.

    Returns:
        The Markdown text, ending with a newline.
    """
    sections = [
        _title(info),
        _data_section(info.get("data") or {}),
        _model_section(info.get("model") or {}),
        _config_section(info.get("config_yaml")),
        _metrics_section(info.get("metrics") or {}),
        *(f"## {heading}\n\n{body.strip()}" for heading, body in info.get("sections") or []),
        _plots_section(info.get("plots") or []),
        _export_section(info.get("export") or {}, info.get("onnx")),
        _intended_use_section(info),
        _limitations_section(info),
    ]
    return "\n\n".join(s for s in sections if s).rstrip() + "\n"


def write_model_card(path: Path, info: dict) -> Path:
    """Render the model card for `info` and write it atomically to `path`."""
    return write_text(path, render_model_card(info))


AUTO_HEADING = "Auto choices"


def auto_section(choices: list[dict]) -> tuple[str, str]:
    """(heading, Markdown body) of the config fields left at `auto` and what the data made of
    them ({field, value, reason} each; core.training.auto); config.yaml holds the same values."""
    rows = [[f"`{c.get('field')}`", f"`{_fmt_value(c.get('value'))}`", str(c.get("reason", ""))] for c in choices]
    text = ("These fields were `auto`: chosen from the data at the start of the fit. config.yaml holds the "
            "values chosen, so `fit --config config.yaml` trains the same recipe; give a field to override it.")
    return AUTO_HEADING, text + "\n\n" + _table(["field", "chosen", "why"], rows)


PRIVACY_HEADING = "Differential privacy"


def privacy_section(privacy: dict) -> tuple[str, str]:
    """(heading, Markdown body) of a DP-SGD fit (the post-fit state's `privacy`, written by
    core.training.privacy): the budget spent, delta, clipping, noise and what it covers."""
    replaced = privacy.get("replaced") or []
    kinds: dict[str, int] = {}
    for line in replaced:
        change = line.split(": ", 1)[-1]
        kinds[change] = kinds.get(change, 0) + 1
    layers = "; ".join(f"{n} x {change}" for change, n in kinds.items()) or "none"
    names = ", ".join(f"`{line.split(':', 1)[0]}`" for line in replaced[:12]) + (", ..." if len(replaced) > 12 else "")
    trained = ("the head only (" + ", ".join(f"`{n}`" for n in privacy.get("frozen") or []) + " frozen, in eval mode)"
               if privacy.get("fine_tune") == "head" else "every layer")
    rows = [
        ["epsilon spent", _fmt_value(privacy.get("epsilon_spent"))],
        ["epsilon target", _fmt_value(privacy.get("epsilon"))],
        ["delta", f"{privacy.get('delta', 0):.3g}"],
        ["clipping norm (per sample)", _fmt_value(privacy.get("max_grad_norm"))],
        ["noise multiplier", _fmt_value(privacy.get("noise_multiplier"))],
        ["sample rate (Poisson)", _fmt_value(privacy.get("sample_rate"))],
        ["steps (planned)", f"{privacy.get('steps')} ({privacy.get('steps_planned')})"],
        ["training rows (n)", _fmt_int(privacy.get("train_rows"))],
        ["accountant", str(privacy.get("accountant", ""))],
        ["trained", trained],
        ["layers replaced", layers + (f": {names}" if replaced else "")],
    ]
    text = (f"Trained with {privacy.get('mechanism', 'DP-SGD')}: ({_fmt_value(privacy.get('epsilon_spent'))}, "
            f"{privacy.get('delta', 0):.3g})-differentially private with respect to the training rows. The guarantee "
            "covers the network's weights; statistics fitted on the training data without noise (normalisation, "
            "vocabularies), the post-fit calibration and threshold (validation split) and any baselines are not "
            "covered. Noise comes from torch's pseudo-random generator (Opacus secure_mode off).")
    return PRIVACY_HEADING, text + "\n\n" + _table(["", "value"], rows)


SEARCH_HEADING = "Hyperparameter search"


def search_section(search: dict) -> tuple[str, str]:
    """(heading, Markdown body) of the hyperparameter search that chose a refit's config (the
    `search` section of its metrics.json, written by `deepapps <app> tune --tune.refit`)."""
    states = search.get("states") or {}
    counts = ", ".join(f"{n} {state.lower()}" for state, n in states.items() if n) or "none finished"
    sampler = {"tpe": "TPE (Bayesian)", "grid": "grid", "random": "random"}.get(search.get("sampler"), search.get("sampler"))
    goal = "maximising" if search.get("direction") == "maximize" else "minimising"
    best = search.get("best_value")
    lines = [
        f"Chosen by `deepapps {search.get('app', '')} tune`: {search.get('trials', 0)} trials ({counts}) of a "
        f"{sampler} search, pruner {search.get('pruner', 'none')}, {goal} `{search.get('objective')}` on the "
        "validation split; the test split was not read during the search. "
        + (f"Best trial #{search.get('best_trial')}: {_fmt_metric(best)}." if best is not None else "No trial completed."),
        "",
        f"Study `{search.get('study')}` in `{search.get('storage')}`; trials in `{search.get('trials_csv', 'trials.csv')}`.",
        "",
    ]
    if privacy := search.get("privacy"):
        lines += [
            f"**Privacy of the search:** each of the {privacy.get('trials_trained')} trials trained with DP-SGD at "
            f"epsilon {privacy.get('epsilon_per_trial')} on the same training data, and the best was chosen by a "
            "validation metric. The guarantee in the Differential privacy section covers one training run; the "
            "search as a whole spends more (budgets compose over trials, and the choice of the best trial leaks "
            "too: Papernot & Steinke, ICLR 2022). Hold the epsilon of the whole search, not of one trial, against "
            "the data owner's budget.",
            "",
        ]
    best_params = search.get("best_params") or {}
    rows = [[f"`{name}`", _fmt_space(spec), _fmt_value(best_params.get(name))]
            for name, spec in (search.get("space") or {}).items()]
    lines.append(_table(["field", "searched over", "best"], rows))
    return SEARCH_HEADING, "\n".join(lines)


def _fmt_space(spec: dict) -> str:
    if spec.get("type") == "categorical":
        return "one of " + ", ".join(str(c) for c in spec.get("choices", []))
    scale = ", log" if spec.get("log") else ""
    step = f", step {spec['step']}" if spec.get("step") is not None else ""
    return f"{spec.get('type')} [{spec.get('low')}, {spec.get('high')}]{scale}{step}"


def _title(info: dict) -> str:
    """The heading, the creation line and a one-line summary."""
    app = info.get("app")
    title = info.get("title") or (f"{app} model card" if app else "Model card")
    lines = [f"# {title}"]
    details = [f"App: `{app}`" if app else "", f"Created: {info['created']}" if info.get("created") else ""]
    if any(details):
        lines += ["", " · ".join(d for d in details if d)]
    lines += ["", _summary(info)]
    return "\n".join(lines)


def _summary(info: dict) -> str:
    """One sentence: what the model is, what it predicts and its headline score."""
    model = info.get("model") or {}
    labels = (info.get("data") or {}).get("labels") or []
    what = f"A classifier built on `{model['backbone']}`" if model.get("backbone") else "A classifier"
    if labels:
        what += f" for {len(labels)} labels ({_join(labels, limit=8)})"
    split, scores = _headline_split(info.get("metrics") or {})
    headline = [f"{name} {_fmt_metric(scores[name])}" for name in HEADLINE_METRICS if name in scores]
    if headline:
        what += f"; {SPLIT_NAMES.get(split, split)} " + ", ".join(headline)
    return f"**Summary:** {what}."


def _data_section(data: dict) -> str:
    """Data source, labels, split sizes, class balance and notes."""
    if not data:
        return ""
    lines = ["## Data"]
    if data.get("source"):
        lines += ["", f"Source: `{data['source']}`"]
    if data.get("labels"):
        lines += ["", f"Labels ({len(data['labels'])}): {_join(data['labels'])}"]
    if data.get("sizes"):
        sizes = _ordered(data["sizes"])
        lines += ["", _table(["split", "items"], [[split, _fmt_int(sizes[split])] for split in sizes])]
    if data.get("class_counts"):
        lines += ["", "Class balance:", "", _class_balance_table(data["class_counts"], data.get("labels") or [])]
    if data.get("notes"):
        lines += ["", *(f"- {note}" for note in data["notes"])]
    return "\n".join(lines)


def _class_balance_table(class_counts: dict, labels: list[str]) -> str:
    """A label × split table of counts with each label's share of its split."""
    counts = _ordered(class_counts)
    names = list(labels) + [n for split in counts.values() for n in split if n not in labels]
    names = list(dict.fromkeys(names))
    rows = []
    for name in names:
        rows.append([name] + [_count_share(counts[split].get(name, 0), counts[split]) for split in counts])
    return _table(["label", *counts], rows)


def _count_share(count: int, split_counts: dict) -> str:
    total = sum(split_counts.values())
    share = f" ({100 * count / total:.1f}%)" if total else ""
    return f"{_fmt_int(count)}{share}"


def _model_section(model: dict) -> str:
    """Backbone, pretrained weights and parameter count."""
    if not model:
        return ""
    rows = []
    if model.get("backbone"):
        rows.append(["backbone", f"`{model['backbone']}`"])
    if model.get("weights"):
        rows.append(["pretrained weights", str(model["weights"])])
    if model.get("parameters") is not None:
        rows.append(["parameters", _fmt_params(int(model["parameters"]))])
    known = {"backbone", "weights", "parameters"}
    rows += [[key, _fmt_value(value)] for key, value in model.items() if key not in known]
    return "## Model\n\n" + _table(["field", "value"], rows) if rows else ""


def _config_section(config_yaml: str | None) -> str:
    """The full training configuration as a fenced YAML block."""
    if not config_yaml:
        return ""
    return f"## Training config\n\n```yaml\n{config_yaml.rstrip()}\n```"


def _metrics_section(metrics: dict) -> str:
    """One table: a row per metric, a column per split, 4 decimals."""
    splits = {s: m for s, m in _ordered(metrics).items() if isinstance(m, dict) and m}
    if not splits:
        return ""
    names = list(dict.fromkeys(n for m in splits.values() for n, v in m.items() if _is_scalar(v)))
    rows = [[name] + [_fmt_metric(splits[s].get(name)) for s in splits] for name in names]
    header = ["metric", *(SPLIT_NAMES.get(s, s) for s in splits)]
    return "## Metrics\n\n" + _table(header, rows)


def _plots_section(plots: list[str]) -> str:
    """Each plot embedded as an image, captioned by its file name."""
    if not plots:
        return ""
    images = [f"![{Path(p).stem.replace('_', ' ')}]({Path(p).as_posix()})" for p in plots]
    return "## Plots\n\n" + "\n\n".join(images)


def _export_section(export: dict, onnx: str | None) -> str:
    """The ONNX file and the export settings and parity check."""
    if not export and not onnx:
        return ""
    lines = ["## Export"]
    if onnx:
        lines += ["", f"ONNX model: [`{onnx}`]({Path(onnx).as_posix()})"]
    if export:
        lines += ["", _table(["setting", "value"], [[k, _fmt_value(v)] for k, v in export.items()])]
    return "\n".join(lines)


def _intended_use_section(info: dict) -> str:
    """The given intended use, or a generic statement."""
    text = info.get("intended_use")
    if not text:
        labels = (info.get("data") or {}).get("labels") or []
        scope = f"one of {len(labels)} labels ({_join(labels, limit=8)})" if labels else "its training labels"
        text = (
            f"Assigning inputs similar to the training data to {scope}. "
            "Use it as a decision aid that a person reviews, not as the sole basis for consequential decisions."
        )
    return f"## Intended use\n\n{text}"


def _limitations_section(info: dict) -> str:
    """The given limitations, or generic ones naming the held-out split."""
    items = info.get("limitations") or _default_limitations(info)
    return "## Limitations\n\n" + "\n".join(f"- {item}" for item in items)


def _default_limitations(info: dict) -> list[str]:
    split, _ = _headline_split(info.get("metrics") or {})
    source = (info.get("data") or {}).get("source")
    where = f"the held-out {SPLIT_NAMES.get(split, split)} split" if split else "a held-out split"
    if source:
        where += f" of `{source}`"
    return [
        f"Metrics come from {where}; expect lower scores on data from other sources, devices or populations.",
        "The model only knows the labels it was trained on: every input gets one of them, "
        "including inputs that belong to none.",
        "Predicted probabilities are not calibrated by default; check calibration before using them as risks.",
        "Biases and gaps in the training data carry over to the predictions.",
    ]


def _headline_split(metrics: dict) -> tuple[str | None, dict]:
    """The split whose scores best describe the model: test, else validation, else any."""
    for split in ("test", "val", *metrics):
        if isinstance(metrics.get(split), dict) and metrics[split]:
            return split, metrics[split]
    return None, {}


def _ordered(by_split: dict) -> dict:
    """The dict with known splits first (train, val, test, test_torch), then the rest."""
    known = [s for s in SPLIT_ORDER if s in by_split]
    return {s: by_split[s] for s in [*known, *(s for s in by_split if s not in known)]}


def _table(header: list[str], rows: Iterable[list[str]]) -> str:
    """A Markdown pipe table."""
    lines = [_row(header), _row(["---"] * len(header))]
    lines += [_row(r) for r in rows]
    return "\n".join(lines)


def _row(cells: list[object]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, (int, float, str))


def _fmt_metric(value: object) -> str:
    """Floats with 4 decimals, ints as-is, None as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def _fmt_value(value: object) -> str:
    """A compact rendering for settings: floats to 4 significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return "—" if value is None else str(value)


def _fmt_int(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def _fmt_params(n: int) -> str:
    return f"{n:,} ({n / 1e6:.1f} M)" if n >= 100_000 else f"{n:,}"


def _join(items: Iterable[object], limit: int | None = None) -> str:
    """Comma-join items, cutting long lists to `limit` with a count of the rest."""
    items = [str(i) for i in items]
    if limit is not None and len(items) > limit:
        return ", ".join(items[:limit]) + f", … (+{len(items) - limit} more)"
    return ", ".join(items)
