"""Bad input over the wire (issue 3, test 7): clear errors or intact delivery, never a crash.

Each case runs against real processes and ends by proving that both sides still serve: the
processes are alive, gRPC health says SERVING, and a normal script still runs.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cuttle.protocol import channel, pki
from cuttle.protocol.errors import ERROR_KIND_METADATA
from cuttle.protocol.v1 import admin_pb2 as apb
from cuttle.protocol.v1 import admin_pb2_grpc
from cuttle.protocol.v1 import polling_pb2 as ppb
from cuttle.protocol.v1 import tentacle_pb2 as tpb
from cuttle.server.domain.scripts import ScriptRequest, ScriptStatus
from cuttle.server.errors import AgentRejected, UnknownTicket
from tests.integration.harness.clients import (
    AdminApi,
    Link,
    admin_channel,
    server_credentials_for,
    serving,
    tentacle_link,
    trusted_channel_options,
)
from tests.integration.harness.cluster import BIN, Cluster, running_cluster, wait_for

pytestmark = pytest.mark.integration

STYLES = ["listening", "polling"]
NAMES = {"listening": "web-l", "polling": "web-p"}
# Comfortably above the largest message either side accepts.
OVERSIZE = channel.MAX_MESSAGE_BYTES + 1024 * 1024
MIB = 1024 * 1024
# Enum numbers no version of the protocol defines (proto3 enums are open: they parse).
BAD_SYNTAX = tpb.ScriptSyntax.ValueType(99)
BAD_STYLE = apb.CommsStyle.ValueType(99)
SYNTAXES = {"bash": tpb.SCRIPT_SYNTAX_BASH, "python": tpb.SCRIPT_SYNTAX_PYTHON}


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One server with a listening and a polling Tentacle, shared by the cases of a worker."""
    with running_cluster(tmp_path_factory.mktemp("bad-input")) as cluster:
        cluster.start_server()
        for style, name in NAMES.items():
            cluster.add_tentacle(name, style)
        yield cluster


