"""The report as Markdown and self-contained HTML, and the report stage's core
(:func:`write_report`): the notebook's "Final Results" table with our figures,
its conclusions checked against them, and the plots to see why.

Writes ``report.md`` (figures beside it in ``figures/``), ``report.html``
(images embedded), ``results.csv`` and ``curves.csv`` (per-epoch training
curves, for ``dvc plots``).
"""

from __future__ import annotations

import base64
import html
import logging
from pathlib import Path

import pandas as pd

from mnist_cnn.io import atomic_dir, write_json, write_text
from mnist_cnn.params import Task
from mnist_cnn.report import figures
from mnist_cnn.report.collect import best_task_predictions, collect
from mnist_cnn.report.findings import Finding, caveats, check_all, notebook_inside_runs

log = logging.getLogger(__name__)

FIGURES = {  # file name: caption
    "accuracy.png": "Test accuracy per task, ours beside the notebook's",
    "curves.png": "Training curves",
    "epoch_time.png": "Seconds per epoch",
    "confusion.png": "Confusion matrix of the best task",
    "misclassified.png": "Misclassified test digits of the best task",
}


# --- the results table --------------------------------------------------------


# Cells of the results table, shared with the flow's results artifact (flows/ui.py).
def number(value, digits=4) -> str:
    return "–" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def with_spread(mean, std, spread: bool) -> str:
    return f"{mean:.4f} ± {std:.4f}" if spread else f"{mean:.4f}"


def difference(ours, notebook) -> str:
    return "–" if pd.isna(notebook) else f"{ours - notebook:+.4f}"


def results_table(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the notebook's "Final Results" table, with ours."""
    spread = bool((df["seeds"] > 1).any())
    header = ["task", "layers", "params", "epochs", "optimizer", "test acc", "notebook acc",
              "Δ acc", "test loss", "notebook loss", "s/epoch"]
    if spread:
        header.insert(8, "notebook in our range")
    rows = []
    for task, r in df.iterrows():
        same = pd.isna(r.nb_params) or r.params == r.nb_params
        row = [task, r.layers,
               f"{r.params:,}" + ("" if same else f" (notebook {int(r.nb_params):,})"),
               str(r.epochs), r.optimizer, with_spread(r.accuracy, r.accuracy_std, spread),
               number(r.nb_accuracy), difference(r.accuracy, r.nb_accuracy),
               with_spread(r.loss, r.loss_std, spread), number(r.nb_loss),
               f"{r.s_per_epoch:.1f}"]
        if spread:
            inside = notebook_inside_runs(r)
            row.insert(8, "–" if inside is None else "yes" if inside else "no")
        rows.append(row)
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# --- the document ----------------------------------------------------------------


def intro(df: pd.DataFrame, seed: int) -> str:
    n = int(df["seeds"].max())
    runs = (f"one run per task (seed {seed})" if n == 1 else
            f"mean ± standard deviation over {n} seeds per task ({seed}, {seed + 1}, ...)")
    return (f"Trained on {int(df['train_images'].max()):,} images; {runs}. The notebook's "
            "figures are single runs; Δ is ours minus theirs. s/epoch is the median epoch "
            "time on the machine that ran the pipeline.")


def environment(df: pd.DataFrame) -> str:
    """The versions the models were trained with (as each task's config.json has them)."""
    envs = {tuple(sorted(e.items())) for e in df["environment"] if e}
    if not envs:
        return "Environment: not recorded."
    text = "; ".join(", ".join(f"{k} {v}" for k, v in env) for env in sorted(envs))
    return f"Environment: {text}" + (" (the tasks differ)" if len(envs) > 1 else "") + "."


def render_markdown(df: pd.DataFrame, found: list[Finding], seed: int) -> str:
    notes = [f"> **Read with care.** {note}" for note in caveats(df)]
    parts = ["# MNIST CNN study: results", "", intro(df, seed), "", *notes,
             *([""] if notes else []), environment(df), "", "## Final results", "",
             markdown_table(*results_table(df)), "", "## The notebook's conclusions, checked",
             ""]
    parts += [f"- **{f.claim}**: {f.verdict}. {f.text}" for f in found]
    parts += ["", "## Figures", ""]
    parts += [f"![{caption}](figures/{name})\n" for name, caption in FIGURES.items()]
    return "\n".join(parts)


def render_html(df: pd.DataFrame, found: list[Finding], seed: int,
                images: dict[str, bytes]) -> str:
    items = "".join(f"<li><b>{html.escape(f.claim)}</b>: <i>{f.verdict}</i>. "
                    f"{html.escape(f.text)}</li>" for f in found)
    figs = "".join(
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,'
        f'{base64.b64encode(images[name]).decode()}"><figcaption>{html.escape(caption)}'
        "</figcaption></figure>" for name, caption in FIGURES.items())
    style = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;"
             "padding:0 1em;color:#222}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}"
             "th{background:#f3f3f3}img{max-width:100%}figure{margin:1.5em 0}"
             ".caveat{background:#fff4e5;border-left:4px solid #f0a030;padding:6px 10px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>MNIST CNN study: results</title><style>{style}</style></head><body>"
            f"<h1>MNIST CNN study: results</h1><p>{html.escape(intro(df, seed))}</p>"
            + "".join(f"<p class='caveat'><b>Read with care.</b> {html.escape(note)}</p>"
                      for note in caveats(df))
            + f"<p>{html.escape(environment(df))}</p>"
            f"<h2>Final results</h2>{html_table(*results_table(df))}"
            f"<h2>The notebook's conclusions, checked</h2><ul>{items}</ul>"
            f"<h2>Figures</h2>{figs}</body></html>")


