"""What a run shows while it works: a tqdm bar over every epoch and one line per mega-batch."""
from __future__ import annotations

import sys


class Progress:
    """A tqdm bar over every epoch of the run, and one printed line per mega-batch."""

    def __init__(self, total: int, desc: str, enabled: bool, done: int = 0):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, initial=done, desc=desc, unit="ep", dynamic_ncols=True,
                            file=sys.stderr, leave=False)

    def step(self, **postfix):
        if self.bar is not None:
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(1)

    def line(self, text: str):
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
