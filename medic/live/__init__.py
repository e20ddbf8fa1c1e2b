"""The live monitor of a training run: the feed of new rows (``feed``), the plot (``plot``), the
notebook widget (``widget``) and the monitor that drives them (``session``).

    from medic.live import monitor
    mon = monitor(job)          # a widget in JupyterLab; printed lines and PNGs under papermill
"""

from medic.live.feed import Progress, RunFeed, format_seconds
from medic.live.session import LiveMonitor, monitor

__all__ = ["LiveMonitor", "Progress", "RunFeed", "format_seconds", "monitor"]
