"""Evaluation on a held-out split: the stratified split itself, per-intent metrics from Rasa's predictions,
and the confusion matrix drawn as an SVG (no plotting library in the app's environment)."""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import LiteralScalarString

from api.studio.nlu_files import Snapshot


def stratified_split(
    snap: Snapshot, *, fraction: float, seed: str
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Per intent, hold out about `fraction` of the examples (at least one when it has two or more)."""
    rng = random.Random(seed)  # noqa: S311 (a reproducible split, not a secret)
    train: dict[str, list[str]] = {}
    test: dict[str, list[str]] = {}
    for intent, examples in snap.intents.items():
        texts = list(dict.fromkeys(e.text for e in examples))
        rng.shuffle(texts)
        held = 0 if len(texts) < 2 else min(len(texts) - 1, max(1, round(len(texts) * fraction)))
        test[intent], train[intent] = texts[:held], texts[held:]
    return train, {k: v for k, v in test.items() if v}


def write_nlu_yaml(path: Path, intents: dict[str, list[str]], snap: Snapshot | None = None) -> None:
    """A Rasa 3.x NLU file with these examples (and the snapshot's synonyms, regexes and lookups)."""
    items = [
        {"intent": intent, "examples": LiteralScalarString("".join(f"- {t}\n" for t in texts))}
        for intent, texts in intents.items()
        if texts
    ]
    for resource in snap.resources if snap else []:
        block = LiteralScalarString("".join(f"- {t}\n" for t in resource.examples))
        items.append({resource.kind: resource.name, "examples": block})
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = YAML()
    writer.width = 4096
    with path.open("w", encoding="utf-8") as handle:
        writer.dump({"version": "3.1", "nlu": items}, handle)


def read_predictions(results_dir: Path) -> list[tuple[str, str, str]]:
    """(text, gold intent, predicted intent) for every test example, from `rasa test nlu` output."""
    rows = []
    for name in ("intent_successes.json", "intent_errors.json"):
        path = results_dir / name
        if path.exists():
            for entry in json.loads(path.read_text(encoding="utf-8")):
                predicted = (entry.get("intent_prediction") or {}).get("name") or "nlu_fallback"
                rows.append((entry.get("text", ""), entry["intent"], predicted))
    return rows


def metrics(rows: list[tuple[str, str, str]]) -> dict:
    """Per-intent precision/recall/F1, macro and weighted F1, accuracy, confusion pairs and the matrix."""
    gold_labels = sorted({g for _, g, _ in rows})
    labels = gold_labels + sorted({p for _, _, p in rows} - set(gold_labels))
    counts: Counter[tuple[str, str]] = Counter((g, p) for _, g, p in rows)
    examples: dict[tuple[str, str], list[str]] = defaultdict(list)
    for text, g, p in rows:
        if g != p and len(examples[(g, p)]) < 3:
            examples[(g, p)].append(text)
    per_intent = {}
    for label in gold_labels:
        tp = counts[(label, label)]
        support = sum(n for (g, _), n in counts.items() if g == label)
        predicted = sum(n for (_, p), n in counts.items() if p == label)
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_intent[label] = {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "support": support,
        }
    total = len(rows)
    macro = sum(m["f1"] for m in per_intent.values()) / len(per_intent) if per_intent else 0.0
    weighted = sum(m["f1"] * m["support"] for m in per_intent.values()) / total if total else 0.0
    confusions: list[dict[str, Any]] = sorted(
        (
            {"intent": g, "predicted": p, "count": n, "examples": examples[(g, p)]}
            for (g, p), n in counts.items()
            if g != p
        ),
        key=lambda c: (-c["count"], c["intent"], c["predicted"]),
    )
    return {
        "accuracy": round(sum(counts[(label, label)] for label in gold_labels) / total, 4) if total else 0.0,
        "macro_f1": round(macro, 4),
        "weighted_f1": round(weighted, 4),
        "test_examples": total,
        "intents": per_intent,
        "confusions": confusions,
        "labels": labels,
        "matrix": [[counts[(g, p)] for p in labels] for g in gold_labels],
    }


def confusion_svg(evaluation: dict, *, title: str) -> str:
    """Rows: the true intent; columns: the predicted one. Cells shaded by the share of the row."""
    labels: list[str] = evaluation["labels"]
    matrix: list[list[int]] = evaluation["matrix"]
    rows = labels[: len(matrix)]
    cell, left, top = 22, 170, 170
    width, height = left + cell * len(labels) + 20, top + cell * len(rows) + 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{width}" height="{height}" fill="#fff"/>',
        f'<text x="8" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
        f'<text x="{left}" y="{height - 12}">columns: predicted intent · rows: true intent · '
        f"macro-F1 {evaluation.get('macro_f1', 0):.3f}</text>",
    ]
    for j, label in enumerate(labels):
        x = left + j * cell + cell / 2
        out.append(f'<text transform="translate({x + 4},{top - 6}) rotate(-60)">{escape(label)}</text>')
    for i, label in enumerate(rows):
        y = top + i * cell
        out.append(f'<text x="{left - 6}" y="{y + cell / 2 + 4}" text-anchor="end">{escape(label)}</text>')
        total = sum(matrix[i]) or 1
        for j, count in enumerate(matrix[i]):
            share = count / total
            if count == 0:
                fill = "#f7f7f7"
            elif i == j:
                fill = f"rgb({int(235 - 190 * share)},{int(245 - 110 * share)},{int(235 - 190 * share)})"
            else:
                fill = f"rgb(250,{int(225 - 170 * share)},{int(215 - 170 * share)})"
            x = left + j * cell
            out.append(
                f'<rect x="{x}" y="{y}" width="{cell - 1}" height="{cell - 1}" fill="{fill}">'
                f"<title>{escape(label)} → {escape(labels[j])}: {count}</title></rect>"
            )
            if count:
                color = "#fff" if share > 0.6 else "#222"
                out.append(
                    f'<text x="{x + cell / 2 - 0.5}" y="{y + cell / 2 + 4}" text-anchor="middle" '
                    f'fill="{color}">{count}</text>'
                )
    out.append("</svg>")
    return "\n".join(out)
