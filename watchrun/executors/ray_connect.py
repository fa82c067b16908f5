"""Joining or starting Ray: the address resolved, the cluster asked first, ray.init last.

`ray.init` on a wrong address retries for many minutes while its C++ client prints a warning a
second, and it cannot be interrupted: it runs in a thread of ours, and Python only delivers
Ctrl-C to the main thread. So before calling it we ask the cluster's GCS one question of our own
(`GetClusterId`, with a deadline), which tells whether anything listens at the address, whether
it is a Ray GCS, and whether it wants a token. Only a cluster that answered is given to
`ray.init`, in a daemon thread that nothing waits for when watchrun stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("watchrun.executor")

_LOOPBACK_PREFIXES = ("127.", "localhost", "::1", "[::1]")
# what a driver needs to present a token (Ray's own variables)
_TOKEN_HELP = ("set RAY_AUTH_MODE=token and give the cluster's token in RAY_AUTH_TOKEN, or in a "
               "file named by RAY_AUTH_TOKEN_PATH (Ray's default: ~/.ray/auth_token)")


class RayConnectError(RuntimeError):
    """Ray could not be started or joined; the message says why and with which address."""


def is_loopback(address: str) -> bool:
    host = address.removeprefix("ray://").rsplit(":", 1)[0]
    return host.startswith(_LOOPBACK_PREFIXES)


def resolve_address(address: str) -> str:
    """The GCS (or Ray Client) address `address` stands for: "auto" and RAY_ADDRESS are read the
    way `ray.init` reads them. "" stays "" (start a private Ray here). Imports Ray."""
    if address != "auto":
        return address
    from ray._private import services

    try:
        found = services.get_ray_address_from_environment("auto", None)
    except (ConnectionError, RuntimeError) as exc:
        raise RayConnectError(
            "address = \"auto\" found no Ray cluster started on this machine (`ray start` "
            f"records its address for \"auto\"): {exc}") from None
    return str(found)


def keep_loopback(address: str) -> None:
    """A cluster on 127.0.0.1 is joined as 127.0.0.1. Ray otherwise replaces a loopback
    address by this machine's network address, where a loopback-only cluster does not listen.
    The switch is read when Ray is imported, and again by its child processes; for an address
    known only once Ray is imported ("auto"), the loaded constant is set too."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants: Any = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False


def ask_cluster(address: str, timeout: float) -> None:
    """Ask the GCS at HOST:PORT for its cluster id. Raises RayConnectError saying what is wrong:
    nothing listens, nothing answers in time, it is no Ray GCS, or it wants a token this
    driver does not have. Returns when the cluster answered, or asked for a token we have."""
    import grpc

    channel = grpc.insecure_channel(address)
    # an empty GetClusterIdRequest is zero bytes on the wire: no generated stubs needed
    ask = channel.unary_unary("/ray.rpc.NodeInfoGcsService/GetClusterId")
    try:
        ask(b"", timeout=timeout)
    except grpc.RpcError as exc:
        _raise_for(address, exc.code(), exc.details() or "", timeout)
    finally:
        channel.close()


def _raise_for(address: str, code: Any, details: str, timeout: float) -> None:
    import grpc

    if code == grpc.StatusCode.UNAUTHENTICATED:
        if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
            return  # ray.init presents the token; a wrong one is reported after it
        raise RayConnectError(
            f"the Ray cluster at {address} requires token authentication and this driver has "
            f"no token: {_TOKEN_HELP}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        raise RayConnectError(
            f"no Ray cluster answered at {address} within {timeout:g} s (is the address "
            "right, and does the cluster listen on it? [executor] connect_timeout sets the wait)")
    if code == grpc.StatusCode.UNIMPLEMENTED:
        raise RayConnectError(
            f"{address} answered but is not a Ray cluster's GCS address (the port of "
            "`ray start --head --port`)")
    if code == grpc.StatusCode.UNAVAILABLE and "refused" in details.lower():
        raise RayConnectError(f"nothing listens at {address} (connection refused): is the "
                              "address right, and is the cluster started?")
    raise RayConnectError(f"cannot reach a Ray cluster at {address}: {details or code}")


