"""``python -m peer_grpc``: the same as the ``peer-grpc`` command."""

import sys

from peer_grpc.cli.main import main

sys.exit(main())
