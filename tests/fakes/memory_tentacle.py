"""An in-memory Tentacle: the agent's real handlers and ScriptManager, reached without gRPC.

`MemoryTentacle` assembles what `tentacle run` assembles (tentacle/app.py) on a home directory
in this process: the real `TentacleHandlers` over a real `ScriptManager` (real scripts in real
processes, journals and tickets on disk), `UploadStore` and `PackageReceiver`. What it leaves
out is the network: `MemoryTransport` is a `Transport` (comms/client.py) that hands the
serialized request to the handler the real servers would call (`METHODS`) and gives back the
serialized answer, so `TentacleClient` runs the very agent contract the real transports carry
(tests/integration/test_tentacle_client_contract.py runs it against all three).

Errors cross as they do over polling: a handler's exception becomes the wire's (kind, message)
through the Tentacle's own `describe_error`, and the server side turns that into its typed
error through `errors_wire.from_frame`; nothing is mapped here. Oversize messages are refused
with the same kind as the real transports refuse them.

What a test can make it do (all machines of a fleet are independent):
- `go_away(reason)`: the agent is out of reach. Every new call raises `Unreachable(reason)`,
  every call in flight (an open watch too) fails with `Unreachable("lost")`; the scripts go on
  running on the agent, as they do when a network breaks. `come_back()` ends it.
- `time_out_next(method, delivered=...)`: the next call(s) of a method time out: after the
  agent did the work and the answer was lost (`delivered=True`), or before it ever got there.
  A call also times out for real when the handler takes longer than the call's timeout.
- `restart()`: the Tentacle process restarts: calls in flight are lost, a fresh ScriptManager
  recovers the same home (so scripts that were running end `result_unknown`, killed).
- `calls` lists every method called, in order, for tests to assert on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, TypeVar

from cuttle.protocol import channel, pki
from cuttle.protocol.errors import code_for_kind
from cuttle.server.comms.client import TentacleClient
from cuttle.server.comms.errors_wire import from_frame
from cuttle.server.errors import AgentError, NotFound, Unreachable
from cuttle.tentacle.config import CERTIFICATE_FILE, KEY_FILE
from cuttle.tentacle.execution.manager import ScriptManager
from cuttle.tentacle.files.transfer import UploadStore
from cuttle.tentacle.packages.cache import PackageCache, cache_root
from cuttle.tentacle.packages.deploy import DeploySettings
from cuttle.tentacle.packages.receive import PackageReceiver
from cuttle.tentacle.services.handlers import METHODS, Method, TentacleHandlers, describe_error

T = TypeVar("T")

_END = object()

# The real Tentacle's defaults, except cgroups: tests must not leave cgroups on the host, and
# a cancel still finds the tree by its process group and ticket marker.
DEFAULT_MANAGER_SETTINGS: dict[str, Any] = {"use_cgroups": False}


class MemoryTentacle:
    """A Tentacle in this process on `home`; `client()` reaches it through MemoryTransport."""

    def __init__(self, home: Path, name: str = "memory-01", **manager_settings: Any) -> None:
        self.home = home
        self.name = name
        self.calls: list[str] = []
        self._settings = {**DEFAULT_MANAGER_SETTINGS, **manager_settings}
        self._away: str | None = None
        # Set when every call in flight must fail (the link broke, the process restarted).
        self._cut = asyncio.Event()
        self._down = False
        self._timeouts: Counter[tuple[str, bool]] = Counter()
        home.mkdir(parents=True, exist_ok=True)
        certificate = home / CERTIFICATE_FILE
        if not certificate.exists():
            # What `tentacle create-instance` makes: the identity GetInfo reports.
            identity = pki.generate_identity(f"Cuttle Tentacle {name}", pki.TENTACLE_NAME)
            pki.save_identity(identity, home / KEY_FILE, certificate)
        self.thumbprint = pki.thumbprint_of_pem(certificate.read_bytes())
        self._manager: ScriptManager | None = None
        self._handlers: TentacleHandlers | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> MemoryTentacle:
        """Recover the home's tickets (as `tentacle run` does) and take calls."""
        cache = PackageCache(cache_root(self.home))
        manager = ScriptManager(
            self.home,
            packages=DeploySettings(cache, self.home / "Applications"),
            **self._settings,
        )
        await manager.recover()
        self._manager = manager
        self._handlers = TentacleHandlers(
            manager,
            UploadStore(self.home / "uploads"),
            PackageReceiver(cache),
            thumbprint=self.thumbprint,
            comms_style="memory",
            disk_path=str(self.home),
        )
        self._down = False
        return self

    async def restart(self) -> None:
        """Restart the agent: calls in flight are lost; a fresh ScriptManager recovers the home.

        Scripts that were running are found orphaned and end result_unknown, as after a real
        restart; finished tickets keep their journals and results.
        """
        self._down = True
        self._break_calls()
        if self._manager is not None:
            await self._manager.close()
        await self.start()

    async def stop(self) -> None:
        """Kill every script still running (tests leave no process behind), then close."""
        self._down = True
        self._break_calls()
        manager = self._manager
        if manager is None:
            return
        tickets = self.home / "tickets"
        for entry in sorted(tickets.iterdir()) if tickets.exists() else []:
            with contextlib.suppress(Exception):  # finished, half deleted: nothing to kill
                await manager.cancel(entry.name, "the test's Tentacle stopped")
        await manager.close()
        self._manager = self._handlers = None

    @property
    def manager(self) -> ScriptManager:
        """The ScriptManager serving now (a new one after restart())."""
        if self._manager is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._manager

    # -- what a test makes happen -------------------------------------------------------------

    def go_away(self, reason: str = "connection refused") -> None:
        """The agent cannot be reached: new calls fail with `reason`, calls in flight are lost."""
        self._away = reason
        self._break_calls()

    def come_back(self) -> None:
        """The agent can be reached again."""
        self._away = None

    @property
    def serving(self) -> bool:
        """Whether the agent is started and takes calls (reachable or not)."""
        return not self._down and self._handlers is not None

    @property
    def away(self) -> bool:
        """Whether the agent is out of reach now."""
        return self._away is not None

    def time_out_next(self, method: str, *, delivered: bool = True, count: int = 1) -> None:
        """The next `count` calls of `method` time out, after the agent did the work or before."""
        if method not in METHODS:
            raise ValueError(f"no TentacleService method {method!r}")
        self._timeouts[(method, delivered)] += count

    def client(self, default_timeout: float = 60.0) -> TentacleClient:
        """A TentacleClient over a MemoryTransport to this agent."""
        return TentacleClient(MemoryTransport(self), default_timeout)

    # -- the wire -----------------------------------------------------------------------------

    def _break_calls(self) -> None:
        self._cut.set()
        self._cut = asyncio.Event()

    def _reach(self, method: str) -> asyncio.Event:
        """Record the call; the event that ends it, or Unreachable when it cannot be made."""
        self.calls.append(method)
        if self._away is not None:
            raise Unreachable(self.name, self._away)
        if self._down or self._handlers is None:
            raise Unreachable(self.name, "connection refused", "the Tentacle is not running")
        return self._cut

    def _timed_out(self, method: str, delivered: bool) -> bool:
        key = (method, delivered)
        if self._timeouts[key] <= 0:
            return False
        self._timeouts[key] -= 1
        return True

    def _method(self, name: str, *, streaming: bool) -> Method:
        method = METHODS.get(name)
        if method is None or method.streaming != streaming:
            raise self._rejected("invalid_argument", f"unknown method {name!r}")
        return method

    def _rejected(self, kind: str, message: str) -> AgentError:
        # The polling Tentacle's error frame, read back by the server as any frame is.
        return from_frame(self.name, code_for_kind(kind).value[0], kind, message)

    def _wire_error(self, exc: Exception) -> AgentError:
        kind, message = describe_error(exc)
        return self._rejected(kind, message)

    def _check_size(self, method: str, data: bytes, what: str) -> None:
        if len(data) > channel.MAX_MESSAGE_BYTES:
            raise self._rejected(
                "invalid_argument",
                f"the {method} {what} of {len(data)} bytes exceeds the "
                f"{channel.MAX_MESSAGE_BYTES}-byte message limit",
            )

    async def _answer(self, method: Method, payload: bytes) -> bytes:
        handlers = self._handlers
        if handlers is None:
            raise Unreachable(self.name, "connection refused", "the Tentacle is not running")
        try:
            request = method.request_type.FromString(payload)
            reply = await method.bind(handlers)(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure goes back as a typed error
            raise self._wire_error(exc) from exc
        data: bytes = reply.SerializeToString()
        self._check_size(method.name, data, "answer")
        return data

    async def _produce(
        self, method: Method, payload: bytes, answers: asyncio.Queue[object]
    ) -> None:
        """Run a streaming handler, handing each serialized answer over as it comes."""
        handlers = self._handlers
        try:
            if handlers is None:
                raise Unreachable(self.name, "connection refused", "the Tentacle is not running")
            request = method.request_type.FromString(payload)
            async with contextlib.aclosing(method.bind(handlers)(request)) as replies:
                async for reply in replies:
                    data: bytes = reply.SerializeToString()
                    self._check_size(method.name, data, "answer")
                    await answers.put(data)
            await answers.put(_END)
        except asyncio.CancelledError:
            raise
        except AgentError as exc:
            await answers.put(exc)
        except Exception as exc:  # noqa: BLE001 - every failure goes back as a typed error
            error = self._wire_error(exc)
            error.__cause__ = exc
            await answers.put(error)

    async def _race(
        self, work: asyncio.Future[T], cut: asyncio.Event, method: str, timeout: float | None
    ) -> T:
        """The work's result, unless the link is cut or the call's time runs out first."""
        lost = asyncio.ensure_future(cut.wait())
        racing: set[asyncio.Future[Any]] = {work, lost}
        try:
            done, _ = await asyncio.wait(
                racing, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            lost.cancel()
            if not work.done():
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
        if work in done:
            return work.result()
        if lost in done:
            raise Unreachable(self.name, "lost", f"the connection broke before {method} answered")
        raise Unreachable(self.name, "timed out", f"no answer to {method} in {timeout:g}s")


class MemoryTransport:
    """A Transport to a MemoryTentacle: the same bytes as over gRPC, no network in between."""

    def __init__(self, tentacle: MemoryTentacle) -> None:
        self.machine = tentacle.name
        self._tentacle = tentacle

    async def unary(self, method: str, payload: bytes, timeout: float | None) -> bytes:
        """One call; away, lost, timed out and agent errors as the real transports raise them."""
        agent = self._tentacle
        cut = agent._reach(method)
        agent._check_size(method, payload, "request")
        spec = agent._method(method, streaming=False)
        if agent._timed_out(method, delivered=False):
            raise Unreachable(agent.name, "timed out", f"{method} never reached the agent")
        answer = await agent._race(
            asyncio.ensure_future(agent._answer(spec, payload)), cut, method, timeout
        )
        if agent._timed_out(method, delivered=True):
            raise Unreachable(agent.name, "timed out", f"the answer to {method} was lost")
        return answer

    async def stream(self, method: str, payload: bytes) -> AsyncIterator[bytes]:
        """A server-streaming call; ends early with Unreachable when the link breaks."""
        agent = self._tentacle
        cut = agent._reach(method)
        agent._check_size(method, payload, "request")
        spec = agent._method(method, streaming=True)
        if agent._timed_out(method, delivered=False):
            raise Unreachable(agent.name, "timed out", f"{method} never reached the agent")
        # One item in hand at a time: the handler runs ahead by at most one answer.
        answers: asyncio.Queue[object] = asyncio.Queue(maxsize=1)
        producer = asyncio.create_task(agent._produce(spec, payload, answers))
        delivered_timeout = agent._timed_out(method, delivered=True)
        try:
            while True:
                item = await agent._race(asyncio.ensure_future(answers.get()), cut, method, None)
                if delivered_timeout:
                    raise Unreachable(agent.name, "timed out", f"the answer to {method} was lost")
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, bytes)
                yield item
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)

    async def close(self) -> None:
        """Nothing to release."""


