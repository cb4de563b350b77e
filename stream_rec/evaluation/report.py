"""An evaluation's figures as a fixed-width table, a JSON report and PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from stream_rec.evaluation.prequential import Evaluation
from stream_rec.extras import require

#: Table columns: (heading, key in a model's summary, format).
COLUMNS = (
    ("HR@5", "hr@5", "{:.4f}"),
    ("HR@10", "hr@10", "{:.4f}"),
    ("HR@20", "hr@20", "{:.4f}"),
    ("NDCG@10", "ndcg@10", "{:.4f}"),
    ("MRR@10", "mrr@10", "{:.4f}"),
    ("buy HR@10", "purchase_hr@10", "{:.4f}"),
    ("new HR@10", "new_user_hr@10", "{:.4f}"),
    ("ret HR@10", "returning_hr@10", "{:.4f}"),
    ("cov@10", "coverage@10", "{:.4f}"),
    ("nov@10", "novelty@10", "{:.2f}"),
    ("events/s", "events_per_s", "{:,.0f}"),
)
#: Figures drawn side by side in the bar chart.
BAR_FIGURES = ("hr@5", "hr@10", "hr@20", "ndcg@10", "mrr@10", "coverage@10")


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def table(evaluation: Evaluation) -> str:
    """Rows = models, columns = :data:`COLUMNS`, plus a header line with the run's counts.

    Examples
    --------
    >>> ev = Evaluation(models={"popularity": {"hr@5": 0.5, "events_per_s": 1234.0}}, events=10, scored=8,
    ...                 unscored_new_users=2, n_users=2, n_items=5, batch_size=4)
    >>> table(ev).splitlines()[2].split()
    ['popularity', '0.5000', '-', '-', '-', '-', '-', '-', '-', '-', '-', '1,234']
    """
    names = list(evaluation.models)
    width = max([len("model"), *map(len, names)]) + 2
    widths = [max(len(h), 9) for h, _, _ in COLUMNS]
    head = "model".ljust(width) + " ".join(h.rjust(w) for (h, _, _), w in zip(COLUMNS, widths))
    lines = [
        f"{evaluation.events:,} events, {evaluation.scored:,} scored, {evaluation.unscored_new_users:,} first events "
        f"of new users not scored; {evaluation.n_users:,} users, {evaluation.n_items:,} items; "
        f"fused/mf/cooc event by event; baselines in micro-batches of at most {evaluation.batch_size}, "
        "cut where a user repeats",
        head,
    ]
    for name in names:
        fig = evaluation.models[name]
        lines.append(name.ljust(width) + " ".join(_cell(fig.get(key), fmt).rjust(w)
                                                  for (_, key, fmt), w in zip(COLUMNS, widths)))
    return "\n".join(lines)


def write_json(evaluation: Evaluation, path: str | Path) -> None:
    """The whole evaluation (every model, every figure, the curves) as indented JSON."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(evaluation.to_dict(), indent=2, allow_nan=False, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_plots(evaluation: Evaluation, folder: str | Path) -> list[Path]:
    """``hr10_over_time.png`` (one line per model) and ``figures.png`` (grouped bars); returns the paths."""
    matplotlib = require("matplotlib", "plotting an evaluation (--plots)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "hr10_over_time.png", folder / "figures.png"]

    fig, ax = plt.subplots(figsize=(9, 5))
    for name, figures in evaluation.models.items():
        curve = figures["curve"]["hr@10"]
        window = figures["curve"]["window"]
        ax.plot([window * (n + 1) for n in range(len(curve))], curve, label=name, linewidth=1.2)
    ax.set_xlabel("scored events")
    ax.set_ylabel(f"HR@10 per window of {next(iter(evaluation.models.values()))['curve']['window'] if evaluation.models else 0} events")
    ax.set_title("Prequential HR@10 over time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 5))
    names = list(evaluation.models)
    bar = 0.8 / max(len(names), 1)
    for n, name in enumerate(names):
        values = [evaluation.models[name].get(key) or 0.0 for key in BAR_FIGURES]
        ax.bar([x + n * bar for x in range(len(BAR_FIGURES))], values, width=bar, label=name)
    ax.set_xticks([x + bar * (len(names) - 1) / 2 for x in range(len(BAR_FIGURES))], BAR_FIGURES)
    ax.set_title("Final figures")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths
