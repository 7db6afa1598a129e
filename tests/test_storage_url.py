"""One URL redactor (``storage._url.redact_url``), used by every message that shows a URL."""

from __future__ import annotations

import pytest

from loopaware_persist import ConfigurationError, StorageError
from loopaware_persist.storage import open_storage
from loopaware_persist.storage._url import redact_url

SECRET = "s3cr3t-Pa55"

# Every place a password can ride in a store or broker URL.
PLACES = [
    f"postgresql://alice:{SECRET}@db.example:5432/ckpt",
    f"postgresql://alice:{SECRET}@db.example/ckpt?sslmode=require",
    f"postgresql://alice@db.example/ckpt?password={SECRET}",
    f"postgresql://alice@db.example/ckpt?sslmode=require&password={SECRET}",
    f"postgresql://alice@db.example/ckpt?sslmode=require&password={SECRET}&schema=x",
    f"postgresql://alice@db.example/ckpt?PASSWORD={SECRET}",
    f"postgresql://alice@db.example/ckpt?pass%77ord={SECRET}",
    f"postgresql:///ckpt?host=/tmp;password={SECRET}",
    f"host=db.example dbname=ckpt password={SECRET} user=alice",
    f"host=db.example password = {SECRET}",
    f"host=db.example password='{SECRET} with spaces' user=alice",
    f"amqp://guest:{SECRET}@rabbit:5672/%2F",
    f"foo://alice:{SECRET}@host/x",
    f"bogus://alice@host/x?password={SECRET}",
    f"nosuchscheme:opaque?password={SECRET}",
]


@pytest.mark.parametrize("url", PLACES)
def test_redactor_removes_the_password_everywhere(url: str) -> None:
    shown = redact_url(url)
    assert SECRET not in shown
    assert "***" in shown


def test_redactor_keeps_everything_else() -> None:
    assert redact_url("postgresql://alice:x@db:5432/ckpt?sslmode=require&password=y") == (
        "postgresql://alice:***@db:5432/ckpt?sslmode=require&password=***"
    )
    assert redact_url("sqlite:///checkpoints.db") == "sqlite:///checkpoints.db"
    assert redact_url("host=db passwordless=1") == "host=db passwordless=1"


@pytest.mark.parametrize("url", PLACES)
def test_open_storage_errors_never_show_the_password(url: str) -> None:
    # Unknown schemes, missing schemes and bad PostgreSQL URLs all end in an
    # error message; none may carry the password.
    # (an unknown scheme is a ConfigurationError, a malformed URL a StorageError)
    with pytest.raises((StorageError, ConfigurationError)) as caught:
        open_storage(url.replace("postgresql:", "postgresqlx:"))
    assert SECRET not in str(caught.value)


def test_unknown_scheme_with_query_password_is_redacted() -> None:
    with pytest.raises(ConfigurationError) as caught:
        open_storage(f"mysql://bob@h/db?password={SECRET}")
    assert SECRET not in str(caught.value)
    assert "password=***" in str(caught.value)
