"""One line per epoch on the driver, from the metrics each epoch passes to ``ray.train.report``.

With workers (``workers ≥ 1``) Ray Train V2 calls a ``ray.train.UserCallback`` in its
controller actor after every report; the callback puts the line on a Ray queue that a
thread of the driver prints from. In local mode (``workers: 0``) the loop runs in this
process and Ray Train calls no callback, so the loop's ``ray.train.report`` is tapped.
Either way the workers' own output can stay in Ray's logs (pipelines.logs).
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

Log = Callable[[str], None]


def epoch_line(metrics: dict[str, Any], epochs: int | None = None) -> str:
    """``epoch   3/40  loss    17.540  KL   6.60  val ELBO   -21.501     17260 rows/s  *``"""
    val = metrics.get("val_elbo")
    val = float("nan") if val is None else val
    total = metrics.get("epochs", epochs)
    best = "  *" if metrics.get("best") else ""
    return (f"epoch {metrics['epoch']:3d}/{total}  loss {metrics['train_loss']:9.3f}  "
            f"KL {metrics['train_kl']:6.2f}  val ELBO {val:9.3f}  "
            f"{metrics.get('rows_per_second', math.nan):8.0f} rows/s{best}")


def tapped(loop: Callable[[dict], None], on_report: Callable[[dict], None]
           ) -> Callable[[dict], None]:
    """Local mode: ``loop`` with every ``ray.train.report`` also handed to ``on_report``."""

    def run(config: dict) -> None:
        import ray.train

        report = ray.train.report

        def report_and_tell(metrics: dict, *args: Any, **kwargs: Any) -> None:
            report(metrics, *args, **kwargs)
            on_report(metrics)

        ray.train.report = report_and_tell
        try:
            loop(config)
        finally:
            ray.train.report = report

    return run


def _callback_class():
    import ray.train

    class EpochLines(ray.train.UserCallback):
        """Runs in the Train controller: rank 0's metrics → a line on the driver's queue."""

        def __init__(self, queue, epochs: int) -> None:
            self.queue, self.epochs = queue, epochs

        def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
            if metrics and "epoch" in metrics[0]:
                self.queue.put(epoch_line(metrics[0], self.epochs))

    return EpochLines


@contextlib.contextmanager
def epoch_lines(log: Log, epochs: int) -> Iterator[Any]:
    """A Train callback whose lines ``log`` prints on the driver while the block runs."""
    from queue import Empty

    from ray.util.queue import Queue

    queue = Queue(actor_options={"num_cpus": 0})
    done = threading.Event()

    def drain() -> None:
        while True:
            try:
                log(queue.get(block=True, timeout=0.5))
            except Empty:
                if done.is_set():
                    return
            except Exception:  # the queue's actor is gone: nothing more will come
                return

    printer = threading.Thread(target=drain, name="vae-epoch-lines", daemon=True)
    printer.start()
    try:
        yield _callback_class()(queue, epochs)
    finally:
        done.set()
        printer.join(10)
        queue.shutdown()
