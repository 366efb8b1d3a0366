"""``python -m stepflow_stream``: the same as the ``stepflow-stream`` command."""

import sys

from stepflow_stream.cli.main import main

sys.exit(main())
