"""``python -m spot_agent`` is the same as the ``spot-agent`` console script (used when the script
is not on PATH, e.g. by the systemd unit of an interpreter-only install)."""

import sys

from spot_agent.cli import main

sys.exit(main())
