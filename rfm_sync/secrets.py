"""Secrets by name: environment variable first, then the OS keyring.

``token_secret = "shopify-main"`` in the config names a secret; it resolves to the environment
variable ``RFM_SYNC_SECRET_SHOPIFY_MAIN`` if set, else to the keyring entry ``("rfm-sync",
"shopify-main")``. Values are wrapped in :class:`Secret`, whose ``repr``/``str`` never show them.

A common slip is pasting the key itself where its *name* belongs (``api_key_secret = "pk_..."``).
Such a "name" is never echoed — not in the "not set" hint, nor in the environment variable derived
from it — since it is the credential: :func:`looks_like_a_value` spots it (a key prefix such as
``pk_``/``sk_``/``shpat_``/``EAA``, or a long random-looking run of letters and digits) and the
messages say that a key seems to have been pasted there instead.
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


# Credential prefixes: Klaviyo private keys (pk_), Stripe-style secret/restricted keys (sk_, rk_),
# Shopify access tokens and secrets (shpat_, shpca_, shppa_, shpss_), Meta access tokens (EAA...).
KEY_PREFIX = re.compile(r"^(?:(?:pk|sk|rk)_(?:live_|test_)?|shp(?:at|ca|pa|ss)_|EAA)[A-Za-z0-9]{12,}")
SEGMENT = re.compile(r"[^-_.:/ ]+")
PASTED = "it looks like a key or token was pasted where the secret's name belongs"
RENAME = (
    "keep the value in the environment variable or keyring under a name (such as 'klaviyo-key'), and "
    "put that name in the config"
)


def looks_like_a_value(name: str) -> bool:
    """True for a secret "name" that looks like a credential: a known key prefix followed by a
    long tail, or a run of 20+ characters mixing letters and digits (or any run of 32+) without a
    separator. Names people choose ("shopify-main", "klaviyo_private_key_2024") have short words."""
    if KEY_PREFIX.match(name):
        return True
    for run in SEGMENT.findall(name):
        if len(run) >= 32 or (len(run) >= 20 and re.search(r"\d", run) and re.search(r"[A-Za-z]", run)):
            return True
    return False


def resolve(name: str) -> Secret:
    if looks_like_a_value(name):  # never looked up, so no environment variable or keyring entry is named
        raise SecretError(f"not a secret's name: {PASTED}; {RENAME}")
    var = env_var_name(name)
    value = os.environ.get(var)
    if value:
        return Secret(name, value)
    try:
        import keyring
        from keyring.errors import KeyringError, NoKeyringError
    except ImportError:  # pragma: no cover - keyring is a dependency
        pass
    else:
        try:
            value = keyring.get_password(KEYRING_SERVICE, name)
        except NoKeyringError:
            value = None
        except KeyringError as exc:
            raise SecretError(
                f"secret {name!r}: keyring failed ({type(exc).__name__}); set the environment variable {var} instead"
            ) from None
    if value:
        return Secret(name, value)
    raise SecretError(f"secret {name!r} is not set: export {var}=... or run 'rfm-sync secrets set {name}'")


def _no_keyring(name: str) -> SecretError:
    return SecretError(
        f"no OS keyring is available on this machine: set the environment variable {env_var_name(name)} instead"
    )


def keyring_problem(name: str) -> SecretError | None:
    """Why :func:`store` cannot keep ``name`` here, known before anyone types a value: no OS keyring
    (servers, containers, systemd services) or keyring's ``null`` backend, which keeps nothing. None
    when there is one (it may still refuse when asked: a locked collection, no D-Bus session)."""
    if looks_like_a_value(name):
        return SecretError(f"NAME: {PASTED}; {RENAME}")
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
        raise SecretError(
            f"the OS keyring refused to store {name!r} ({type(exc).__name__}): set the "
            f"environment variable {env_var_name(name)} instead"
        ) from None
