"""The interpreter's garbage collector, settled once start-up is over, for the long-running
processes: the listener (`listen_gateway`) and the web workers (ordermgmt/asgi.py)."""

from __future__ import annotations

import gc


def settle_garbage_collector() -> None:
    """Freeze what start-up made, so a full collection walks only what came after.

    `gc.freeze()` moves every object alive now (modules, settings, models, URL patterns: about
    a hundred thousand) to a generation the collector never walks. A full collection stopped
    every thread of the listener for 70-74 ms, 12 ms once frozen (bench/fill_throughput.py),
    and a web worker's for 82 ms, 21 ms once frozen (bench/place_orders.py --runs single);
    pauses timed with gc.callbacks. The thresholds stay Python's: at 10,000 for the youngest
    generation (from 700) a web worker collected less in all, but its pauses grew to 9 ms
    (youngest) and 32 ms (middle), and the targets are tail latencies.
    Call it once, after the process has imported and set up everything it will run.
    """
    gc.collect()  # what start-up left as garbage is freed, not frozen for good
    gc.freeze()