def check_address(address: str, timeout: float) -> None:
    """What can be known of `address` without joining: it resolves ("auto"), and the cluster
    answers. Raises RayConnectError. "" (a private Ray on this machine) has nothing to ask;
    a Ray Client address is only checked to accept a connection. Sets the loopback switch
    (see keep_loopback) for a cluster on this machine."""
    # before Ray is imported: its C++ client logs a warning a second while it retries, and
    # what went wrong is said once, by us
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")
    if address == "":
        keep_loopback(address)  # the private Ray this starts listens on loopback only
        return
    if is_loopback(address):
        keep_loopback(address)  # before Ray is imported: its child processes read it too
    resolved = resolve_address(address)
    if is_loopback(resolved):
        keep_loopback(resolved)
    if resolved.startswith("ray://"):
        _accepts_connections(resolved.removeprefix("ray://"), timeout)
    else:
        ask_cluster(resolved, timeout)


def _accepts_connections(address: str, timeout: float) -> None:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return
    except ValueError:
        raise RayConnectError(f"{address} is not HOST:PORT") from None
    except TimeoutError:
        raise RayConnectError(f"nothing answered at {address} within {timeout:g} s") from None
    except OSError as exc:
        raise RayConnectError(f"cannot connect to {address}: {exc.strerror or exc}") from None


def session_start_failed(exc: BaseException) -> bool:
    """Whether Ray Client's server (ray://) failed to start the process that serves this
    driver: its process exits at once now and then on a fresh cluster (Ray's proxier forks it
    while its own gRPC threads run), and a second attempt gets a new one."""
    return isinstance(exc, ConnectionAbortedError) and \
        "initialization failure from server" in str(exc).lower()


def explain_init_failure(address: str, exc: BaseException) -> str:
    """`ray.init` failed after the cluster answered: most often a token it refused."""
    text = f"{type(exc).__name__}: {first_line(str(exc))}"
    if session_start_failed(exc):
        return (f"Ray Client's server at {address} could not start a session for this driver "
                f"({text}); its reasons are in ray_client_server*.err among the head node's "
                "Ray logs")
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" and isinstance(exc, ConnectionError):
        return (f"the Ray cluster at {address} refused this driver's token ({text}): check "
                "RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH")
    return text


def first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return next((line for line in lines if not line.startswith("ray::")), "")


def enable_faulthandler_on_the_terminal() -> None:
    """`ray.init` turns on faulthandler for `sys.stderr` unless it is on already; under the
    TUI, `sys.stderr` is Textual's capture, which has no file descriptor, and `ray.init`
    fails. Turned on here for the real stderr first, Ray leaves it alone."""
    if faulthandler.is_enabled():
        return
    stream = sys.__stderr__
    try:
        if stream is not None:
            faulthandler.enable(file=stream, all_threads=False)
    except (ValueError, OSError, AttributeError):
        return  # no usable stderr at all: Ray's own call copes with io.UnsupportedOperation


def in_daemon_thread(loop: asyncio.AbstractEventLoop, work: Callable[[], Any],
                     stay: bool = False) -> asyncio.Future[Any]:
    """Run `work` in a daemon thread; its result or exception arrives in the returned future.
    Not the loop's executor: `asyncio.run` joins that one at exit, and an interrupted build
    would wait for `ray.init` to give up.

    `stay`: the thread does not end after `work` (it parks until the process ends). Ray starts
    the daemons of a private instance with a parent-death signal, which Linux ties to the
    thread that started them, not to the process: were the thread to end, they would die."""
    future: asyncio.Future[Any] = loop.create_future()

    def deliver(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def body() -> None:
        try:
            result = work()
        except BaseException as exc:  # handed to the loop, which re-raises it where awaited
            _call_soon(loop, deliver, None, exc)
            return
        _call_soon(loop, deliver, result, None)
        if stay:
            threading.Event().wait()

    threading.Thread(target=body, name="watchrun-ray-connect", daemon=True).start()
    return future


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any
               ) -> None:
    # a closed loop: watchrun is stopping and nobody waits any more
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)
