"""Settings shared by every test."""

from __future__ import annotations

import os

# gRPC's C core logs handshake failures to stderr; the refusal tests cause them on purpose.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
