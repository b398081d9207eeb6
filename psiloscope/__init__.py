"""psiloscope: where, and how much, does an adapted model's representation diverge from its frozen base."""

__version__ = "0.1.0"
