"""spotwatch: never miss the EC2 spot two-minute notice.

The package root stays import-light on purpose: ``spotwatch run`` must start
fast and never pay for boto3 while it waits.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