class MemoryFleet:
    """In-memory Tentacles by machine name, standing in for the server's `Connections`."""

    def __init__(self, root: Path, call_timeout: float = 60.0, **manager_settings: Any) -> None:
        self._root = root
        self._call_timeout = call_timeout
        self._settings = manager_settings
        self.tentacles: dict[str, MemoryTentacle] = {}
        self._clients: dict[str, TentacleClient] = {}

    async def add(self, name: str) -> MemoryTentacle:
        """Start a Tentacle for machine `name` in its own home under the root."""
        tentacle = MemoryTentacle(self._root / name, name, **self._settings)
        self.tentacles[name.casefold()] = await tentacle.start()
        return tentacle

    def __getitem__(self, name: str) -> MemoryTentacle:
        return self.tentacles[name.casefold()]

    def __iter__(self) -> Iterator[MemoryTentacle]:
        return iter(self.tentacles.values())

    async def client(self, name: str) -> TentacleClient:
        """As Connections.client(): the machine's client; NotFound for an unknown machine."""
        key = name.casefold()
        if key not in self.tentacles:
            raise NotFound(f"no machine named {name!r} is registered")
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = self.tentacles[key].client(self._call_timeout)
        return client

    def connected(self, name: str) -> bool | None:
        """As Connections.connected() for a listening machine: nothing to say."""
        return None

    async def close(self) -> None:
        """Stop every Tentacle (their scripts killed)."""
        for tentacle in self.tentacles.values():
            await tentacle.stop()