def make_figures(df: pd.DataFrame, curve: pd.DataFrame, evals: Path,
                 data: Path) -> dict[str, bytes]:
    best, x, labels, predicted = best_task_predictions(df, evals, data)
    return {
        "accuracy.png": figures.accuracy(df),
        "curves.png": figures.training_curves(curve),
        "epoch_time.png": figures.epoch_time(df),
        "confusion.png": figures.confusion(labels, predicted, f"{best}: confusion matrix"),
        "misclassified.png": figures.misclassified(x, labels, predicted, best),
    }


def summary_metrics(df: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Every task's test accuracy and loss (mean over seeds; with several
    seeds their spread too), in one small file: the study's DVC metric, so
    `dvc exp show` columns read ``task1.acc``."""
    spread = bool((df["seeds"] > 1).any())
    out = {}
    for task, r in df.iterrows():
        out[task] = {"acc": r.accuracy, "loss": r.loss}
        if spread:
            out[task].update(acc_std=r.accuracy_std, loss_std=r.loss_std)
    return out


def write_report(tasks: dict[str, Task], seeds: list[int], models: Path, evals: Path,
                 data: Path, out: Path, metrics: Path) -> pd.DataFrame:
    """Collect every task's results, check the notebook's conclusions, draw the
    figures and write the report folder ``out`` atomically; the study's
    summary metrics go to ``metrics``."""
    df, curve = collect(tasks, seeds, models, evals)
    found = check_all(df, curve)
    images = make_figures(df, curve, evals, data)
    with atomic_dir(out) as staging:
        (staging / "figures").mkdir()
        for name, png in images.items():
            (staging / "figures" / name).write_bytes(png)
        write_text(staging / "report.md", render_markdown(df, found, seeds[0]))
        write_text(staging / "report.html", render_html(df, found, seeds[0], images))
        df.drop(columns="environment").to_csv(staging / "results.csv")
        curve.to_csv(staging / "curves.csv", index=False)
    write_json(metrics, summary_metrics(df))
    log.info("wrote %s, %s and %s", out / "report.md", out / "report.html", metrics)
    return df
