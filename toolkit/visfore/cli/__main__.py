"""``python -m visfore.cli``: the same app as the ``visfore`` script (used under torchrun)."""

from visfore.cli import main

main()
