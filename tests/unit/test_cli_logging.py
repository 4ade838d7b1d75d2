from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from credbroker.cli import main

NOISY = ("botocore", "urllib3", "hvac")


@pytest.fixture
def restored_levels() -> Iterator[None]:
    names = ("", *NOISY)
    saved = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def test_cli_never_lets_signer_debug_logs_through(restored_levels: None) -> None:
    # botocore logs canonical requests, session tokens of presigned URLs included, at DEBUG.
    logging.getLogger().setLevel(logging.DEBUG)
    main(["keygen"])
    for name in NOISY:
        assert not logging.getLogger(name).isEnabledFor(logging.DEBUG)
