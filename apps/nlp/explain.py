"""`deepapps nlp explain (--ckpt FILE | --model FILE.onnx) TEXT... --out DIR`: which tokens pushed the prediction.

Captum LayerIntegratedGradients over the word-embedding layer, of the explained class's logit,
from a baseline sequence of the same length: the special tokens ([CLS], [SEP], ...) kept and
every other token replaced by the padding token. Per token the attribution is summed over the
hidden size. Writes `explain.html` (tokens highlighted: green supports the class, red opposes
it), `attributions.json` (tokens and scores per text) and `manifest.json`; prints each text's
tokens with their scores (ANSI colours on a terminal).

Each INPUT is a text, or a `.txt` file holding one text per line.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from deepapps.apps.nlp.tokens import load_tokenizer
from deepapps.core.errors import ConfigError, DataError
from deepapps.core.training.explain import (
    Explained,
    Explainer,
    ExplainSession,
    decide,
    explained_index,
    run_explain,
)

METHODS = {"integrated_gradients": "Captum LayerIntegratedGradients over the word embeddings, from a "
                                   "[PAD] sequence with the special tokens kept"}
BASELINE = "same length, special tokens kept, every other token the padding token"


@dataclass
class Explanation:
    """Tokens of one text, their attributions toward `label`, and the predicted probability."""

    text: str
    tokens: list[str]
    scores: list[float]
    label: str
    probability: float
    predicted: str = ""
    delta: float = 0.0


def baseline_ids(ids: torch.Tensor, special: torch.Tensor, pad_id: int) -> torch.Tensor:
    """(1, T): `ids` with every non-special token replaced by `pad_id`."""
    return torch.where(special.bool(), ids, torch.full_like(ids, pad_id))


def attribute(net, ids: torch.Tensor, baseline: torch.Tensor, steps: int = 32,
              target: int | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(per-token attribution (T,), probabilities (K,), convergence delta) for one sequence `ids` (1, T).

    LayerIntegratedGradients on the word embeddings from `baseline` (1, T): the attributions add up
    to logit(ids) - logit(baseline) of the target class, up to the delta.
    """
    from captum.attr import LayerIntegratedGradients

    net.eval()
    mask = torch.ones_like(ids)  # (1, T)
    with torch.no_grad():
        probs = net(ids, mask).softmax(-1)[0]  # (K,)
    target = int(probs.argmax()) if target is None else target
    lig = LayerIntegratedGradients(lambda i, m: net(i, m), net.backbone.get_input_embeddings())
    with torch.enable_grad():
        attr, delta = lig.attribute(ids, baselines=baseline, additional_forward_args=(mask,), target=target,
                                    n_steps=steps, internal_batch_size=32, return_convergence_delta=True)
    return attr[0].sum(-1).detach(), probs, float(delta.abs().max())  # (T,), (K,)


def read_texts(inputs: list[str]) -> list[str]:
    """Each INPUT as a text, or a .txt file's non-empty lines."""
    texts = []
    for item in inputs:
        path = Path(item)
        if path.suffix.lower() == ".txt" and len(item) < 4096:
            if not path.is_file():
                raise DataError(f"{item}: no such file")
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise DataError(f"{item}: not a readable UTF-8 text file ({type(exc).__name__})") from None
            texts += [line for line in lines if line.strip()]
        elif not item.strip():
            raise DataError("INPUT: empty text")
        else:
            texts.append(item)
    if not texts:
        raise DataError("no texts to explain")
    return texts


def _shade(score: float, peak: float) -> tuple[int, int, int, float]:
    strength = min(1.0, abs(score) / peak) if peak > 0 else 0.0
    return (40, 160, 70, strength) if score >= 0 else (200, 50, 50, strength)


def terminal(e: Explanation) -> str:
    """Tokens on coloured backgrounds: green for the explained label, red against it."""
    peak = max((abs(s) for s in e.scores), default=0.0)
    parts = []
    for token, score in zip(e.tokens, e.scores):
        r, g, b, a = _shade(score, peak)
        mix = [round(255 - a * (255 - c)) for c in (r, g, b)]
        parts.append(f"\x1b[48;2;{mix[0]};{mix[1]};{mix[2]}m\x1b[30m{token}\x1b[0m")
    return f"{e.label} ({e.probability:.3f}): " + " ".join(parts)


def plain(e: Explanation) -> str:
    return f"{e.label} ({e.probability:.3f}): " + " ".join(f"{t}[{s:+.3f}]" for t, s in zip(e.tokens, e.scores))


def to_html(explanations: list[Explanation], method: str) -> str:
    blocks = []
    for e in explanations:
        peak = max((abs(s) for s in e.scores), default=0.0)
        spans = []
        for token, score in zip(e.tokens, e.scores):
            r, g, b, a = _shade(score, peak)
            spans.append(f'<span title="{score:+.4f}" style="background: rgba({r},{g},{b},{a:.2f}); '
                         f'padding: 2px 3px; margin: 1px; border-radius: 3px">{html.escape(token)}</span>')
        blocks.append(f"<p><b>{html.escape(e.label)}</b> ({e.probability:.3f})<br>{' '.join(spans)}</p>")
    return ("<!doctype html><meta charset='utf-8'><title>deepapps nlp explain</title>"
            f"<body style='font-family: sans-serif'><h3>Token attributions ({html.escape(method)}); green supports "
            "the explained label, red opposes it</h3>" + "\n".join(blocks) + "</body>\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=32, help="integration steps (default 32)")


def explain(session: ExplainSession, inputs: list[str]) -> Iterable[Explained]:
    if session.args.steps < 1:
        raise ConfigError("--steps must be at least 1")
    texts = read_texts(inputs)
    shipped = session.shipped
    pre = shipped.built.preprocess
    tok = load_tokenizer(pre["tokenizer_json"], int(pre["max_length"]))
    pad_id = int(pre.get("pad_id", 0))
    net, served = shipped.module.net.eval(), shipped.served.module.eval()
    decide_label, labels = decide(shipped.served.kind), session.labels
    session.baseline = BASELINE
    colour = sys.stdout.isatty()
    explanations = []
    for text in texts:
        enc = tok.encode(text)
        ids = torch.tensor([enc.ids])  # (1, T)
        mask = torch.ones_like(ids)
        with torch.no_grad():
            probs = served(ids, mask)  # (1, K), as the ONNX file computes
        label = decide_label(probs[0].numpy())
        k = session.target_index(explained_index(labels, label, probs[0].numpy()))
        scores, _, delta = attribute(net, ids, baseline_ids(ids, torch.tensor([enc.special_tokens_mask]), pad_id),
                                     session.args.steps, k)
        e = Explanation(text, [tok.id_to_token(int(i)) or "?" for i in ids[0]], scores.tolist(), labels[k],
                        float(probs[0, k]), label, delta)
        explanations.append(e)
        print(terminal(e) if colour else plain(e), file=sys.stderr)
        yield Explained(text, label, labels[k], ["explain.html", "attributions.json"], delta,
                        session.agrees_with_onnx((ids, mask), probs, decide_label))
    session.write_text("explain.html", to_html(explanations, session.method))
    session.write_text("attributions.json", json.dumps([asdict(e) for e in explanations], indent=2) + "\n")


def main(app, argv: list[str]) -> int:
    explainer = Explainer("per-token attributions from an nlp checkpoint (Captum layer integrated gradients): "
                          "HTML + JSON", "texts, or .txt files with one text per line", lambda shipped: METHODS,
                          explain, add_arguments, tuple(METHODS))
    return run_explain(app, argv, explainer)
