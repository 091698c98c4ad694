"""Tables and lines for people: an evaluation, an epoch, a recovery run's summary."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from parc_surgery.train.loop import EpochRecord

__all__ = ["epoch_line", "eval_table", "summary_table"]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}%"


def eval_table(report) -> Table:
    """One row: the model, its data, top-1, top-k, mean CE, images/s."""
    r = report.result
    table = Table(title=None, show_edge=True)
    for name, justify in (
        ("model", "left"),
        ("data", "left"),
        ("images", "right"),
        ("top-1", "right"),
        (f"top-{r.topk}", "right"),
        ("loss", "right"),
        ("images/s", "right"),
    ):
        table.add_column(name, justify=justify)
    table.add_row(
        escape(f"{report.model} ({report.source})"),
        escape(f"{report.data} [{report.split}] {report.input_size[0]}x{report.input_size[1]}"),
        str(r.images),
        _pct(r.top1),
        _pct(r.top5),
        f"{r.loss:.4f}",
        f"{r.images_per_s:.1f}",
    )
    return table


def summary_table(result) -> Table:
    """original / converted / after warm start / after fine-tune: top-1, top-5, loss."""
    rows = result.summary()
    table = Table(show_edge=True)
    table.add_column("model")
    table.add_column("top-1", justify="right")
    table.add_column("top-5", justify="right")
    table.add_column("loss", justify="right")
    for row in rows:
        table.add_row(
            escape(row["stage"]), _pct(row["top1"]), _pct(row["top5"]), f"{row['loss']:.4f}"
        )
    return table


def epoch_line(record: EpochRecord) -> str:
    """'finetune epoch 3: train loss 0.512, val top-1 97.22% top-5 99.72% loss 0.1010, ...'."""
    v = record.val
    return (
        f"{record.phase} epoch {record.epoch}: train loss {record.train_loss:.4f}, "
        f"val top-1 {v.top1:.2f}% top-{v.topk} {v.top5:.2f}% loss {v.loss:.4f}, "
        f"lr {record.lr:.2e}, {record.seconds:.1f} s"
    )
