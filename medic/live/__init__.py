"""The live monitor of a training run: the feed of new rows (``feed``), the plot (``plot``), the
notebook widget (``widget``), the monitor that drives them (``session``) and the terminal's
one-line-per-epoch follower that ``medic watch`` prints (``follow``).

    from medic.live import monitor
    mon = monitor(job)          # a widget in JupyterLab; printed lines and PNGs under papermill
"""

from medic.live.feed import Progress, RunFeed, format_seconds
from medic.live.session import LiveMonitor, monitor

__all__ = ["LiveMonitor", "Progress", "RunFeed", "format_seconds", "monitor"]