@pytest.fixture(scope="module")
def admin(fleet: Cluster) -> Iterator[AdminApi]:
    """The fleet server's admin API, called in-process (cheaper than a CLI per call)."""
    api = AdminApi(fleet.server)
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def served(fleet: Cluster, admin: AdminApi, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The fleet; afterwards both sides must still serve (logs printed when anything failed)."""
    yield fleet
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(fleet.logs())
        return
    _assert_still_serving(fleet, admin)


@pytest.fixture(scope="module", params=STYLES)
def link(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Link]:
    """A Tentacle of each style and the product's server-side TentacleClient for it."""
    style: str = request.param
    with tentacle_link(tmp_path_factory.mktemp(f"link-{style}"), style) as linked:
        yield linked


@pytest.fixture
def linked(link: Link, request: pytest.FixtureRequest) -> Iterator[Link]:
    """The link; afterwards the Tentacle must be alive and still run scripts over it."""
    yield link
    report = getattr(request.node, "rep_call", None)
    process = link.tentacle.process
    if report is not None and report.failed:
        print(process.tail() if process else "(no process)")
        return
    assert process is not None
    assert process.alive(), process.tail()
    assert link.run(link.client.get_info()).thumbprint
    marker = uuid.uuid4().hex
    lines, final = link.run(_run(link, _bash(f"echo alive-{marker}")))
    assert final.succeeded
    assert f"alive-{marker}".encode() in lines


# -- helpers -------------------------------------------------------------------------------


def _assert_still_serving(fleet: Cluster, admin: AdminApi) -> None:
    server = fleet.server
    for proc in fleet.procs:
        assert proc.alive(), f"{proc.name} died:\n{proc.tail()}"
    pem = (server.home / "server-certificate.pem").read_bytes()
    assert serving(
        f"127.0.0.1:{server.admin_port}",
        grpc.ssl_channel_credentials(root_certificates=pem),
        pki.SERVER_NAME,
    )
    listening = fleet.tentacles[NAMES["listening"]]
    assert serving(
        f"127.0.0.1:{listening.port}",
        server_credentials_for(listening.home, server.home),
        pki.TENTACLE_NAME,
    )
    wait_for(
        lambda: any(m.name == NAMES["polling"] and m.connected for m in admin.machines()),
        15,
        "the polling Tentacle's stream",
        interval=0.2,
    )
    marker = f"still-{uuid.uuid4().hex}"
    task_id, task = admin.run_script(
        apb.RunScriptRequest(
            environments=["Dev"], syntax=tpb.SCRIPT_SYNTAX_BASH, body=f"echo {marker}"
        )
    )
    assert task.state == apb.TASK_STATE_SUCCESS, task
    seen = {(line.machine, line.line.text) for line in admin.log(task_id)}
    for name in NAMES.values():
        assert (name, marker.encode()) in seen


def _bash(body: str, *, timeout: float = 0.0) -> ScriptRequest:
    return ScriptRequest(
        ticket=f"bad-{uuid.uuid4().hex}", body=body, syntax="bash", timeout_seconds=timeout
    )


async def _run(link: Link, request: ScriptRequest) -> tuple[list[bytes], ScriptStatus]:
    """The script's lines (every source) and its final status."""
    await link.client.start_script(request)
    lines: list[bytes] = []
    last: ScriptStatus | None = None
    async for status in link.client.watch_script(request.ticket):
        lines.extend(text for run in status.runs for text in run.text.split(b"\n"))
        last = status
    assert last is not None
    return lines, last


def _identity(data: bytes) -> bytes:
    return data


def _raw_call(chan: grpc.Channel, method: str, payload: bytes, **kwargs: Any) -> Any:
    call = chan.unary_unary(method, request_serializer=_identity, response_deserializer=_identity)
    return call(payload, timeout=30, **kwargs)


def _raw_stream(chan: grpc.Channel, method: str, payload: bytes, **kwargs: Any) -> list[Any]:
    call = chan.unary_stream(method, request_serializer=_identity, response_deserializer=_identity)
    return list(call(payload, timeout=30, **kwargs))


def _tentacle_channel(fleet: Cluster, max_message: int) -> grpc.Channel:
    """A channel to the listening Tentacle with the server's own (trusted) identity."""
    tentacle = fleet.tentacles[NAMES["listening"]]
    return grpc.secure_channel(
        f"127.0.0.1:{tentacle.port}",
        server_credentials_for(tentacle.home, fleet.server.home),
        options=trusted_channel_options(pki.TENTACLE_NAME, max_message),
    )


def _script(machine: str, body: str, syntax: str = "bash") -> apb.RunScriptRequest:
    return apb.RunScriptRequest(machines=[machine], syntax=SYNTAXES[syntax], body=body)


def _stdout(lines: list[apb.TaskLogLine]) -> list[bytes]:
    return [line.line.text for line in lines if line.line.source == tpb.LOG_SOURCE_STDOUT]


def _assert_status(error: grpc.RpcError, code: grpc.StatusCode, *fragments: str) -> None:
    assert isinstance(error, grpc.Call)
    assert error.code() == code, f"{error.code()}: {error.details()}"
    details = error.details() or ""
    for fragment in fragments:
        assert fragment in details, details


# -- oversize messages ---------------------------------------------------------------------


def test_oversize_message_to_the_listening_tentacle_is_refused(served: Cluster) -> None:
    request = tpb.UploadChunkRequest(transfer_id="oversize", offset=0, data=b"\0" * OVERSIZE)
    with _tentacle_channel(served, 4 * OVERSIZE) as chan:
        with pytest.raises(grpc.RpcError) as refused:
            _raw_call(
                chan,
                "/cuttle.protocol.v1.TentacleService/UploadChunk",
                request.SerializeToString(),
            )
        _assert_status(refused.value, grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max")
        # The same connection still serves a normal call afterwards.
        reply = _raw_call(chan, "/cuttle.protocol.v1.TentacleService/GetInfo", b"")
        assert tpb.TentacleInfo.FromString(reply).version


def test_oversize_message_to_the_admin_api_is_refused(served: Cluster) -> None:
    metadata = (("x-api-key", served.server.api_key),)
    huge = apb.RunScriptRequest(
        machines=["web-l"], syntax=tpb.SCRIPT_SYNTAX_BASH, body="#" * OVERSIZE
    )
    with admin_channel(served.server, 4 * OVERSIZE) as chan:
        with pytest.raises(grpc.RpcError) as refused:
            _raw_stream(
                chan,
                "/cuttle.protocol.v1.AdminService/RunScript",
                huge.SerializeToString(),
                metadata=metadata,
            )
        _assert_status(refused.value, grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max")
        with pytest.raises(grpc.RpcError) as refused:
            _raw_call(
                chan,
                "/cuttle.protocol.v1.AdminService/GetServerInfo",
                b"\0" * OVERSIZE,
                metadata=metadata,
            )
        _assert_status(refused.value, grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max")
        info = admin_pb2_grpc.AdminServiceStub(chan).GetServerInfo(
            apb.GetServerInfoRequest(), metadata=metadata, timeout=30
        )
        assert info.thumbprint == served.server.thumbprint


def test_oversize_frame_on_the_polling_port_ends_only_that_stream(served: Cluster) -> None:
    # A second stream with the polling Tentacle's own certificate: trusted, but it misbehaves.
    tentacle = served.tentacles[NAMES["polling"]]
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(served.server.home / "server-certificate.pem").read_bytes(),
        private_key=(tentacle.home / "key.pem").read_bytes(),
        certificate_chain=(tentacle.home / "certificate.pem").read_bytes(),
    )
    frames = [
        ppb.TentacleFrame(hello=ppb.Hello(version="rogue")),
        ppb.TentacleFrame(response=ppb.Response(request_id=1, payload=b"\0" * OVERSIZE, end=True)),
    ]
    with grpc.secure_channel(
        f"127.0.0.1:{served.server.polling_port}",
        credentials,
        options=trusted_channel_options(pki.SERVER_NAME, 4 * OVERSIZE),
    ) as chan:
        poll = chan.stream_stream(
            "/cuttle.protocol.v1.PollingService/Poll",
            request_serializer=ppb.TentacleFrame.SerializeToString,
            response_deserializer=ppb.ServerFrame.FromString,
        )
        with pytest.raises(grpc.RpcError) as ended:
            for _ in poll(iter(frames), timeout=30):
                pass
        _assert_status(ended.value, grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max")


@pytest.mark.parametrize("style", STYLES)
def test_a_one_mib_line_arrives_intact(served: Cluster, admin: AdminApi, style: str) -> None:
    body = (
        "import sys\n"
        "print('before')\n"
        "sys.stdout.write(''.join(chr(33 + i % 94) for i in range(1024 * 1024)) + '\\n')\n"
        "print('after')\n"
    )
    task_id, task = admin.run_script(_script(NAMES[style], body, "python"))
    assert task.state == apb.TASK_STATE_SUCCESS
    expected = "".join(chr(33 + i % 94) for i in range(MIB)).encode()
    assert _stdout(admin.log(task_id)) == [b"before", expected, b"after"]


@pytest.mark.parametrize("style", STYLES)
def test_ten_mib_file_and_artifact_arrive_intact(
    served: Cluster, admin: AdminApi, style: str
) -> None:
    content = os.urandom(10 * MIB + 777)
    digest = hashlib.sha256(content).hexdigest()
    request = apb.RunScriptRequest(
        machines=[NAMES[style]],
        syntax=tpb.SCRIPT_SYNTAX_BASH,
        body="sha256sum payload.bin; cp payload.bin back.bin; new_octopusartifact back.bin",
        files=[tpb.ScriptFile(name="payload.bin", content=content)],
    )
    task_id, task = admin.run_script(request)
    assert task.state == apb.TASK_STATE_SUCCESS, task
    assert _stdout(admin.log(task_id)) == [f"{digest}  payload.bin".encode()]

    chunks = list(
        admin.stub.DownloadArtifact(
            apb.DownloadArtifactRequest(task_id=task_id, machine=NAMES[style], name="back.bin"),
            metadata=admin.metadata,
            timeout=60,
        )
    )
    assert len(chunks) > 1  # it left the server in chunks too
    assert b"".join(c.data for c in chunks) == content
    assert chunks[-1].sha256 == digest


# -- unknown tickets and tasks -------------------------------------------------------------


def test_unknown_task_is_a_clear_not_found_from_the_cli(served: Cluster, tmp_path: Path) -> None:
    commands = [
        ("task", "show", "no-such-task"),
        ("task", "log", "no-such-task"),
        ("task", "cancel", "no-such-task"),
        ("artifact", "download", "no-such-task", "web-l", "a.txt", "-o", str(tmp_path / "a")),
    ]
    for command in commands:
        result = served.server.cli(*command)
        assert result.returncode == 1, command
        assert "not found" in result.stderr, result.stderr
        assert "[not_found]" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_unknown_ticket_on_the_listening_port_is_not_found(served: Cluster) -> None:
    request = tpb.ScriptTicketRequest(ticket="no-such-ticket").SerializeToString()
    with _tentacle_channel(served, channel.MAX_MESSAGE_BYTES) as chan:
        for method in ("GetStatus", "CompleteScript"):
            with pytest.raises(grpc.RpcError) as missing:
                _raw_call(chan, f"/cuttle.protocol.v1.TentacleService/{method}", request)
            _assert_status(missing.value, grpc.StatusCode.NOT_FOUND, "no-such-ticket")
            assert isinstance(missing.value, grpc.Call)
            assert (ERROR_KIND_METADATA, "not_found") in tuple(
                missing.value.trailing_metadata() or ()
            )


def test_client_bad_requests_get_typed_errors(linked: Link) -> None:
    client = linked.client
    with pytest.raises(UnknownTicket, match="no-such-ticket"):
        linked.run(client.get_status("no-such-ticket"))
    with pytest.raises(UnknownTicket, match="no-such-ticket"):
        linked.run(client.cancel_script("no-such-ticket", "test"))

    with pytest.raises(AgentRejected, match="malformed") as garbage:
        linked.run(client.transport.unary("GetStatus", b"\xff\xff\xff\xff", 10))
    assert garbage.value.kind == "invalid_argument"

    with pytest.raises(AgentRejected) as unknown:
        linked.run(client.transport.unary("NoSuchMethod", b"", 10))
    assert unknown.value.kind == "invalid_argument"

    with pytest.raises(AgentRejected, match="timeout") as nan:
        linked.run(client.start_script(_bash("echo never", timeout=math.nan)))
    assert nan.value.kind == "invalid_argument"


def test_oversize_request_is_refused_and_the_link_survives(linked: Link) -> None:
    payload = tpb.UploadChunkRequest(transfer_id="big", data=b"\0" * OVERSIZE).SerializeToString()
    with pytest.raises(AgentRejected, match="larger than max|exceeds") as refused:
        linked.run(linked.client.transport.unary("UploadChunk", payload, 30))
    assert refused.value.kind == "invalid_argument"


def test_oversize_answer_is_refused_and_the_link_survives(linked: Link) -> None:
    # Six 3 MB output variables: every status of this ticket is bigger than any message may be.
    request = _bash(
        'big=$(head -c 3000000 /dev/zero | tr "\\0" a)\n'
        'for i in 1 2 3 4 5 6; do set_octopusvariable "Big$i" "$big"; done\n'
        "echo set"
    )
    with pytest.raises(AgentRejected, match="larger than max|exceeds") as refused:
        linked.run(_run(linked, request))
    assert refused.value.kind == "invalid_argument"
    # Completing it still works (the agent forgets the ticket even if the answer cannot travel).
    with pytest.raises(AgentRejected):
        linked.run(linked.client.complete_script(request.ticket))
    with pytest.raises(UnknownTicket):
        linked.run(linked.client.get_status(request.ticket))


# -- script output: bytes and service messages ---------------------------------------------

_RAW_LINES = [
    b"bad \xff\xfe utf8",
    b"nul\x00in\x00line",
    b"latin1 caf\xe9",
    b"half a character \xe2\x82",
    b"\x00",
    b"carriage\rreturn",
    "valid ✓ utf8".encode(),
]


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("syntax", ["bash", "python"])
def test_invalid_utf8_and_nul_bytes_arrive_byte_identical(
    served: Cluster, admin: AdminApi, style: str, syntax: str
) -> None:
    if syntax == "bash":
        body = "".join(
            "printf '" + "".join(f"\\x{b:02x}" for b in line) + "\\n'\n" for line in _RAW_LINES
        )
    else:
        body = "import sys\n" + "".join(
            f"sys.stdout.buffer.write({line!r} + bytes([10]))\n" for line in _RAW_LINES
        )
    task_id, task = admin.run_script(_script(NAMES[style], body, syntax))
    assert task.state == apb.TASK_STATE_SUCCESS
    assert _stdout(admin.log(task_id)) == _RAW_LINES

    # --raw writes the same bytes and does not choke on them (without it, invalid UTF-8 shows
    # as U+FFFD: tests/integration/test_output_conventions.py).
    text = subprocess.run(
        [str(BIN / "cuttle"), "task", "log", "--raw", task_id],
        capture_output=True,
        env=served.server.cli_env(),
        timeout=60,
        check=False,
    )
    assert text.returncode == 0, text.stderr
    for line in _RAW_LINES:
        assert f"{NAMES[style]}: ".encode() + line + b"\n" in text.stdout


@pytest.mark.parametrize("style", STYLES)
def test_malformed_service_messages_are_plain_lines(
    served: Cluster, admin: AdminApi, style: str
) -> None:
    not_utf8 = base64.b64encode(b"\xff").decode()
    plain = [
        "##octopus[setVariable name='abc' value='eA==']",  # not valid base64
        "##octopus[setVariable name='TmFtZQ==' value='eA=='",  # unterminated
        f"##octopus[setVariable name='{not_utf8}' value='eA==']",  # not UTF-8 inside
        "##octopus[setVariable name='TmFtZQ==' value='not base64!']",  # outside the grammar
    ]
    body = "".join(f'echo "{line}"\n' for line in plain) + (
        "echo \"##octopus[frobnicate value='eA==']\"\n"  # well formed, unknown name
        "echo \"##octopus[setVariable value='eA==']\"\n"  # well formed, no name
        'set_octopusvariable "Later" "still works"\n'
        "echo after\n"
    )
    task_id, task = admin.run_script(_script(NAMES[style], body))
    assert task.state == apb.TASK_STATE_SUCCESS
    (target,) = task.targets
    assert {v.name: v.value for v in target.output_variables} == {"Later": "still works"}

    lines = admin.log(task_id)
    assert _stdout(lines) == [*(line.encode() for line in plain), b"after"]
    notes = [line.line for line in lines if line.line.source == tpb.LOG_SOURCE_TENTACLE]
    assert [(n.level, n.text) for n in notes] == [
        (
            tpb.LOG_LEVEL_VERBOSE,
            b"Ignored the service message 'frobnicate', which this Tentacle does not know",
        ),
        (tpb.LOG_LEVEL_WARNING, b"Ignored a setVariable service message without a name"),
    ]


# -- malformed admin requests --------------------------------------------------------------


def test_malformed_admin_requests_are_invalid_argument(served: Cluster, admin: AdminApi) -> None:
    metadata = admin.metadata
    certificate = (served.tentacles["web-l"].home / "certificate.pem").read_text()
    bad_unary = [
        ("RegisterMachine", apb.RegisterMachineRequest(environments=["Dev"]), "name is empty"),
        (
            "RegisterMachine",
            apb.RegisterMachineRequest(name="   ", environments=["Dev"]),
            "name is empty",
        ),
        (
            "RegisterMachine",
            apb.RegisterMachineRequest(
                name="odd", environments=["Dev"], comms_style=BAD_STYLE, certificate_pem=certificate
            ),
            "comms_style",
        ),
        ("ListMachines", apb.ListMachinesRequest(page_size=5_000_000), "page size"),
    ]
    bad_scripts = [
        (apb.RunScriptRequest(machines=["web-l"], syntax=BAD_SYNTAX, body="echo"), "syntax"),
        (
            apb.RunScriptRequest(machines=["web-l"], syntax=tpb.SCRIPT_SYNTAX_BASH, body="  "),
            "empty",
        ),
        (apb.RunScriptRequest(syntax=tpb.SCRIPT_SYNTAX_BASH, body="echo"), "choose machines"),
        (
            apb.RunScriptRequest(
                machines=["web-l"], syntax=tpb.SCRIPT_SYNTAX_BASH, body="echo", timeout_seconds=-1
            ),
            "timeout",
        ),
        (
            apb.RunScriptRequest(
                machines=["web-l"],
                syntax=tpb.SCRIPT_SYNTAX_BASH,
                body="echo",
                timeout_seconds=math.nan,
            ),
            "timeout",
        ),
        (
            apb.RunScriptRequest(
                machines=["web-l"],
                syntax=tpb.SCRIPT_SYNTAX_BASH,
                body="echo",
                timeout_seconds=math.inf,
            ),
            "timeout",
        ),
        (
            apb.RunScriptRequest(
                machines=["web-l"],
                syntax=tpb.SCRIPT_SYNTAX_BASH,
                body="echo",
                full_isolation=True,
                isolation_timeout_seconds=math.nan,
            ),
            "isolation timeout",
        ),
        (
            apb.RunScriptRequest(
                machines=["web-l"], syntax=tpb.SCRIPT_SYNTAX_BASH, body="echo", mutex_name="m"
            ),
            "only applies with full isolation",
        ),
        (
            apb.RunScriptRequest(
                machines=["web-l"],
                syntax=tpb.SCRIPT_SYNTAX_BASH,
                body="echo",
                isolation_timeout_seconds=5,
            ),
            "only applies with full isolation",
        ),
        (
            apb.RunScriptRequest(
                machines=["web-l"],
                syntax=tpb.SCRIPT_SYNTAX_BASH,
                body="echo",
                full_isolation=True,
                mutex_name="m" * 201,
            ),
            "mutex name longer",
        ),
        *(
            (
                apb.RunScriptRequest(
                    machines=["web-l"],
                    syntax=tpb.SCRIPT_SYNTAX_BASH,
                    body="echo",
                    files=[tpb.ScriptFile(name=name, content=b"x")],
                ),
                "file name",
            )
            for name in ("../escape", "/etc/passwd", "", ".", ".cuttle/x", "script.sh", "a\\b")
        ),
    ]
    tasks_before = len(admin.stub.ListTasks(apb.ListTasksRequest(), metadata=metadata).tasks)
    with admin_channel(served.server) as chan:
        stub = admin_pb2_grpc.AdminServiceStub(chan)
        for method, message, fragment in bad_unary:
            with pytest.raises(grpc.RpcError) as refused:
                getattr(stub, method)(message, metadata=metadata, timeout=30)
            _assert_status(refused.value, grpc.StatusCode.INVALID_ARGUMENT, fragment)
        for script, fragment in bad_scripts:
            with pytest.raises(grpc.RpcError) as refused:
                list(stub.RunScript(script, metadata=metadata, timeout=30))
            _assert_status(refused.value, grpc.StatusCode.INVALID_ARGUMENT, fragment)

        # Bytes that are no protobuf message at all, on unary and streaming methods.
        for method, stream in (("RegisterMachine", False), ("GetTask", False), ("RunScript", True)):
            path = f"/cuttle.protocol.v1.AdminService/{method}"
            call = _raw_stream if stream else _raw_call
            with pytest.raises(grpc.RpcError) as refused:
                call(chan, path, b"\xff\xfe\xfd\xfc garbage", metadata=metadata)
            _assert_status(refused.value, grpc.StatusCode.INVALID_ARGUMENT, "malformed request")
            # Without an API key the refusal comes first, whatever the bytes.
            with pytest.raises(grpc.RpcError) as refused:
                call(chan, path, b"\xff\xfe\xfd\xfc garbage")
            _assert_status(refused.value, grpc.StatusCode.UNAUTHENTICATED, "API key")
    # None of them left a task behind.
    assert len(admin.stub.ListTasks(apb.ListTasksRequest(), metadata=metadata).tasks) == (
        tasks_before
    )


def test_garbage_bytes_to_the_listening_tentacle_are_invalid_argument(served: Cluster) -> None:
    with _tentacle_channel(served, channel.MAX_MESSAGE_BYTES) as chan:
        for method in ("GetStatus", "StartScript", "UploadChunk"):
            with pytest.raises(grpc.RpcError) as refused:
                _raw_call(chan, f"/cuttle.protocol.v1.TentacleService/{method}", b"\xff\xff\xff")
            _assert_status(refused.value, grpc.StatusCode.INVALID_ARGUMENT, "malformed request")
        with pytest.raises(grpc.RpcError) as refused:
            _raw_stream(chan, "/cuttle.protocol.v1.TentacleService/WatchScript", b"\xff\xff\xff")
        _assert_status(refused.value, grpc.StatusCode.INVALID_ARGUMENT, "malformed request")
