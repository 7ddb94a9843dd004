"""`deepapps nlp explain --ckpt FILE --text "..."`: which tokens pushed the prediction.

Integrated gradients (default) or gradient x input on the word embeddings, summed over the
hidden size per token; printed with ANSI colours and saved as an HTML page.
"""

from __future__ import annotations

import html
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from deepapps.apps.nlp.tokens import encode, load_tokenizer


@dataclass
class Explanation:
    """Tokens of one text, their attributions toward `label`, and the predicted probability."""

    text: str
    tokens: list[str]
    scores: list[float]
    label: str
    probability: float


def attribute(net, ids: torch.Tensor, method: str = "ig", steps: int = 32, target: int | None = None):
    """(per-token attribution (T,), probabilities (K,)) for one sequence `ids` (1, T).

    ig: integrated gradients from an all-zero word-embedding baseline (positions kept);
    gxi: gradient x input at the input itself.
    """
    net.eval()
    mask = torch.ones_like(ids)  # (1, T)
    embed = net.backbone.get_input_embeddings()(ids).detach()  # (1, T, H)
    with torch.no_grad():
        probs = net.head(net.features(None, mask, inputs_embeds=embed)).softmax(-1)[0]  # (K,)
    target = int(probs.argmax()) if target is None else target
    alphas = (torch.arange(steps) + 0.5) / steps if method == "ig" else torch.ones(1)  # midpoint rule
    grads = torch.zeros_like(embed[0])  # (T, H)
    for chunk in alphas.split(32):  # Riemann sum along the straight path, batched
        points = (chunk[:, None, None] * embed).requires_grad_(True)  # (S, T, H)
        logits = net.head(net.features(None, mask.expand(len(chunk), -1), inputs_embeds=points))  # (S, K)
        (grad,) = torch.autograd.grad(logits[:, target].sum(), points)
        grads += grad.sum(0) / len(alphas)
    return (embed[0] * grads).sum(-1), probs  # (T,), (K,)


def explain_texts(task, preprocess: dict, texts: list[str], method: str = "ig", steps: int = 32) -> list[Explanation]:
    tok = load_tokenizer(preprocess["tokenizer_json"], int(preprocess["max_length"]))
    out = []
    for text in texts:
        ids = torch.tensor([encode(tok, [text])[0][0]])  # (1, T)
        scores, probs = attribute(task.net, ids, method, steps)
        top = int(probs.argmax())
        out.append(Explanation(text, [tok.id_to_token(int(i)) or "?" for i in ids[0]], scores.tolist(),
                               task.labels[top], float(probs[top])))
    return out


def _shade(score: float, peak: float) -> tuple[int, int, int, float]:
    strength = min(1.0, abs(score) / peak) if peak > 0 else 0.0
    return (40, 160, 70, strength) if score >= 0 else (200, 50, 50, strength)


def terminal(e: Explanation) -> str:
    """Tokens on coloured backgrounds: green for the predicted label, red against it."""
    peak = max((abs(s) for s in e.scores), default=0.0)
    parts = []
    for token, score in zip(e.tokens, e.scores):
        r, g, b, a = _shade(score, peak)
        mix = [round(255 - a * (255 - c)) for c in (r, g, b)]
        parts.append(f"\x1b[48;2;{mix[0]};{mix[1]};{mix[2]}m\x1b[30m{token}\x1b[0m")
    return f"{e.label} ({e.probability:.3f}): " + " ".join(parts)


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
            f"<body style='font-family: sans-serif'><h3>Token attributions ({method}); green supports the "
            "predicted label, red opposes it</h3>" + "\n".join(blocks) + "</body>\n")


def main(app, argv: list[str]) -> int:
    from deepapps.core.cli import explain_parser
    from deepapps.core.errors import DataError
    from deepapps.core.runtime.io import write_text
    from deepapps.core.training.checkpoints import shipped_model

    parser = explain_parser("nlp", __doc__.splitlines()[0], "HTML file to write", "explain.html")
    parser.add_argument("--text", action="append", required=True, help="text to explain (repeat for several)")
    parser.add_argument("--method", default="ig", choices=["ig", "gxi"], help="integrated gradients or grad x input")
    parser.add_argument("--steps", type=int, default=32, help="integration steps (ig)")
    args = parser.parse_args(argv)
    if any(not t.strip() for t in args.text):
        raise DataError("--text: empty text")
    shipped = shipped_model(app, Path(args.ckpt))
    explanations = explain_texts(shipped.module, shipped.built.preprocess, args.text, args.method, args.steps)
    colour = sys.stdout.isatty()
    for e in explanations:
        print(terminal(e) if colour else f"{e.label} ({e.probability:.3f}): " + " ".join(
            f"{t}[{s:+.3f}]" for t, s in zip(e.tokens, e.scores)))
    write_text(args.out, to_html(explanations, args.method))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0
