"""Start and reset a moto server on loopback, and the environment that points boto3 at it."""

from __future__ import annotations

import logging
import urllib.error
import urllib.request

from moto.server import ThreadedMotoServer

DEFAULT_REGION = "us-east-1"
MOTO_ACCOUNT_ID = "123456789012"


def start_moto(host: str = "127.0.0.1", port: int = 0) -> tuple[ThreadedMotoServer, str]:
    """Start moto's threaded server in this process; port 0 picks a free one. Returns (server, url)."""
    # Werkzeug logs every request at INFO: thousands of lines per seeded fleet.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    bound_host, bound_port = server.get_host_and_port()
    return server, f"http://{bound_host}:{bound_port}"


def reset_moto(url: str) -> None:
    """Forget every resource in every service (moto's own reset API)."""
    request = urllib.request.Request(f"{url}/moto-api/reset", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def moto_is_up(url: str) -> bool:
    """True when something answers HTTP at ``url`` (any status: moto answers unsigned requests with errors)."""
    try:
        with urllib.request.urlopen(f"{url}/moto-api/", timeout=5) as response:
            return response.status < 600
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def sandbox_env(url: str, region: str = DEFAULT_REGION) -> dict[str, str]:
    """Environment that sends every boto3 client to the moto server with dummy credentials."""
    return {
        "AWS_ENDPOINT_URL": url,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
    }
