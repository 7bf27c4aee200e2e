"""Progress bars that read right both live and in a saved notebook.

Every long loop of the package uses :data:`tqdm` from here. In a terminal it is tqdm's text bar. In a Jupyter
kernel it is tqdm's widget bar, with one change: the widget is displayed under a display id, and when the bar
closes that display is updated with the bar's final line as its ``text/plain`` part. A live JupyterLab shows the
widget either way; a notebook executed by papermill / nbclient and rendered without the widget's JavaScript
(nbconvert to HTML offline, a static viewer) shows that text part, which otherwise stays the state the bar had
when it opened ("0/453").
"""
from __future__ import annotations

import sys
from functools import lru_cache

from tqdm.auto import tqdm as _auto

__all__ = ["tqdm"]


@lru_cache(maxsize=None)
def notebook_bar() -> type:
    """The widget bar class (module docstring), built on first use: a terminal never imports ipywidgets for it."""
    from tqdm.notebook import tqdm as _notebook

    class NotebookBar(_notebook):
        """tqdm's notebook widget whose saved ``text/plain`` fallback is its final line (module docstring)."""

        def __init__(self, *args, **kwargs):
            show = kwargs.pop("display", True)
            self._handle = None
            super().__init__(*args, display=False, **kwargs)
            if show and not self.disable and self.delay <= 0:
                from IPython.display import display

                self._handle = display(self.container, display_id=True)
                self.displayed = True

        def close(self):
            was_open = not self.disable
            super().close()
            if was_open and self._handle is not None:
                line = self.format_meter(**self.format_dict)
                # a bar that does not stay (leave=False) leaves nothing behind in a saved notebook either
                self._handle.update(final_bundle(self.container, line) if self.leave else {"text/plain": ""},
                                    raw=True)
                self._handle = None

    return NotebookBar


def final_bundle(widget, line: str) -> dict:
    """The widget's display bundle with ``line`` as its ``text/plain`` part (what a static rendering shows)."""
    data = widget._repr_mimebundle_()
    data = data[0] if isinstance(data, tuple) else data
    return {**data, "text/plain": line}


def _widget_mode() -> bool:
    """Whether tqdm.auto chose the notebook widget (it has imported tqdm.notebook for that)."""
    nb = sys.modules.get("tqdm.notebook")
    return nb is not None and issubclass(_auto, nb.tqdm)


tqdm = notebook_bar() if _widget_mode() else _auto
