"""Secrets by name: environment variable first, then the OS keyring.

``token_secret = "shopify-main"`` in the config names a secret; it resolves to the environment
variable ``RFM_SYNC_SECRET_SHOPIFY_MAIN`` if set, else to the keyring entry ``("rfm-sync",
"shopify-main")``. Values are wrapped in :class:`Secret`, whose ``repr``/``str`` never show them.
"""
from __future__ import annotations

import os
import re

KEYRING_SERVICE = "rfm-sync"


class SecretError(LookupError):
    pass


class Secret:
    __slots__ = ("name", "_value")

    def __init__(self, name: str, value: str):
        self.name = name
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.name!r}, '***')"

    __str__ = __repr__


def env_var_name(name: str) -> str:
    return "RFM_SYNC_SECRET_" + re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").upper()


def resolve(name: str) -> Secret:
    var = env_var_name(name)
    value = os.environ.get(var)
    if value:
        return Secret(name, value)
    try:
        import keyring
        from keyring.errors import KeyringError, NoKeyringError
    except ImportError:  # pragma: no cover - keyring is a dependency
        keyring = None
    if keyring is not None:
        try:
            value = keyring.get_password(KEYRING_SERVICE, name)
        except NoKeyringError:
            value = None
        except KeyringError as exc:
            raise SecretError(f"secret {name!r}: keyring failed ({type(exc).__name__}); "
                              f"set the environment variable {var} instead") from None
    if value:
        return Secret(name, value)
    raise SecretError(f"secret {name!r} is not set: export {var}=... or run 'rfm-sync secrets set {name}'")


def _no_keyring(name: str) -> SecretError:
    return SecretError(f"no OS keyring is available on this machine: set the environment variable "
                       f"{env_var_name(name)} instead")


def keyring_problem(name: str) -> SecretError | None:
    """Why :func:`store` cannot keep ``name`` here, known before anyone types a value: no OS keyring
    (servers, containers, systemd services) or keyring's ``null`` backend, which keeps nothing. None
    when there is one (it may still refuse when asked: a locked collection, no D-Bus session)."""
    import keyring
    from keyring.backends import fail, null

    backend = keyring.get_keyring()
    if isinstance(backend, (fail.Keyring, null.Keyring)) or getattr(backend, "backends", None) == []:
        return _no_keyring(name)
    return None


def store(name: str, value: str) -> None:
    import keyring
    from keyring.errors import KeyringError, NoKeyringError

    problem = keyring_problem(name)
    if problem is not None:
        raise problem
    try:
        keyring.set_password(KEYRING_SERVICE, name, value)
    except NoKeyringError:
        raise _no_keyring(name) from None
    except KeyringError as exc:  # locked collection, no D-Bus session, ...
        raise SecretError(f"the OS keyring refused to store {name!r} ({type(exc).__name__}): set the "
                          f"environment variable {env_var_name(name)} instead") from None
