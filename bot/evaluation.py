"""Turns Rasa's cross-validation report into the markdown table the README shows.

`python -m bot.evaluation var/nlu-eval/intent_report.json` prints per-intent precision, recall, F1 and
support, the macro averages, and the most frequent confusion pairs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SUMMARY_KEYS = {"accuracy", "macro avg", "weighted avg", "micro avg"}


def render(report: dict, top_pairs: int = 10) -> str:
    intents = sorted(k for k in report if k not in SUMMARY_KEYS)
    lines = ["| intent | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for name in intents:
        row = report[name]
        lines.append(
            f"| {name} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1-score']:.3f} | {row['support']} |"
        )
    macro = report.get("macro avg")
    if macro:
        lines.append(
            f"| **macro avg** | **{macro['precision']:.3f}** | **{macro['recall']:.3f}** "
            f"| **{macro['f1-score']:.3f}** | {macro['support']} |"
        )
    if "accuracy" in report:
        lines.append(f"\nAccuracy: {report['accuracy']:.3f}")
    pairs = sorted(
        (
            (count, name, other)
            for name in intents
            for other, count in (report[name].get("confused_with") or {}).items()
        ),
        reverse=True,
    )[:top_pairs]
    if pairs:
        lines += ["", "Most frequent confusions (true intent → predicted, count):", ""]
        lines += [f"- {name} → {other}: {count}" for count, name, other in pairs]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    path = Path(argv[1] if len(argv) > 1 else "var/nlu-eval/intent_report.json")
    print(render(json.loads(path.read_text(encoding="utf-8"))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
