"""gRPC settings both sides must agree on: message size, keepalive, target-name override.

Keepalive on the client is only accepted by a server that allows pings at least that often;
both sides read these numbers from here so a healthy agent is never sent GOAWAY "too_many_pings".
"""

from __future__ import annotations

# Largest gRPC message either side accepts. File chunks are 1 MiB and log batches are bounded by
# line count and bytes, so 16 MiB leaves room for a batch holding a few maximal lines.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

KEEPALIVE_TIME_MS = 20_000
KEEPALIVE_TIMEOUT_MS = 10_000
# The server lets clients ping at half the client interval, so jitter never trips the limit.
MIN_PING_INTERVAL_MS = KEEPALIVE_TIME_MS // 2

ChannelOptions = list[tuple[str, int | str]]


def client_options(target_name: str) -> ChannelOptions:
    """Options for a client channel to a peer whose certificate names `target_name`."""
    return [
        ("grpc.ssl_target_name_override", target_name),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # One channel per peer, never shared with another peer's credentials.
        ("grpc.use_local_subchannel_pool", 1),
    ]


def server_options() -> ChannelOptions:
    """Options for a gRPC server that accepts our clients' keepalive pings."""
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.http2.max_pings_without_data", 0),
    ]
