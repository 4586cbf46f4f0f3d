"""The pytest plugin (entry point `pytest11`): the `imds` fixture and the `imds` marker."""

from __future__ import annotations

from typing import Iterator

import pytest

from ._server import Imds

_MARKER_HELP = (
    "imds(http_tokens=..., http_endpoint=..., hop_limit=..., instance_metadata_tags=..., "
    "user_data=..., tags={...}, role=..., fleet=False, config={...}): how the `imds` fixture's "
    "server starts (its TOML config file; see `imds print-config`)"
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER_HELP)


@pytest.fixture
def imds(request: pytest.FixtureRequest) -> Iterator[Imds]:
    """A running `imds serve` on free loopback ports, with AWS_EC2_METADATA_SERVICE_ENDPOINT
    pointing at it (and the variables that would bypass it cleared) for the test; configured by
    `@pytest.mark.imds(...)`; stopped, and the environment restored, after the test, pass or
    fail."""
    marker = request.node.get_closest_marker("imds")
    if marker is not None and marker.args:
        raise pytest.UsageError("@pytest.mark.imds takes keyword arguments only")
    server = Imds(**(marker.kwargs if marker is not None else {}))
    request.addfinalizer(server.stop)
    server.start()
    yield server
